"""Zones, regions, machine types, accelerator types and images."""

from __future__ import annotations

import pytest
from emulator_helpers import PROJECT, ZONE
from google.api_core import exceptions
from google.cloud import compute_v1


def test_zones_and_regions(emu, gce):
    zones = {z.name: z for z in gce.zones.list(project=PROJECT)}
    assert {"us-central1-a", "us-central1-f", "us-east4-c", "europe-west4-b", "asia-southeast1-c"} <= set(zones)
    assert zones[ZONE].region == f"{emu.url}/compute/v1/projects/{PROJECT}/regions/us-central1"
    assert gce.zones.get(project=PROJECT, zone=ZONE).status == "UP"
    with pytest.raises(exceptions.NotFound):
        gce.zones.get(project=PROJECT, zone="us-central1-z")
    region = gce.regions.get(project=PROJECT, region="us-central1")
    assert len(region.zones) == 4
    assert {"NVIDIA_A100_GPUS", "PREEMPTIBLE_NVIDIA_L4_GPUS"} <= {q.metric for q in region.quotas}


@pytest.mark.parametrize("name, cpus, memory_mb, gpu, gpus", [
    ("a2-highgpu-2g", 24, 174080, "nvidia-tesla-a100", 2),
    ("a2-megagpu-16g", 96, 1392640, "nvidia-tesla-a100", 16),
    ("a2-ultragpu-8g", 96, 1392640, "nvidia-a100-80gb", 8),
    ("g2-standard-48", 48, 196608, "nvidia-l4", 4),
    ("a3-highgpu-8g", 208, 1916928, "nvidia-h100-80gb", 8),
    ("n1-standard-8", 8, 30720, None, 0),
])
def test_machine_types(gce, name, cpus, memory_mb, gpu, gpus):
    machine = gce.machine_types.get(project=PROJECT, zone=ZONE, machine_type=name)
    assert (machine.guest_cpus, machine.memory_mb) == (cpus, memory_mb)
    assert [(a.guest_accelerator_type, a.guest_accelerator_count) for a in machine.accelerators] == (
        [(gpu, gpus)] if gpu else [])


def test_machine_types_follow_the_zone_offering(gce):
    names = {m.name for m in gce.machine_types.list(project=PROJECT, zone="us-central1-f")}
    assert "a2-highgpu-8g" in names and "a3-highgpu-8g" not in names and "e2-standard-4" in names
    with pytest.raises(exceptions.NotFound):
        gce.machine_types.get(project=PROJECT, zone="us-central1-f", machine_type="g2-standard-4")
    aggregated = gce.machine_types.aggregated_list(request=compute_v1.AggregatedListMachineTypesRequest(
        project=PROJECT, filter='name = "a3-highgpu-8g"'))
    zones = sorted(zone for zone, scoped in aggregated if scoped.machine_types)
    assert zones == ["zones/europe-west4-a", "zones/europe-west4-b", "zones/us-central1-a", "zones/us-central1-b",
                     "zones/us-central1-c", "zones/us-east4-c"]


def test_accelerator_types(emu, gce):
    t4 = gce.accelerator_types.get(project=PROJECT, zone=ZONE, accelerator_type="nvidia-tesla-t4")
    assert t4.maximum_cards_per_instance == 4
    assert t4.zone == f"{emu.url}/compute/v1/projects/{PROJECT}/zones/{ZONE}"
    offered = {a.name for a in gce.accelerator_types.list(project=PROJECT, zone="us-east1-d")}
    assert offered == {"nvidia-l4", "nvidia-tesla-t4"}
    aggregated = gce.accelerator_types.aggregated_list(project=PROJECT)
    a100_zones = {zone for zone, scoped in aggregated
                  if any(a.name == "nvidia-tesla-a100" for a in scoped.accelerator_types)}
    assert {"zones/us-central1-a", "zones/us-central1-b", "zones/us-central1-c", "zones/us-central1-f"} <= a100_zones


def test_images_by_family_and_name(gce):
    image = gce.images.get_from_family(project="deeplearning-platform-release", family="pytorch-latest-gpu")
    assert image.family == "pytorch-latest-gpu" and image.status == "READY"
    assert gce.images.get(project="deeplearning-platform-release", image=image.name).id == image.id
    assert gce.images.get_from_family(project="debian-cloud", family="debian-12").disk_size_gb == 10
    with pytest.raises(exceptions.NotFound):
        gce.images.get_from_family(project="debian-cloud", family="debian-99")


def test_project_restriction():
    from emulator_helpers import make_clients

    from gcpgpu.emulator import Emulator

    with Emulator(latency=0.05, project=PROJECT) as emu:
        gce = make_clients(emu.url)
        assert list(gce.zones.list(project=PROJECT))
        with pytest.raises(exceptions.NotFound, match="projects/other"):
            list(gce.zones.list(project="other"))
        # Public image projects stay reachable.
        assert gce.images.get_from_family(project="debian-cloud", family="debian-12").name
