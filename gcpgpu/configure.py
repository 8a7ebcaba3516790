"""Configuration: the playbook plugins contribute, run by ansible-runner on the inventory.

Each run gets a fresh private data dir; its event stream feeds ``ConfigureDisplay``. The play list
is assembled from the ``gcpgpu_plays`` hook, so the core names no role.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gcpgpu.errors import GcpgpuError
from gcpgpu.resources import data_path
from gcpgpu.role_vars import check_role_vars


@dataclass
class ConfigureResult:
    ok: dict[str, int] = field(default_factory=dict)
    changed: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    unreachable: dict[str, int] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)
    status: str = ""
    custom_stats: dict = field(default_factory=dict)  # what roles published with set_stats
    problems: list[str] = field(default_factory=list)  # from gcpgpu_after_configure hooks

    @property
    def failed_hosts(self) -> list[str]:
        return sorted(set(self.failed) | set(self.unreachable))


def assemble_playbook(spec: dict, plugins, skip_roles=()) -> list[dict]:
    """Plays from every plugin, in order. Consecutive plays on the same hosts are merged, and
    facts (the minimal subset unless a play asks for more) are gathered once per play: Ansible's
    cost is per task and host, so fewer gathers is most of what makes 8 nodes cheap."""
    plays = [play for contributed in plugins.hook.gcpgpu_plays(spec=spec) for play in contributed or []]
    check_role_vars(plays, data_path("roles"))
    playbook: list[dict] = []
    for play in sorted(plays, key=lambda p: (p.get("order", 50), p["name"])):
        roles = [{"role": r["role"], "tags": [r["role"], *r.get("tags", [])], **r.get("vars", {})}
                 for r in play["roles"] if r["role"] not in skip_roles]
        if not roles:
            continue
        wants_facts = play.get("gather_facts", True)
        subset = play.get("gather_subset", ["min"])
        if playbook and playbook[-1]["hosts"] == play["hosts"]:
            merged = playbook[-1]
            merged["name"] += f", {play['name']}"
            merged["roles"] += roles
            merged["gather_facts"] = merged["gather_facts"] or wants_facts
            merged["gather_subset"] = sorted(set(merged["gather_subset"]) | set(subset))
        else:
            playbook.append({"name": play["name"], "hosts": play["hosts"], "become": True,
                             "gather_facts": wants_facts, "gather_subset": list(subset),
                             "roles": roles})
    return playbook


def as_imports(playbook: list[dict]) -> list[dict]:
    """The plays with each role imported as a task, without Ansible's argument-spec check: gcpgpu
    checked the same variables against the same specs before any API call, and Ansible's check
    is one more task, with a worker forked per host, for every role of every run."""
    def imported(role: dict) -> dict:
        params = {k: v for k, v in role.items() if k not in ("role", "tags")}
        return {"name": f"role {role['role']}", "tags": role["tags"], "vars": params,
                "ansible.builtin.import_role": {"name": role["role"], "rolespec_validate": False}}

    return [{**{k: v for k, v in play.items() if k != "roles"},
             "tasks": [imported(role) for role in play["roles"]]} for play in playbook]


def run_playbook(cluster, inventory, *, limit=None, tags=None, check=False, diff=False,
                 skip_roles=(), event_handler=None) -> ConfigureResult:
    import ansible_runner

    playbook = assemble_playbook(cluster.spec, cluster.plugins, skip_roles)
    result = ConfigureResult()
    if not playbook or not inventory.hostvars:
        result.status = "nothing to configure"
        return result
    hosts = len(inventory.hostvars)
    with tempfile.TemporaryDirectory(prefix="gcpgpu-run-") as private:
        project = Path(private) / "project"
        project.mkdir()
        (project / "site.yml").write_text(yaml.safe_dump(as_imports(playbook), sort_keys=False))
        cmdline = " ".join(flag for flag, on in (("--check", check), ("--diff", diff)) if on)

        def on_event(event: dict) -> bool:
            failure = failure_of(event)
            if failure:
                result.failures.append(failure)
            if event.get("event") == "playbook_on_stats":
                result.custom_stats = event.get("event_data", {}).get("artifact_data") or {}
            if event_handler:
                event_handler(event)
            return True  # ansible-runner drops the stats unless the handler returns True

        runner = ansible_runner.run(
            private_data_dir=private, playbook="site.yml", inventory=inventory.yaml_format(),
            roles_path=[str(data_path("roles"))], forks=max(5, min(hosts, 64)),
            limit=limit, tags=tags, cmdline=cmdline or None, quiet=True,
            event_handler=on_event, envvars={
                "ANSIBLE_PIPELINING": "True",
                "ANSIBLE_SSH_TRANSFER_METHOD": "piped",  # files over the open connection, no sftp
                "ANSIBLE_SSH_RETRIES": "3",  # a new session can race a control master that is exiting
                # Shared connections outlive the run by 60 s; keep-alives end one whose VM is
                # gone (deleted, preempted) within ~45 s instead of leaving it to hang a session.
                "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=60s "
                                    "-o ServerAliveInterval=15 -o ServerAliveCountMax=2",
                "ANSIBLE_SSH_CONTROL_PATH_DIR": str(cluster.keys.control_dir),
                # OpenSSH's own hash of host, port and user: wait_for_ssh finds the same master.
                "ANSIBLE_SSH_CONTROL_PATH": "%(directory)s/%%C",
                "ANSIBLE_HOST_KEY_CHECKING": "True",
                "ANSIBLE_RETRY_FILES_ENABLED": "False",
                "ANSIBLE_NOCOLOR": "True",
                "ANSIBLE_DISPLAY_SKIPPED_HOSTS": "False",
            })
        stats = runner.stats or {}
        result.status = runner.status
        result.ok, result.changed = stats.get("ok", {}), stats.get("changed", {})
        result.failed, result.unreachable = stats.get("failures", {}), stats.get("dark", {})
        if runner.status not in ("successful", "failed") or (not stats and runner.rc != 0):
            raise GcpgpuError(f"ansible-playbook did not run ({runner.status}, rc={runner.rc}): "
                              f"{runner.stdout.read()[-2000:]}")
    return result


def failure_of(event: dict) -> dict | None:
    """{host, task, message} of a failed or unreachable task event (ignored errors are not)."""
    if event.get("event") not in ("runner_on_failed", "runner_on_unreachable"):
        return None
    data = event.get("event_data", {})
    if data.get("ignore_errors"):
        return None
    res = data.get("res", {})
    message = str(res.get("msg") or res.get("reason") or "").strip()
    # A command's own words (raw and script merge stderr into stdout over an ssh tty) say more
    # than "non-zero return code".
    output = str(res.get("stderr") or res.get("stdout") or "").strip()
    if output and output not in message:
        message = f"{message}: {output[-400:]}" if message else output
    return {"host": data.get("host"), "task": data.get("task"), "message": message[:500]}
