"""A kubectl context for a GKE cluster, written the way `gcloud container clusters get-credentials`
writes it: context, cluster and user all named ``gke_<project>_<location>_<cluster>``, the user an
exec entry for ``gke-gcloud-auth-plugin``. Other entries of the file are kept."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml

AUTH_PLUGIN = "gke-gcloud-auth-plugin"
INSTALL_HINT = ("Install gke-gcloud-auth-plugin for use with kubectl by following "
                "https://cloud.google.com/kubernetes-engine/docs/how-to/cluster-access-for-kubectl#install_plugin")
SECTIONS = ("clusters", "contexts", "users")


def context_name(project: str, location: str, cluster: str) -> str:
    return f"gke_{project}_{location}_{cluster}"


def kubeconfig_path() -> Path:
    """The file kubectl writes to: the first entry of $KUBECONFIG, else ~/.kube/config."""
    listed = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return Path(listed[0]).expanduser() if listed else Path.home() / ".kube" / "config"


def _read(path: Path) -> dict:
    config = yaml.safe_load(path.read_text()) if path.exists() else None
    config = config if isinstance(config, dict) else {}
    config.setdefault("apiVersion", "v1")
    config.setdefault("kind", "Config")
    config.setdefault("preferences", {})
    for section in SECTIONS:
        config[section] = [e for e in (config.get(section) or []) if isinstance(e, dict)]
    return config


def _write(path: Path, config: dict) -> None:
    """Atomically, readable by the owner only (the file may hold other clusters' secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".kubeconfig-")
    try:
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump(config, handle, default_flow_style=False, sort_keys=False)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _upsert(entries: list[dict], name: str, key: str, value: dict) -> None:
    for entry in entries:
        if entry.get("name") == name:
            entry[key] = value
            return
    entries.append({"name": name, key: value})


def write_entry(name: str, server: str, ca_data: str, path: Path | None = None) -> Path:
    """Add or refresh the context ``name`` and make it the current one."""
    path = path or kubeconfig_path()
    config = _read(path)
    _upsert(config["clusters"], name, "cluster", {"certificate-authority-data": ca_data, "server": server})
    _upsert(config["users"], name, "user", {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "command": AUTH_PLUGIN,
        "installHint": INSTALL_HINT,
        "provideClusterInfo": True,
    }})
    _upsert(config["contexts"], name, "context", {"cluster": name, "user": name})
    config["current-context"] = name
    _write(path, config)
    return path


def remove_entry(name: str, path: Path | None = None) -> bool:
    """Remove the context ``name`` (after `down`); True if the file had it."""
    path = path or kubeconfig_path()
    if not path.exists():
        return False
    config = _read(path)
    before = sum(len(config[s]) for s in SECTIONS)
    for section in SECTIONS:
        config[section] = [e for e in config[section] if e.get("name") != name]
    if config.get("current-context") == name:
        config["current-context"] = ""
    if sum(len(config[s]) for s in SECTIONS) == before:
        return False
    _write(path, config)
    return True
