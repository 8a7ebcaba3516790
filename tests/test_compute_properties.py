"""What the compute provider asks GCE for, given a spec (no API call needed)."""
from __future__ import annotations

from gcpgpu.engine import Cluster
from gcpgpu.plugins import Plugins
from gcpgpu.spec import validate_spec
from gcpgpu_plugins.compute import instance_properties


def properties(spec_text: dict):
    spec = validate_spec({"name": "demo", "project": "demo-project", **spec_text}, Plugins())
    cluster = Cluster(spec, Plugins(), clients=None, state=None)
    [group_name] = spec["node_groups"]
    return instance_properties(cluster.context(), group_name, spec["node_groups"][group_name])


def test_image_by_name_defaults_to_the_clusters_project():
    props = properties({"node_groups": {"gpu": {"image": {"name": "my-golden-image"}}}})
    assert props.disks[0].initialize_params.source_image == \
        "projects/demo-project/global/images/my-golden-image"


def test_gpu_vm_terminates_on_maintenance_and_spot_is_spot():
    props = properties({"node_groups": {"gpu": {"spot": True}}})
    assert props.scheduling.on_host_maintenance == "TERMINATE"
    assert props.scheduling.provisioning_model == "SPOT" and not props.scheduling.automatic_restart
    assert props.guest_accelerators == []  # a2 carries its A100s itself
    assert props.labels["gcpgpu-cluster"] == "demo" and props.labels["gcpgpu-group"] == "gpu"
    assert any(item.key == "ssh-keys" and item.value.startswith("gcpgpu:ssh-ed25519 ")
               for item in props.metadata.items)


def test_n1_gets_its_gpus_attached_explicitly():
    props = properties({"node_groups": {"gpu": {"machine_type": "n1-standard-8",
                                                "accelerator": {"type": "nvidia-tesla-t4", "count": 2}}}})
    assert [(a.accelerator_type, a.accelerator_count) for a in props.guest_accelerators] == \
        [("nvidia-tesla-t4", 2)]
