"""Base images end to end: a configured node's disk becomes an image; a cluster booting from its
family comes up already configured (configure changes nothing)."""
from __future__ import annotations

import os

from click.testing import CliRunner

from gcpgpu.cli import cli, configure_hosts
from gcpgpu.engine import open_cluster
from gcpgpu.plugins import Plugins




def gcpgpu(*args, expect=0):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result.output


def configure(spec):
    cluster = open_cluster(str(spec), Plugins(), os.environ["GCPGPU_ENDPOINT"])
    return configure_hosts(cluster, cluster.hosts())


def write_spec(tmp_path, image: str = "") -> str:
    code = tmp_path / "code"
    if not code.exists():
        code.mkdir()
        (code / "train.py").write_text("print('train')\n")
    spec = tmp_path / "cluster.yaml"
    spec.write_text(f"""name: img
project: demo-project
zone: us-central1-a
node_groups:
  nodes: {{count: 1, machine_type: n1-standard-4{image}}}
files: {{src: code, dest: /opt/code}}
startup_command: echo "ran on $(hostname)"
ssh: {{timeout_s: 60}}
""")
    return str(spec)


def test_a_cluster_from_the_image_family_needs_no_configuration(node_rig, tmp_path):
    emu, pool = node_rig
    spec = write_spec(tmp_path)
    gcpgpu("up", spec)
    machine_id = pool.node("img-nodes-0000").path("/etc/machine-id").read_text()
    gcpgpu("image", "create", spec, "--from", "img-nodes-0000", "--family", "img-base", "--name", "img-base-1")
    image = next(i for i in emu.state.user_images if i.name == "img-base-1")
    assert image.family == "img-base"
    assert emu.state.image_labels[("demo-project", "img-base-1")]["gcpgpu-image-of"] == "img"
    assert {i["status"] for i in emu.instances()} == {"RUNNING"}  # started again afterwards

    gcpgpu("down", spec)
    assert emu.state.user_images, "down must not delete the cluster's images"
    spec = write_spec(tmp_path, ", image: {family: img-base, project: demo-project}")
    gcpgpu("up", spec, "--no-configure")
    node = pool.node("img-nodes-0000")
    assert node.path("/opt/code/train.py").read_text() == "print('train')\n"  # from the image
    assert node.path("/etc/machine-id").read_text() != machine_id
    result = configure(spec)
    assert set(result.ok) == {"img-nodes-0000"} and sum(result.changed.values()) == 0, result.changed
    gcpgpu("down", spec)


def test_image_create_refuses_bad_names_and_unknown_nodes(node_rig, tmp_path):
    emu, pool = node_rig
    spec = write_spec(tmp_path)
    gcpgpu("up", spec, "--no-configure")
    assert "--family 'Bad_Family'" in gcpgpu("image", "create", spec, "--from", "img-nodes-0000",
                                             "--family", "Bad_Family", expect=1)
    assert "no VM 'nope'" in gcpgpu("image", "create", spec, "--from", "nope", "--family", "ok", expect=1)
    assert emu.count("compute.images.insert") == 0
    gcpgpu("down", spec)
