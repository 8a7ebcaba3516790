"""The command line: invalid files exit 2 before any API call; --help stays light."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gcpgpu.cli import cli
from gcpgpu.emulator import Emulator

INVALID = sorted((Path(__file__).parent / "spec" / "invalid").glob("*.yaml"))


def expected_text(path: Path) -> str:
    first = path.read_text(errors="replace").splitlines()[0] if path.stat().st_size else ""
    return first.removeprefix("# expect:").strip() if first.startswith("# expect:") else ""


@pytest.fixture(scope="module")
def emu():
    with Emulator(latency=0.05) as emulator:
        yield emulator


def test_there_are_at_least_30_invalid_files():
    assert len(INVALID) >= 30


@pytest.mark.parametrize("command", ["validate", "plan", "up", "down"])
@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_file_exits_2_with_its_path_and_calls_nothing(emu, path, command):
    emu.reset_calls()
    result = CliRunner().invoke(cli, ["--endpoint", emu.url, command, str(path)])
    assert result.exit_code == 2, result.output
    expected = expected_text(path)
    assert expected and expected in result.output
    assert emu.count() == 0


def test_missing_file_and_directory_exit_2(tmp_path):
    for target in (tmp_path / "nope.yaml", tmp_path):
        result = CliRunner().invoke(cli, ["validate", str(target)])
        assert result.exit_code == 2 and str(target) in result.output


def test_help_does_not_import_google_clients():
    code = ("import sys; from gcpgpu.cli import main; sys.argv=['gcpgpu','--help'];\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print([m for m in sys.modules if m.startswith(('google', 'ansible_runner', 'fabric'))])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "Usage: gcpgpu" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_every_command_has_help_with_an_example():
    """Built-in and plugin-contributed commands alike (groups: each of their subcommands)."""
    import click

    context = click.Context(cli)
    for name in cli.list_commands(context):
        command = cli.get_command(context, name)
        subcommands = command.commands.values() if isinstance(command, click.Group) else [command]
        for sub in subcommands:
            assert "Example:" in (sub.help or ""), f"{name} {sub.name}"


def test_plugins_lists_builtin_plugins_with_hooks():
    data = json.loads(CliRunner().invoke(cli, ["plugins", "--json"]).output)
    names = {p["name"]: p for p in data["plugins"]}
    assert {"compute", "node_setup"} <= set(names)
    assert "gcpgpu_plays" in names["node_setup"]["hooks"]
    assert {"compute", "mig", "gke", "network", "service_account", "filestore", "gcs", "static"} <= set(data["providers"])
