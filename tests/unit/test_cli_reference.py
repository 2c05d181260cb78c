"""The committed CLI reference (docs/cli.md) is what the typer apps generate today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cli_reference_is_current() -> None:
    done = subprocess.run([sys.executable, "scripts/cli_reference.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_cli_reference_lists_every_command() -> None:
    reference = (ROOT / "docs" / "cli.md").read_text()
    for command in ("coordinator create-studies", "coordinator db init", "coordinator evaluate", "coordinator cluster slurm", "worker [OPTIONS]"):
        assert command in reference, command
