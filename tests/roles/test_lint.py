"""The roles and playbooks pass ansible-lint at the production profile (CI runs this test)."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from .conftest import REPO


def test_roles_and_playbooks_pass_ansible_lint_production():
    lint = shutil.which("ansible-lint")
    if not lint:
        pytest.skip("ansible-lint is not installed (pip install ansible-lint)")
    r = subprocess.run([lint, "--offline", "--nocolor", "--profile", "production", "roles/", "playbooks/"], cwd=REPO,
                       capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout[-8000:] + r.stderr[-4000:]
