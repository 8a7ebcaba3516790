"""The gke provider through the CLI, against the emulator's GKE API: create -> no change ->
in-place autoscaling -> pool count -> replace -> down, stockout convergence, kubeconfig, checks."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import container_v1

from gcpgpu.cli import cli

from emulated import gcpgpu

PROJECT = "demo-project"
ZONE = "us-central1-a"
CONTEXT = f"gke_{PROJECT}_{ZONE}_demo"
INVALID = sorted((Path(__file__).parent / "gke_invalid").glob("*.yaml"))
SPEC = """gke:
  master_authorized_networks: [203.0.113.7/32]
node_groups:
  train:
    provider: gke
    count: 1
    machine_type: a2-highgpu-2g
    spot: true
    gke: {pools: 2, min_nodes: 0, max_nodes: 3}
"""


@pytest.fixture(autouse=True)
def kubeconfig(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "kube" / "config"
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


def write_spec(tmp_path: Path, body: str = SPEC) -> str:
    path = tmp_path / "demo.yaml"
    path.write_text(f"name: demo\nproject: {PROJECT}\nzone: {ZONE}\n" + body)
    return str(path)


def plan(emu, spec) -> dict[str, str]:
    """kind/name -> action; a replaced resource also has a delete row (its live self): keep replace."""
    actions: dict[str, str] = {}
    for row in json.loads(gcpgpu(emu, "plan", spec, "--json").output)["changes"]:
        actions.setdefault(f"{row['kind']}/{row['name']}", row["action"])
    return actions


def live_clusters(emu, name: str = "demo", project: str = PROJECT) -> list[container_v1.Cluster]:
    """Clusters labelled as the gcpgpu cluster's, in every location, as the API lists them."""
    client = container_v1.ClusterManagerClient(transport="rest", credentials=AnonymousCredentials(),
                                               client_options=ClientOptions(api_endpoint=emu.url))
    found = client.list_clusters(parent=f"projects/{project}/locations/-").clusters
    return [c for c in found if c.resource_labels.get("gcpgpu-cluster") == name]


def pools(emu) -> dict[str, container_v1.NodePool]:
    [cluster] = live_clusters(emu)
    return {p.name: p for p in cluster.node_pools}


def test_create_no_change_in_place_autoscaling_pool_count_replace_and_down(emu, tmp_path, kubeconfig):
    spec = write_spec(tmp_path)
    gcpgpu(emu, "up", spec)
    [cluster] = live_clusters(emu)
    assert cluster.status.name == "RUNNING" and cluster.location == ZONE
    assert cluster.private_cluster_config.enable_private_nodes
    assert not cluster.private_cluster_config.enable_private_endpoint
    assert [b.cidr_block for b in cluster.master_authorized_networks_config.cidr_blocks] == ["203.0.113.7/32"]
    assert cluster.workload_identity_config.workload_pool == f"{PROJECT}.svc.id.goog"
    assert cluster.release_channel.channel.name == "REGULAR"
    assert sorted(pools(emu)) == ["system", "train-0", "train-1"]
    train = pools(emu)["train-0"]
    assert (train.autoscaling.enabled, train.autoscaling.min_node_count, train.autoscaling.max_node_count) == (
        True, 0, 3)
    assert train.initial_node_count == 1 and train.config.spot
    [gpu] = train.config.accelerators
    assert (gpu.accelerator_type, gpu.accelerator_count) == ("nvidia-tesla-a100", 2)
    assert gpu.gpu_driver_installation_config.gpu_driver_version.name == "DEFAULT"
    assert train.config.resource_labels["gcpgpu-group"] == "train"
    assert yaml.safe_load(kubeconfig.read_text())["current-context"] == CONTEXT

    # Nothing changed: plan keeps everything, up calls nothing that mutates.
    assert set(plan(emu, spec).values()) == {"keep"}
    emu.reset_calls()
    gcpgpu(emu, "up", spec)
    assert emu.count(mutating=True) == 0

    # Autoscaling bounds: both pools changed in place, nothing else.
    spec = write_spec(tmp_path, SPEC.replace("max_nodes: 3", "max_nodes: 5").replace("min_nodes: 0", "min_nodes: 1"))
    assert plan(emu, spec) == {"gke-cluster/demo": "keep", "gke-node-pool/train-0": "update",
                               "gke-node-pool/train-1": "update"}
    emu.reset_calls()
    gcpgpu(emu, "up", spec)
    assert emu.count(mutating=True) == emu.count("container.projects.locations.clusters.nodePools.setAutoscaling") == 2
    assert (pools(emu)["train-1"].autoscaling.min_node_count, pools(emu)["train-1"].autoscaling.max_node_count) == (1, 5)

    # One more pool: one create, the others untouched.
    spec = write_spec(tmp_path, SPEC.replace("pools: 2", "pools: 3"))  # back to 0..3 as well
    emu.reset_calls()
    gcpgpu(emu, "up", spec)
    assert emu.count("container.projects.locations.clusters.nodePools.create") == 1
    assert emu.count("container.projects.locations.clusters.nodePools.setAutoscaling") == 2
    assert emu.count(mutating=True) == 3 and sorted(pools(emu)) == ["system", "train-0", "train-1", "train-2"]

    # A new machine type replaces the pools, not the cluster.
    spec = write_spec(tmp_path, SPEC.replace("a2-highgpu-2g", "a2-highgpu-1g"))
    assert plan(emu, spec) == {"gke-cluster/demo": "keep", "gke-node-pool/train-0": "replace",
                               "gke-node-pool/train-1": "replace", "gke-node-pool/train-2": "delete"}
    gcpgpu(emu, "up", spec)
    assert pools(emu)["train-0"].config.machine_type == "a2-highgpu-1g"
    assert set(plan(emu, spec).values()) == {"keep"}

    gcpgpu(emu, "down", spec)
    assert live_clusters(emu) == []
    config = yaml.safe_load(kubeconfig.read_text())
    assert config["contexts"] == [] and config["current-context"] == ""


