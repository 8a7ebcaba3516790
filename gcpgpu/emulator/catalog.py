"""Static catalogue of zones, regions, machine types, accelerator types and images.

The data is an *approximation* of what Google Compute Engine offers, chosen so that the
usual GPU-cluster decisions come out as they would on the real cloud:

* A100 40GB (``nvidia-tesla-a100``, A2 highgpu/megagpu) in us-central1-a/b/c/f and a few
  others; A100 80GB (``nvidia-a100-80gb``, A2 ultragpu) in fewer zones; H100
  (``nvidia-h100-80gb``, A3) in a handful; L4 (``nvidia-l4``, G2) widely; T4/V100/P100/P4
  attach only to N1 machine types.
* E2, N1 and N2 exist in every zone.

It is not a faithful copy of the live catalogue (which changes monthly); tests must not
depend on a zone offering an accelerator that is not listed here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# --------------------------------------------------------------------------- accelerators


@dataclass(frozen=True)
class AcceleratorSpec:
    name: str
    description: str
    quota_metric: str  # regional quota metric; spot/preemptible use "PREEMPTIBLE_" + this
    max_cards: int
    # For N1-attachable GPUs: allowed card counts -> maximum vCPUs of the N1 machine type.
    # Empty for GPUs that only come bundled with their machine type (A100, L4, H100).
    n1_counts: dict[int, int] = field(default_factory=dict)


ACCELERATORS: dict[str, AcceleratorSpec] = {
    a.name: a
    for a in [
        AcceleratorSpec("nvidia-tesla-a100", "NVIDIA A100 40GB", "NVIDIA_A100_GPUS", 16),
        AcceleratorSpec("nvidia-a100-80gb", "NVIDIA A100 80GB", "NVIDIA_A100_80GB_GPUS", 8),
        AcceleratorSpec("nvidia-h100-80gb", "NVIDIA H100 80GB", "NVIDIA_H100_GPUS", 8),
        AcceleratorSpec("nvidia-l4", "NVIDIA L4", "NVIDIA_L4_GPUS", 8),
        AcceleratorSpec("nvidia-tesla-t4", "NVIDIA T4", "NVIDIA_T4_GPUS", 4, {1: 48, 2: 48, 4: 96}),
        AcceleratorSpec(
            "nvidia-tesla-v100", "NVIDIA V100", "NVIDIA_V100_GPUS", 8, {1: 12, 2: 24, 4: 48, 8: 96}
        ),
        AcceleratorSpec("nvidia-tesla-p100", "NVIDIA Tesla P100", "NVIDIA_P100_GPUS", 4, {1: 16, 2: 32, 4: 96}),
        AcceleratorSpec("nvidia-tesla-p4", "NVIDIA Tesla P4", "NVIDIA_P4_GPUS", 4, {1: 24, 2: 48, 4: 96}),
    ]
}

GPU_QUOTA_METRICS = sorted(
    {a.quota_metric for a in ACCELERATORS.values()}
    | {"PREEMPTIBLE_" + a.quota_metric for a in ACCELERATORS.values()}
)
GLOBAL_GPU_METRIC = "GPUS_ALL_REGIONS"

# ---------------------------------------------------------------------------- machine types


@dataclass(frozen=True)
class MachineTypeSpec:
    name: str
    guest_cpus: int
    memory_mb: int
    bundled_gpu: str | None = None  # accelerator type that comes with the machine type
    bundled_gpu_count: int = 0
    shared_cpu: bool = False

    @property
    def series(self) -> str:
        return self.name.split("-")[0]

    @property
    def family(self) -> str:
        """Series plus shape, e.g. "a2-highgpu" or "n1-standard"."""
        return "-".join(self.name.split("-")[:2])

    @property
    def description(self) -> str:
        gb = self.memory_mb / 1024
        memory = f"{gb:g} GB" if gb >= 1 else f"{self.memory_mb} MB"
        text = f"{self.guest_cpus} vCPU{'s' if self.guest_cpus > 1 else ''}, {memory} RAM"
        if self.bundled_gpu:
            text += f", {self.bundled_gpu_count} x {ACCELERATORS[self.bundled_gpu].description}"
        return text


def _machine_types() -> list[MachineTypeSpec]:
    types = [
        MachineTypeSpec("e2-micro", 2, 1024, shared_cpu=True),
        MachineTypeSpec("e2-small", 2, 2048, shared_cpu=True),
        MachineTypeSpec("e2-medium", 2, 4096, shared_cpu=True),
    ]
    types += [MachineTypeSpec(f"e2-standard-{n}", n, n * 4096) for n in (2, 4, 8, 16, 32)]
    types += [MachineTypeSpec(f"e2-highmem-{n}", n, n * 8192) for n in (2, 4, 8, 16)]
    types += [MachineTypeSpec(f"n1-standard-{n}", n, n * 3840) for n in (1, 2, 4, 8, 16, 32, 64, 96)]
    types += [MachineTypeSpec(f"n1-highmem-{n}", n, n * 6656) for n in (2, 4, 8, 16, 32, 64, 96)]
    types += [MachineTypeSpec(f"n2-standard-{n}", n, n * 4096) for n in (2, 4, 8, 16, 32, 48, 64, 80, 96, 128)]
    # A2: 12 vCPUs and 85 GB per A100 40GB; ultragpu: 12 vCPUs and 170 GB per A100 80GB.
    types += [
        MachineTypeSpec(f"a2-highgpu-{n}g", 12 * n, 87040 * n, "nvidia-tesla-a100", n) for n in (1, 2, 4, 8)
    ]
    types.append(MachineTypeSpec("a2-megagpu-16g", 96, 1392640, "nvidia-tesla-a100", 16))
    types += [
        MachineTypeSpec(f"a2-ultragpu-{n}g", 12 * n, 174080 * n, "nvidia-a100-80gb", n) for n in (1, 2, 4, 8)
    ]
    g2_gpus = {4: 1, 8: 1, 12: 1, 16: 1, 24: 2, 32: 1, 48: 4, 96: 8}
    types += [
        MachineTypeSpec(f"g2-standard-{cpus}", cpus, cpus * 4096, "nvidia-l4", gpus) for cpus, gpus in g2_gpus.items()
    ]
    types.append(MachineTypeSpec("a3-highgpu-8g", 208, 1916928, "nvidia-h100-80gb", 8))
    return types


MACHINE_TYPES: dict[str, MachineTypeSpec] = {m.name: m for m in _machine_types()}

# Which machine families need which accelerator to be offered in the zone.
_FAMILY_NEEDS_GPU = {
    "a2-highgpu": "nvidia-tesla-a100",
    "a2-megagpu": "nvidia-tesla-a100",
    "a2-ultragpu": "nvidia-a100-80gb",
    "g2-standard": "nvidia-l4",
    "a3-highgpu": "nvidia-h100-80gb",
}

# -------------------------------------------------------------------------- zones, regions

A100, A100_80, H100, L4 = "nvidia-tesla-a100", "nvidia-a100-80gb", "nvidia-h100-80gb", "nvidia-l4"
T4, V100, P100, P4 = "nvidia-tesla-t4", "nvidia-tesla-v100", "nvidia-tesla-p100", "nvidia-tesla-p4"

ZONE_ACCELERATORS: dict[str, tuple[str, ...]] = {
    "us-central1-a": (A100, A100_80, H100, L4, T4, V100, P4),
    "us-central1-b": (A100, H100, L4, T4, V100),
    "us-central1-c": (A100, A100_80, H100, L4, T4, V100, P100, P4),
    "us-central1-f": (A100, T4, V100, P100),
    "us-east1-b": (A100, L4, T4, P100),
    "us-east1-c": (L4, T4, V100, P100),
    "us-east1-d": (L4, T4),
    "us-east4-c": (A100_80, H100, L4, T4, P4),
    "us-west1-a": (L4, T4, V100, P100),
    "us-west1-b": (A100, L4, T4, V100, P100),
    "europe-west4-a": (A100, A100_80, H100, L4, T4, V100, P4),
    "europe-west4-b": (A100, H100, L4, T4, V100, P100),
    "asia-southeast1-b": (A100, L4, T4),
    "asia-southeast1-c": (A100, A100_80, L4, T4),
}

REGION_DESCRIPTIONS = {
    "us-central1": "Council Bluffs, Iowa, North America",
    "us-east1": "Moncks Corner, South Carolina, North America",
    "us-east4": "Ashburn, Virginia, North America",
    "us-west1": "The Dalles, Oregon, North America",
    "europe-west4": "Eemshaven, Netherlands, Europe",
    "asia-southeast1": "Jurong West, Singapore, APAC",
}

CPU_PLATFORMS = ["Intel Cascade Lake", "Intel Ice Lake", "Intel Sapphire Rapids", "AMD Milan", "AMD Rome"]


def region_of(zone: str) -> str:
    return zone.rsplit("-", 1)[0]


def zones_in_region(region: str) -> list[str]:
    return [z for z in ZONE_ACCELERATORS if region_of(z) == region]


def accelerators_in_zone(zone: str) -> tuple[str, ...]:
    return ZONE_ACCELERATORS.get(zone, ())


def machine_types_in_zone(zone: str) -> list[MachineTypeSpec]:
    offered = set(accelerators_in_zone(zone))
    return [
        m
        for m in MACHINE_TYPES.values()
        if m.family not in _FAMILY_NEEDS_GPU or _FAMILY_NEEDS_GPU[m.family] in offered
    ]


def machine_type_in_zone(zone: str, name: str) -> MachineTypeSpec | None:
    return next((m for m in machine_types_in_zone(zone) if m.name == name), None)


# ---------------------------------------------------------------------------------- images


@dataclass(frozen=True)
class ImageSpec:
    project: str
    name: str
    family: str
    description: str
    disk_size_gb: int


IMAGES: list[ImageSpec] = [
    ImageSpec("deeplearning-platform-release", "pytorch-latest-gpu-v20240922", "pytorch-latest-gpu",
              "Google, Deep Learning VM with CUDA 12.1, M125, Debian 11, Python 3.10, PyTorch 2.3", 50),
    ImageSpec("deeplearning-platform-release", "common-cu121-v20240922-debian-11", "common-cu121-debian-11",
              "Google, Deep Learning VM with CUDA 12.1, M125, Debian 11, Python 3.10", 50),
    ImageSpec("deeplearning-platform-release", "common-cu121-v20240922-debian-11-py310",
              "common-cu121-debian-11-py310",
              "Google, Deep Learning VM with CUDA 12.1, M125, Debian 11, Python 3.10", 50),
    ImageSpec("deeplearning-platform-release", "common-cu124-v20240922-debian-11", "common-cu124-debian-11",
              "Google, Deep Learning VM with CUDA 12.4, M125, Debian 11, Python 3.10", 50),
    ImageSpec("deeplearning-platform-release", "tf-latest-gpu-v20240922", "tf-latest-gpu",
              "Google, Deep Learning VM with CUDA 12.3, M125, Debian 11, Python 3.10, TensorFlow 2.16", 50),
    ImageSpec("debian-cloud", "debian-12-bookworm-v20240910", "debian-12",
              "Debian, Debian GNU/Linux, 12 (bookworm), amd64 built on 20240910", 10),
    ImageSpec("debian-cloud", "debian-11-bullseye-v20240910", "debian-11",
              "Debian, Debian GNU/Linux, 11 (bullseye), amd64 built on 20240910", 10),
    ImageSpec("ubuntu-os-cloud", "ubuntu-2204-jammy-v20240911", "ubuntu-2204-lts",
              "Canonical, Ubuntu, 22.04 LTS, amd64 jammy image built on 2024-09-11", 10),
    ImageSpec("ubuntu-os-accelerator-images", "ubuntu-accelerator-2204-amd64-with-nvidia-550-v20240911",
              "ubuntu-accelerator-2204-amd64-with-nvidia-550",
              "Canonical, Ubuntu, 22.04 LTS NVIDIA version: 550, amd64 jammy image built on 2024-09-11", 50),
]


def find_image(project: str, name: str) -> ImageSpec | None:
    return next((i for i in IMAGES if i.project == project and i.name == name), None)


def find_image_family(project: str, family: str) -> ImageSpec | None:
    return next((i for i in IMAGES if i.project == project and i.family == family), None)
