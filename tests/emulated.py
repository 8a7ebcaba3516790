"""The CLI against the emulator, for tests of `up`/`plan`/`down` without test nodes."""
from __future__ import annotations

from click.testing import CliRunner

from gcpgpu.cli import cli


def gcpgpu(emu, *args: str, expect: int = 0):
    """Run ``gcpgpu --endpoint <emulator> ARGS`` and check its exit code. `up` does not configure:
    no test nodes stand behind these VMs."""
    if args[0] == "up":
        args = (*args, "--no-configure")
    result = CliRunner().invoke(cli, ["--endpoint", emu.url, *args], catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result
