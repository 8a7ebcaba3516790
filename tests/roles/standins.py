"""Stand-ins for what test nodes lack: NVIDIA GPUs on the PCI bus, nvidia-smi, dcgmi, the Ops
Agent's config engine and systemctl. Each is written into a node's own root (Node.path)."""
from __future__ import annotations

import json

FAKE_PCI = "/var/tmp/fake-pci"
GPUS_FILE = "/etc/gcpgpu-test/gpus.json"

# Answers --query-gpu=FIELDS --format=csv,noheader from GPUS_FILE, the way nvidia-smi prints it.
NVIDIA_SMI = f"""#!/usr/bin/python3
import json, sys
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
if "--query-gpu" not in args or not args.get("--format", "").startswith("csv"):
    sys.exit("stand-in nvidia-smi answers only --query-gpu=... --format=csv,noheader")
gpus = json.load(open({GPUS_FILE!r}))
if not gpus:
    sys.exit("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")
for gpu in gpus:
    print(", ".join(str(gpu[field]) for field in args["--query-gpu"].split(",")))
"""


def gpu(index: int, temperature: int = 41, ecc: int = 0, name: str = "NVIDIA L4",
        driver: str = "550.90.07") -> dict:
    return {"index": index, "name": name, "driver_version": driver, "temperature.gpu": temperature,
            "ecc.errors.uncorrected.volatile.total": ecc, "ecc.errors.uncorrected.aggregate.total": ecc,
            "pci.bus_id": f"00000000:00:{4 + index:02X}.0"}


def write(node, path: str, text: str, mode: int = 0o644) -> None:
    target = node.path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(mode)


def install_nvidia_smi(node, gpus: list[dict], path: str = "/usr/bin/nvidia-smi") -> None:
    write(node, GPUS_FILE, json.dumps(gpus))
    write(node, path, NVIDIA_SMI, 0o755)


def fake_pci(node, gpus: int, with_nvswitch: bool = True) -> str:
    """A PCI devices dir with ``gpus`` NVIDIA 3D controllers, a virtio NIC and an NVSwitch bridge
    (NVIDIA, but no GPU)."""
    devices = {"0000:00:03.0": ("0x1af4", "0x020000")}
    if with_nvswitch:
        devices["0000:00:0f.0"] = ("0x10de", "0x068000")
    for i in range(gpus):
        devices[f"0000:00:{4 + i:02x}.0"] = ("0x10de", "0x030200")
    for address, (vendor, klass) in devices.items():
        write(node, f"{FAKE_PCI}/{address}/vendor", vendor + "\n")
        write(node, f"{FAKE_PCI}/{address}/class", klass + "\n")
    return FAKE_PCI


def install_dcgmi(node, passes: bool) -> None:
    out = ("| Deployment | Pass |" if passes else "| Deployment | Pass |\n| GPU Memory | Fail - GPU 0 |")
    write(node, "/usr/local/bin/dcgmi", f"#!/bin/sh\ncat <<'EOF'\n{out}\nEOF\nexit {0 if passes else 226}\n", 0o755)