def test_a_cluster_setting_replaces_the_cluster_and_its_pools(emu, tmp_path):
    spec = write_spec(tmp_path)
    gcpgpu(emu, "up", spec)
    changed = write_spec(tmp_path, "gke: {release_channel: stable, master_authorized_networks: [203.0.113.7/32]}\n"
                         + SPEC.split("\n", 2)[2])
    assert plan(emu, changed) == {"gke-cluster/demo": "replace", "gke-node-pool/train-0": "replace",
                                  "gke-node-pool/train-1": "replace"}


def test_authorized_networks_change_in_place(emu, tmp_path):
    gcpgpu(emu, "up", write_spec(tmp_path))
    spec = write_spec(tmp_path, SPEC.replace("[203.0.113.7/32]", "[203.0.113.7/32, 198.51.100.0/24]"))
    assert plan(emu, spec)["gke-cluster/demo"] == "update"
    emu.reset_calls()
    gcpgpu(emu, "up", spec)
    assert emu.count(mutating=True) == emu.count("container.projects.locations.clusters.update") == 1
    [cluster] = live_clusters(emu)
    assert sorted(b.cidr_block for b in cluster.master_authorized_networks_config.cidr_blocks) == [
        "198.51.100.0/24", "203.0.113.7/32"]


def test_a_stockout_fails_with_the_reason_and_a_rerun_converges(emu, tmp_path):
    emu.set_capacity(ZONE, "nvidia-tesla-a100", 2)  # one pool's node, not two
    spec = write_spec(tmp_path)
    result = gcpgpu(emu, "up", spec, expect=1)
    assert "ZONE_RESOURCE_POOL_EXHAUSTED" in result.output
    assert sorted(p.status.name for n, p in pools(emu).items() if n != "system") == ["ERROR", "RUNNING"]
    failed = next(n for n, p in pools(emu).items() if p.status.name == "ERROR")
    assert plan(emu, spec)[f"gke-node-pool/{failed}"] == "replace"

    emu.set_capacity(ZONE, "nvidia-tesla-a100", 2)
    gcpgpu(emu, "up", spec)
    assert {p.status.name for p in pools(emu).values()} == {"RUNNING"}
    assert set(plan(emu, spec).values()) == {"keep"}


