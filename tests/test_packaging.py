"""The wheel and the plugin entry points, exercised from fresh virtual environments.

Both venvs see this machine's site-packages for the dependencies (CI has no network), but gcpgpu
itself or the third-party plugin come from what the test builds and installs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "single-gpu.yaml"


def make_venv(path: Path) -> Path:
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(path)
    return path / "bin" / "python"


def run(python: Path, *args, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


def pip_install(python: Path, target: str) -> None:
    # pip of the base interpreter, targeting the venv; offline: everything else is on the system.
    result = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                             "--no-deps", "--no-index", "--no-build-isolation", target],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def gcpgpu_cli(python: Path, *args, env=None, cwd=None):
    return run(python, "-c", "from gcpgpu.cli import main; main()", *args, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation",
                             "--outdir", str(out), str(REPO)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return next(out.glob("gcpgpu-*.whl"))


def test_wheel_ships_code_plugins_and_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "gcpgpu/cli.py" in names
    assert "gcpgpu_plugins/compute.py" in names
    assert "gcpgpu/_data/schemas/cluster.schema.json" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[gcpgpu]" in text and "compute = gcpgpu_plugins.compute" in text
    assert "gcpgpu = gcpgpu.cli:main" in text and "gcpgpu-inventory" in text


def test_installed_wheel_validates_and_lists_plugins(wheel, tmp_path):
    python = make_venv(tmp_path / "venv")
    pip_install(python, str(wheel))
    where = run(python, "-c", "import gcpgpu, gcpgpu.spec; print(gcpgpu.__file__)", cwd=tmp_path)
    assert str(tmp_path / "venv") in where.stdout, where.stderr  # the wheel's copy, not the checkout

    validate = gcpgpu_cli(python, "validate", str(EXAMPLE), cwd=tmp_path)
    assert validate.returncode == 0, validate.stderr
    assert "ok" in validate.stdout

    plugins = gcpgpu_cli(python, "plugins", "--json", cwd=tmp_path)
    assert plugins.returncode == 0, plugins.stderr
    data = json.loads(plugins.stdout)
    assert "compute" in data["providers"]
    compute = next(p for p in data["plugins"] if p["name"] == "compute")
    assert "gcpgpu_register_providers" in compute["hooks"] and compute["version"] == "0.1.0"


@pytest.fixture
def plugin_venv(tmp_path) -> Path:
    python = make_venv(tmp_path / "venv")
    pip_install(python, str(REPO / "tests" / "plugin_package"))
    return python


def write_spec(path: Path, flavour="vanilla", count=2) -> Path:
    path.write_text(f"""name: thirdparty
project: demo-project
node_groups:
  boxes:
    provider: localfile
    count: {count}
    flavour: {flavour}
""")
    return path


def test_third_party_plugin_provides_a_provider(plugin_venv, tmp_path, gcp_emulator):
    # `down` sweeps every provider, the built-in compute one included: give it the emulator.
    env = {**os.environ, "GCPGPU_LOCALFILE_DIR": str(tmp_path / "machines"),
           "GCPGPU_STATE_DIR": str(tmp_path / "state"), "GCPGPU_ENDPOINT": gcp_emulator.url}
    spec = write_spec(tmp_path / "cluster.yaml")

    listed = json.loads(gcpgpu_cli(plugin_venv, "plugins", "--json", env=env).stdout)
    row = next(p for p in listed["plugins"] if p["name"] == "localfile")
    assert row["package"] == "gcpgpu-localfile" and row["version"] == "0.3.1"
    assert "localfile" in listed["providers"]

    up = gcpgpu_cli(plugin_venv, "up", str(spec), "--no-configure", env=env)  # no SSH on files
    assert up.returncode == 0, up.stderr
    assert sorted(p.name for p in (tmp_path / "machines").iterdir()) == [
        "thirdparty-boxes-0.json", "thirdparty-boxes-1.json"]
    status = json.loads(gcpgpu_cli(plugin_venv, "status", str(spec), "--json", env=env).stdout)
    assert [n["name"] for n in status["nodes"]] == ["thirdparty-boxes-0", "thirdparty-boxes-1"]

    # The plugin's own validation hook runs and its error has the field path: exit 2.
    bad = gcpgpu_cli(plugin_venv, "validate", str(write_spec(tmp_path / "bad.yaml", "mud")), env=env)
    assert bad.returncode == 2 and "node_groups.boxes.flavour" in bad.stderr

    down = gcpgpu_cli(plugin_venv, "down", str(spec), env=env)
    assert down.returncode == 0, down.stderr
    assert list((tmp_path / "machines").iterdir()) == []


def test_blocked_plugin_is_reported_and_its_provider_unknown(plugin_venv, tmp_path):
    env = {**os.environ, "GCPGPU_DISABLE_PLUGINS": "localfile",
           "GCPGPU_LOCALFILE_DIR": str(tmp_path / "machines")}
    listed = json.loads(gcpgpu_cli(plugin_venv, "plugins", "--json", env=env).stdout)
    assert "localfile" not in listed["providers"]
    assert any(p["name"] == "localfile" and p["blocked"] for p in listed["plugins"])
    result = gcpgpu_cli(plugin_venv, "validate", str(write_spec(tmp_path / "c.yaml")), env=env)
    assert result.returncode == 2
    assert "unknown provider 'localfile'; available: compute, filestore, gcs" in result.stderr
