"""Helpers shared by the emulator: ids, timestamps, fingerprints, links and catalogue JSON."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
from datetime import datetime, timezone
from urllib.parse import urlparse

from . import catalog

_COLLECTIONS = {
    "projects", "zones", "regions", "machineTypes", "acceleratorTypes", "images", "family",
    "diskTypes", "disks", "networks", "subnetworks", "instances", "operations", "instanceTemplates",
}


def new_id() -> str:
    """A uint64 resource id; JSON carries it as a string."""
    return str(random.randint(10**18, 2**63 - 1))


def rfc3339(moment: datetime | None = None) -> str:
    moment = moment or datetime.now(timezone.utc)
    return moment.isoformat(timespec="milliseconds")


def fingerprint(value) -> str:
    """An 8-byte base64 fingerprint of a value, like GCE's labelFingerprint / metadata.fingerprint."""
    digest = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).digest()
    return base64.b64encode(digest[:8]).decode()


def parse_reference(reference: str) -> dict[str, str]:
    """Split a full URL, partial path or bare name into its collections.

    "https://www.googleapis.com/compute/v1/projects/p/zones/z/machineTypes/m" and
    "zones/z/machineTypes/m" both give {"projects"?: "p", "zones": "z", "machineTypes": "m",
    "name": "m"}; a bare "m" gives {"name": "m"}.
    """
    path = urlparse(reference).path if "://" in reference else reference
    segments = [s for s in path.split("/") if s]
    parts: dict[str, str] = {}
    i = 0
    while i < len(segments):
        if segments[i] == "images" and segments[i + 1 : i + 2] == ["family"]:
            i += 1  # ".../images/family/{family}" names a family, not an image called "family"
        elif segments[i] in _COLLECTIONS and i + 1 < len(segments):
            parts[segments[i]] = segments[i + 1]
            i += 2
        else:
            i += 1
    parts["name"] = segments[-1] if segments else ""
    return parts


class Links:
    """Builds full resource URLs from the base URL of the request being served."""

    def __init__(self, base_url: str, project: str):
        self.base_url = base_url
        self.project = project

    def project_path(self, project: str | None = None) -> str:
        return f"{self.base_url}/compute/v1/projects/{project or self.project}"

    def zone(self, zone: str) -> str:
        return f"{self.project_path()}/zones/{zone}"

    def region(self, region: str) -> str:
        return f"{self.project_path()}/regions/{region}"

    def instance(self, zone: str, name: str) -> str:
        return f"{self.zone(zone)}/instances/{name}"

    def instances(self, zone: str) -> str:
        return f"{self.zone(zone)}/instances"

    def machine_type(self, zone: str, name: str) -> str:
        return f"{self.zone(zone)}/machineTypes/{name}"

    def accelerator_type(self, zone: str, name: str) -> str:
        return f"{self.zone(zone)}/acceleratorTypes/{name}"

    def disk_type(self, zone: str, name: str) -> str:
        return f"{self.zone(zone)}/diskTypes/{name}"

    def disk(self, zone: str, name: str) -> str:
        return f"{self.zone(zone)}/disks/{name}"

    def network(self, name: str) -> str:
        return f"{self.project_path()}/global/networks/{name}"

    def subnetwork(self, region: str, name: str) -> str:
        return f"{self.region(region)}/subnetworks/{name}"

    def image(self, project: str, name: str) -> str:
        return f"{self.project_path(project)}/global/images/{name}"

    def expand(self, reference: str) -> str:
        """A full URL for a partial path such as "global/networks/default" or "projects/p/...". """
        if "://" in reference:
            return reference
        reference = reference.lstrip("/")
        if reference.startswith("projects/"):
            return f"{self.base_url}/compute/v1/{reference}"
        return f"{self.project_path()}/{reference}"


# ------------------------------------------------------------------- catalogue as JSON

_CREATED = "1969-12-31T16:00:00.000-08:00"  # GCE shows this epoch-ish timestamp on catalogue items


def _stable_id(*parts: str) -> str:
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    return str(int.from_bytes(digest[:8], "big") >> 1)


def zone_json(links: Links, zone: str) -> dict:
    region = catalog.region_of(zone)
    return {
        "kind": "compute#zone",
        "id": _stable_id("zone", zone),
        "creationTimestamp": _CREATED,
        "name": zone,
        "description": zone,
        "status": "UP",
        "region": links.region(region),
        "selfLink": links.zone(zone),
        "availableCpuPlatforms": catalog.CPU_PLATFORMS,
        "supportsPzs": False,
    }


def region_json(links: Links, region: str, quotas: list[dict]) -> dict:
    return {
        "kind": "compute#region",
        "id": _stable_id("region", region),
        "creationTimestamp": _CREATED,
        "name": region,
        "description": region,
        "status": "UP",
        "zones": [links.zone(z) for z in catalog.zones_in_region(region)],
        "quotas": quotas,
        "selfLink": links.region(region),
        "supportsPzs": False,
    }


def machine_type_json(links: Links, zone: str, spec: catalog.MachineTypeSpec) -> dict:
    body = {
        "kind": "compute#machineType",
        "id": _stable_id("machineType", spec.name),
        "creationTimestamp": _CREATED,
        "name": spec.name,
        "description": spec.description,
        "guestCpus": spec.guest_cpus,
        "memoryMb": spec.memory_mb,
        "imageSpaceGb": 0,
        "maximumPersistentDisks": 128,
        "maximumPersistentDisksSizeGb": "263168",
        "zone": zone,  # a bare name on machine types, unlike every other resource
        "selfLink": links.machine_type(zone, spec.name),
        "isSharedCpu": spec.shared_cpu,
        "architecture": "X86_64",
    }
    if spec.bundled_gpu:
        body["accelerators"] = [
            {"guestAcceleratorType": spec.bundled_gpu, "guestAcceleratorCount": spec.bundled_gpu_count}
        ]
    return body


def accelerator_type_json(links: Links, zone: str, name: str) -> dict:
    spec = catalog.ACCELERATORS[name]
    return {
        "kind": "compute#acceleratorType",
        "id": _stable_id("acceleratorType", name),
        "creationTimestamp": _CREATED,
        "name": name,
        "description": spec.description,
        "zone": links.zone(zone),
        "selfLink": links.accelerator_type(zone, name),
        "maximumCardsPerInstance": spec.max_cards,
    }


def image_json(links: Links, image: catalog.ImageSpec) -> dict:
    return {
        "kind": "compute#image",
        "id": _stable_id("image", image.project, image.name),
        "creationTimestamp": "2024-09-22T10:00:00.000-07:00",
        "name": image.name,
        "description": image.description,
        "family": image.family,
        "sourceType": "RAW",
        "status": "READY",
        "archiveSizeBytes": str(image.disk_size_gb * 2**28),
        "diskSizeGb": str(image.disk_size_gb),
        "architecture": "X86_64",
        "guestOsFeatures": [{"type": t} for t in ("UEFI_COMPATIBLE", "VIRTIO_SCSI_MULTIQUEUE", "GVNIC")],
        "licenses": [f"{links.project_path(image.project)}/global/licenses/{image.family}"],
        "labelFingerprint": fingerprint({}),
        "storageLocations": ["us", "eu", "asia"],
        "selfLink": links.image(image.project, image.name),
    }


NAME_PATTERN = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
LABEL_KEY_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,62}")
LABEL_VALUE_PATTERN = re.compile(r"[a-z0-9_-]{0,63}")