def test_kubeconfig_is_merged_and_the_command_rewrites_it(emu, tmp_path, kubeconfig):
    kubeconfig.parent.mkdir()
    other = {"apiVersion": "v1", "kind": "Config", "current-context": "other",
             "clusters": [{"name": "other", "cluster": {"server": "https://10.0.0.1"}}],
             "contexts": [{"name": "other", "context": {"cluster": "other", "user": "other"}}],
             "users": [{"name": "other", "user": {"token": "kept"}}]}
    kubeconfig.write_text(yaml.safe_dump(other))
    spec = write_spec(tmp_path)
    gcpgpu(emu, "up", spec)
    config = yaml.safe_load(kubeconfig.read_text())
    assert [c["name"] for c in config["contexts"]] == ["other", CONTEXT]
    assert config["current-context"] == CONTEXT
    user = next(u for u in config["users"] if u["name"] == CONTEXT)["user"]
    assert user["exec"]["command"] == "gke-gcloud-auth-plugin" and user["exec"]["provideClusterInfo"]
    server = next(c for c in config["clusters"] if c["name"] == CONTEXT)["cluster"]
    [cluster] = live_clusters(emu)
    assert server == {"server": f"https://{cluster.endpoint}",
                      "certificate-authority-data": cluster.master_auth.cluster_ca_certificate}
    assert kubeconfig.stat().st_mode & 0o077 == 0

    kubeconfig.unlink()
    result = gcpgpu(emu, "kubeconfig", spec)
    assert CONTEXT in result.output
    assert yaml.safe_load(kubeconfig.read_text())["current-context"] == CONTEXT

    gcpgpu(emu, "down", spec)
    kubeconfig.write_text(yaml.safe_dump(other))
    assert "does not exist" in gcpgpu(emu, "kubeconfig", spec, expect=1).output
    assert yaml.safe_load(kubeconfig.read_text()) == other


def test_gke_nodes_are_not_ssh_hosts(emu, tmp_path):
    spec = write_spec(tmp_path)
    gcpgpu(emu, "up", spec)
    assert json.loads(gcpgpu(emu, "status", spec, "--json").output)["nodes"] == []


def test_down_works_where_the_kubernetes_engine_api_is_disabled(emu, tmp_path):
    spec = write_spec(tmp_path, "node_groups: {gpu: {count: 1, machine_type: g2-standard-4}}\n")
    gcpgpu(emu, "up", spec)
    emu.inject_fault("container.projects.locations.clusters.list", "SERVICE_DISABLED", http_status=403,
                     message="Kubernetes Engine API has not been used in project 1 before or it is disabled.")
    gcpgpu(emu, "down", spec)
    assert emu.instances() == []


def expected_text(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), path
    return first.removeprefix("# expect: ")


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_gke_settings_exit_2_before_any_call(emu, path):
    result = CliRunner().invoke(cli, ["--endpoint", emu.url, "up", str(path)])
    assert result.exit_code == 2, result.output
    assert expected_text(path) in result.output
    assert emu.count() == 0


def test_there_are_invalid_examples():
    assert len(INVALID) >= 8


def test_a_regional_cluster_spreads_every_pool_over_its_zones(emu, tmp_path):
    body = ("gke: {location: us-central1, node_locations: [us-central1-a, us-central1-b]}\n"
            + SPEC.split("\n", 2)[2])
    gcpgpu(emu, "up", write_spec(tmp_path, body))
    [cluster] = live_clusters(emu)
    assert cluster.location == "us-central1" and list(cluster.locations) == ["us-central1-a", "us-central1-b"]
    assert cluster.current_node_count == 1 * 2 + 2 * 1 * 2  # system pool + two GPU pools, per zone


def test_every_gke_setting_is_documented_with_a_description():
    from gcpgpu.plugins import Plugins
    from gcpgpu.spec import build_schema

    schema = build_schema(Plugins())
    cluster = schema["properties"]["gke"]
    pools = schema["$defs"]["gke_node_pools"]
    for part in (cluster, pools, cluster["properties"]["system_pool"]):
        assert part["description"] and part["additionalProperties"] is False
        for name, prop in part["properties"].items():
            assert prop.get("description"), name


def test_an_api_refusal_is_reported_and_a_rerun_converges(emu, tmp_path):
    spec = write_spec(tmp_path)
    emu.inject_fault("container.projects.locations.clusters.nodePools.create", "badRequest", http_status=400,
                     message="Node pools of this shape are not allowed by an organization policy.")
    result = gcpgpu(emu, "up", spec, expect=1)
    assert "GKE refused to create gke-node-pool train-" in result.output
    assert "organization policy" in result.output
    gcpgpu(emu, "up", spec)
    assert sorted(pools(emu)) == ["system", "train-0", "train-1"]


def test_the_example_comes_up_and_goes_down(emu):
    example = str(Path(__file__).parents[1] / "examples" / "gke.yaml")
    gcpgpu(emu, "up", example)
    assert set(plan(emu, example).values()) == {"keep"}
    [cluster] = live_clusters(emu, "llm", "my-project")
    assert sorted(p.name for p in cluster.node_pools) == ["a100-0", "a100-1", "system", "t4-0"]
    gcpgpu(emu, "down", example)
    assert live_clusters(emu, "llm", "my-project") == []
