"""One node's GPU health in one call (reads only; never changes anything).

Counts NVIDIA GPUs on the PCI bus, asks nvidia-smi for driver, ECC and temperature per GPU, runs
DCGM diagnostics where dcgmi is installed, and prints one JSON line: the report with its verdict.
The role runs it with the node's Python through `raw` (standard library only): an Ansible module
run costs ~0.25 s of CPU on the node, and this runs on every node at every configure.
Usage: python3 gpu_health_probe.py BASE64_JSON_ARGS
  args: expected_gpus, pci_devices_dir, nvidia_smi, max_temperature_c, dcgm_level (0 skips), dcgmi
"""
import base64
import json
import os
import shutil
import subprocess
import sys

NVIDIA = "0x10de"
DISPLAY_CLASSES = ("0x0300", "0x0302")  # VGA and 3D controllers: not NVSwitch bridges or audio
QUERY = ("index", "name", "driver_version", "temperature.gpu",
         "ecc.errors.uncorrected.volatile.total", "ecc.errors.uncorrected.aggregate.total")


def read(path):
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def pci_gpus(devices_dir):
    """NVIDIA display-class devices on the PCI bus (their addresses)."""
    try:
        names = sorted(os.listdir(devices_dir))
    except OSError:
        return []
    return [name for name in names
            if read(os.path.join(devices_dir, name, "vendor")) == NVIDIA
            and read(os.path.join(devices_dir, name, "class")).startswith(DISPLAY_CLASSES)]


def number(text):
    """An nvidia-smi field as an int; None for [N/A], [Not Supported] and the like."""
    try:
        return int(float(text.split()[0]))
    except (ValueError, IndexError):
        return None


def parse_query(stdout):
    """Rows of `nvidia-smi --query-gpu=QUERY --format=csv,noheader` as dicts."""
    gpus = []
    for line in stdout.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != len(QUERY):
            continue
        row = dict(zip(QUERY, fields))
        gpus.append({"index": row["index"], "name": row["name"], "driver": row["driver_version"],
                     "temperature_c": number(row["temperature.gpu"]),
                     "ecc_volatile": number(row["ecc.errors.uncorrected.volatile.total"]),
                     "ecc_aggregate": number(row["ecc.errors.uncorrected.aggregate.total"])})
    return gpus


def run(argv):
    """(exit status, stdout, stderr) of a command; a command that cannot start is status 127."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as error:
        return 127, "", str(error)
    return done.returncode, done.stdout, done.stderr


def smi(command):
    if not shutil.which(command) and not os.path.isfile(command):
        return None, f"{command} not found"
    rc, out, err = run([command, "--query-gpu=" + ",".join(QUERY), "--format=csv,noheader"])
    if rc != 0:
        lines = (err or out).strip().splitlines()
        return None, lines[-1] if lines else f"{command} exited {rc}"
    return parse_query(out), ""


def dcgm(command, level, gpus):
    if level == 0:
        return "off"
    if not gpus:
        return "-"
    if not shutil.which(command):
        return "not installed"
    rc, out, err = run([command, "diag", "-r", str(level)])
    if rc == 0:
        return "pass"
    failed = [line.strip(" |") for line in out.splitlines() if "Fail" in line]
    return "fail: " + (failed[0] if failed else (err or out).strip()[-200:] or f"rc {rc}")


def verdict(expected, pci, gpus, smi_error, max_temp, limit, ecc, dcgm_result):
    problems = []
    found = len(gpus) if gpus is not None else len(pci)
    if expected and found != expected:
        problems.append(f"expected {expected} GPU(s), found {found}")
    elif not expected and pci:
        problems.append(f"found {len(pci)} GPU(s) where the machine type has none")
    if (expected or pci) and gpus is None:
        problems.append(f"no working driver ({smi_error})")
    if max_temp is not None and max_temp > limit:
        problems.append(f"GPU at {max_temp} C (limit {limit} C)")
    if ecc:
        problems.append(f"{ecc} uncorrected ECC error(s) since the driver loaded")
    if dcgm_result.startswith("fail"):
        problems.append(f"DCGM diagnostics {dcgm_result}")
    return problems


def probe(args):
    expected = int(args.get("expected_gpus", 0))
    pci = pci_gpus(args.get("pci_devices_dir", "/sys/bus/pci/devices"))
    gpus, smi_error = smi(args.get("nvidia_smi", "nvidia-smi")) if (pci or expected) else ([], "")
    temps = [g["temperature_c"] for g in gpus or [] if g["temperature_c"] is not None]
    ecc_counts = [g["ecc_volatile"] for g in gpus or [] if g["ecc_volatile"] is not None]
    max_temp = max(temps) if temps else None
    ecc = sum(ecc_counts)
    dcgm_result = dcgm(args.get("dcgmi", "dcgmi"), int(args.get("dcgm_level", 1)), gpus)
    problems = verdict(expected, pci, gpus, smi_error, max_temp, int(args.get("max_temperature_c", 85)),
                       ecc, dcgm_result)
    return {
        "expected": expected,
        "pci": len(pci),
        "found": len(gpus or []),
        "driver": (gpus[0]["driver"] if gpus else "") or "-",
        "ecc": ecc if ecc_counts else None,
        "max_temperature_c": max_temp,
        "dcgm": dcgm_result,
        "gpus": gpus or [],
        "healthy": not problems,
        "problems": problems,
    }


if __name__ == "__main__":
    print(json.dumps(probe(json.loads(base64.b64decode(sys.argv[1])))))
