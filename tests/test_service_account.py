"""The cluster's service account and its project roles, against the bundled emulator."""
from __future__ import annotations

import json
from pathlib import Path

from gcpgpu.emulator.iam import IamService
from gcpgpu_plugins import service_account

from emulated import gcpgpu

PROJECT = "demo-project"
ACCOUNT = "gcpgpu-demo@demo-project.iam.gserviceaccount.com"
MEMBER = f"serviceAccount:{ACCOUNT}"
OWNER = f"user:owner@{PROJECT}.example.com"


def iam(emu) -> IamService:
    [service] = [s for s in emu.services if isinstance(s, IamService)]
    return service


def bindings(emu) -> dict[str, list[str]]:
    return {b["role"]: b["members"] for b in iam(emu).policies.get(PROJECT, {}).get("bindings", [])}


def write_spec(tmp_path: Path, body: str = "") -> Path:
    path = tmp_path / "demo.yaml"
    path.write_text(f"name: demo\nproject: {PROJECT}\nzone: us-central1-a\n" + body)
    return path


def test_up_makes_one_account_with_only_the_roles_it_needs_and_attaches_it(emu, tmp_path):
    spec = write_spec(tmp_path, "node_groups:\n  gpu: {count: 2}\n")
    gcpgpu(emu, "up", str(spec))
    account = iam(emu).accounts[(PROJECT, ACCOUNT)]
    assert account["description"].startswith("gcpgpu-cluster=demo ")
    assert bindings(emu) == {"roles/owner": [OWNER], "roles/logging.logWriter": [MEMBER],
                             "roles/monitoring.metricWriter": [MEMBER]}
    for vm in emu.instances():
        # Never the default compute account (it ends in -compute@developer.gserviceaccount.com).
        assert vm["serviceAccounts"] == [{"email": ACCOUNT, "scopes": [service_account.CLOUD_PLATFORM]}]
    assert not any("/keys" in c.path for c in emu.calls)  # no key is ever made

    emu.reset_calls()
    gcpgpu(emu, "up", str(spec))
    assert [c.method_id for c in emu.calls if c.mutating] == []


def test_an_extra_role_is_added_alone_and_removed_alone(emu, tmp_path):
    spec = write_spec(tmp_path)
    gcpgpu(emu, "up", str(spec))
    spec.write_text(spec.read_text() + "service_account: {extra_roles: [roles/artifactregistry.reader]}\n")
    rows = json.loads(gcpgpu(emu, "plan", str(spec), "--json").output)["changes"]
    assert [(r["action"], r["name"]) for r in rows if r["action"] != "keep"] == \
        [("create", "roles/artifactregistry.reader")]
    emu.reset_calls()
    gcpgpu(emu, "up", str(spec))
    assert [c.method_id for c in emu.calls if c.mutating] == ["cloudresourcemanager.projects.setIamPolicy"]
    assert bindings(emu)["roles/artifactregistry.reader"] == [MEMBER]

    spec.write_text(spec.read_text().replace("roles/artifactregistry.reader", "roles/viewer"))
    gcpgpu(emu, "up", str(spec))
    assert "roles/artifactregistry.reader" not in bindings(emu)
    assert bindings(emu)["roles/viewer"] == [MEMBER]


def test_down_removes_the_account_and_only_its_own_memberships(emu, tmp_path):
    spec = write_spec(tmp_path)
    gcpgpu(emu, "up", str(spec))
    # Someone else shares a role with the cluster's account.
    policy = iam(emu).policies[PROJECT]
    [writer] = [b for b in policy["bindings"] if b["role"] == "roles/logging.logWriter"]
    writer["members"].append("user:alice@example.com")
    gcpgpu(emu, "down", str(spec))
    assert iam(emu).accounts == {}
    assert bindings(emu) == {"roles/owner": [OWNER], "roles/logging.logWriter": ["user:alice@example.com"]}
    assert not any("deleted:" in m for members in bindings(emu).values() for m in members)


def test_a_concurrent_policy_change_is_retried_and_kept(emu, tmp_path, monkeypatch):
    """Someone writes the policy between our read and our write: the stale etag is refused
    (409 ABORTED), and the whole read-modify-write runs again with their change kept."""
    service = iam(emu)
    real_get = service.get_policy
    reads = []

    def racing_get(params, query, body):
        served = real_get(params, query, body)
        reads.append(served)
        if len(reads) == 1:  # after the plan's read, which up's write starts from, someone writes
            service.policies[params["project"]]["bindings"].append(
                {"role": "roles/viewer", "members": ["user:bob@example.com"]})
            service.policies[params["project"]]["etag"] = service._etag()
        return served

    monkeypatch.setattr(service, "get_policy", racing_get)
    spec = write_spec(tmp_path)
    gcpgpu(emu, "up", str(spec))
    statuses = [c.status for c in emu.calls if c.method_id == "cloudresourcemanager.projects.setIamPolicy"]
    assert statuses == [409, 200]
    assert bindings(emu)["roles/viewer"] == ["user:bob@example.com"]
    assert bindings(emu)["roles/logging.logWriter"] == [MEMBER]


def test_a_foreign_account_of_the_same_name_is_refused(emu, tmp_path):
    iam(emu).create({"project": PROJECT}, {}, {"accountId": "gcpgpu-demo", "serviceAccount": {}})
    result = gcpgpu(emu, "up", str(write_spec(tmp_path)), expect=1)
    assert f"service account {ACCOUNT} exists but is not marked gcpgpu-cluster=demo" in result.output
    assert emu.instances() == []


def test_roles_follow_the_ops_agent_switch():
    spec = {"name": "demo", "project": PROJECT, "service_account": {"extra_roles": ["roles/viewer"]}}
    assert service_account.roles(spec) == [*service_account.OPS_AGENT_ROLES, "roles/viewer"]
    assert service_account.roles({**spec, "ops_agent": False}) == ["roles/viewer"]
    assert service_account.roles({**spec, "ops_agent": {"enabled": False}}) == ["roles/viewer"]


def test_emulated_endpoint_still_gets_the_account_but_google_never_is_called(emu, tmp_path):
    """The IAM client is built by the one client factory: with an endpoint, all IAM and Resource
    Manager calls land on the emulator (the conftest also refuses any non-local name)."""
    gcpgpu(emu, "up", str(write_spec(tmp_path)))
    methods = {c.method_id for c in emu.calls}
    assert {"iam.projects.serviceAccounts.create", "cloudresourcemanager.projects.getIamPolicy",
            "cloudresourcemanager.projects.setIamPolicy"} <= methods
