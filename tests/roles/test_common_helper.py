"""The common role's node-side helper (roles/common/files/common_node.py) on throwaway files, and
the role's blockinfile path for clusters too large for one command line."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

from .conftest import REPO, ok, run_playbook

HELPER = REPO / "roles" / "common" / "files" / "common_node.py"
BEGIN = "# BEGIN gcpgpu cluster hosts (managed by gcpgpu, do not edit)"
END = "# END gcpgpu cluster hosts (managed by gcpgpu, do not edit)"


def helper(*args: str) -> dict:
    r = subprocess.run([sys.executable, str(HELPER), *args], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_hosts_block_replaced_kept_removed_and_check_mode(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost")  # no trailing newline
    block = "10.0.0.1\tn0\n10.0.0.2\tn1\n"
    check = helper("hosts", str(hosts), b64(block), "--check")
    assert check["changed"] and "+10.0.0.1\tn0" in check["diff"]
    assert hosts.read_text() == "127.0.0.1 localhost"  # --check wrote nothing
    assert helper("hosts", str(hosts), b64(block))["changed"]
    assert hosts.read_text() == f"127.0.0.1 localhost\n{BEGIN}\n{block}{END}\n"
    assert oct(hosts.stat().st_mode & 0o777) == "0o644"
    assert helper("hosts", str(hosts), b64(block)) == {"changed": False, "diff": ""}
    # Lines after the block stay where they are; the block is replaced in place.
    hosts.write_text(hosts.read_text() + "10.9.9.9 other\n")
    assert helper("hosts", str(hosts), b64("10.0.0.3\tn2\n"))["changed"]
    assert hosts.read_text() == f"127.0.0.1 localhost\n{BEGIN}\n10.0.0.3\tn2\n{END}\n10.9.9.9 other\n"
    # An empty block removes it.
    assert helper("hosts", str(hosts), b64(""))["changed"]
    assert hosts.read_text() == "127.0.0.1 localhost\n10.9.9.9 other\n"


def test_facts_line_written_once_with_sorted_json(tmp_path):
    fact = tmp_path / "facts.d" / "gcpgpu.fact"
    facts = {"zone": "us-central1-a", "cluster": "c", "gpus": 2}
    assert helper("facts", str(fact), b64(json.dumps(facts)))["changed"]
    assert fact.read_text() == json.dumps(facts, sort_keys=True) + "\n"
    assert not helper("facts", str(fact), b64(json.dumps(facts)))["changed"]
    fact.chmod(0o600)  # a mode drift alone is repaired
    assert helper("facts", str(fact), b64(json.dumps(facts)))["changed"]
    assert oct(fact.stat().st_mode & 0o777) == "0o644"


def test_both_files_in_one_call_answer_together(tmp_path):
    """The role keeps both files with one shell call per node: one answer covers both."""
    hosts, fact = tmp_path / "hosts", tmp_path / "gcpgpu.fact"
    hosts.write_text("127.0.0.1 localhost\n")
    both = ("hosts", str(hosts), b64("10.0.0.1\tn0\n"), "facts", str(fact), b64('{"node": "n0"}'))
    check = helper(*both, "--check")
    assert check["changed"] and "+10.0.0.1\tn0" in check["diff"] and '+{"node": "n0"}' in check["diff"]
    assert not fact.exists()
    assert helper(*both)["changed"]
    assert helper(*both) == {"changed": False, "diff": ""}
    fact.chmod(0o600)  # drift in one file alone is a change
    assert helper(*both)["changed"]


def test_large_cluster_goes_through_blockinfile(tmp_path):
    """Past ~2500 hosts the block no longer fits one command line: blockinfile writes the same."""
    hosts_file = tmp_path / "hosts"
    hosts_file.write_text("127.0.0.1 localhost\n")
    many = [{"name": f"big-cluster-node-{i:05d}", "ip": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"}
            for i in range(3000)]
    plays = [{"hosts": "all", "gather_facts": False, "roles": [
        {"role": "common", "vars": {"common_hosts_file": str(hosts_file),
                                    "common_facts_dir": str(tmp_path / "facts.d"),
                                    "common_hosts": many, "common_facts": {"cluster": "big"}}}]}]
    inventory = {"all": {"hosts": {"localhost": {"ansible_connection": "local",
                                                 "ansible_python_interpreter": sys.executable}}}}
    first = ok(run_playbook(tmp_path / "w", plays, inventory))
    assert first.total("changed") == 2, first.stats
    text = hosts_file.read_text()
    lines = text.split(BEGIN + os.linesep)[1].split(END)[0].splitlines()
    assert len(lines) == 3000 and lines[0] == "10.0.0.0\tbig-cluster-node-00000"
    # The helper takes over the block blockinfile wrote when the cluster shrinks.
    small = plays[0]["roles"][0]["vars"]
    small_plays = [{**plays[0], "roles": [{**plays[0]["roles"][0], "vars": {**small, "common_hosts": many[:2]}}]}]
    ok(run_playbook(tmp_path / "w", small_plays, inventory))
    assert hosts_file.read_text() == f"127.0.0.1 localhost\n{BEGIN}\n10.0.0.0\tbig-cluster-node-00000\n10.0.0.1\tbig-cluster-node-00001\n{END}\n"
    ok(run_playbook(tmp_path / "w", plays, inventory))
    assert ok(run_playbook(tmp_path / "w", plays, inventory)).total("changed") == 0
