"""One environment prefix: SCALESWEEP_DATABASE_URL and SCALESWEEP_READER_PASSWORD; the old HPO_ names
still work for a deprecation period, with one line on stderr when they are used."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
from coordinator.store import engines, urls
print(engines.resolve_url(None))
print(engines.resolve_url(None))
print(urls.env_setting(urls.ENV_READER_PASSWORD))
"""


def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HPO_", "SCALESWEEP_DATABASE", "SCALESWEEP_READER"))}
    return subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, check=True)


def test_the_scalesweep_names_are_read_without_a_warning() -> None:
    done = run({"SCALESWEEP_DATABASE_URL": "postgresql://u@new-host:5432/db", "SCALESWEEP_READER_PASSWORD": "pw"})
    assert done.stdout.splitlines() == ["postgresql+psycopg://u@new-host:5432/db"] * 2 + ["pw"]
    assert done.stderr == ""


def test_the_old_names_still_work_with_one_deprecation_line_each() -> None:
    done = run({"HPO_DATABASE_URL": "postgresql://u@old-host:5432/db", "HPO_READER_PASSWORD": "old-pw"})
    assert done.stdout.splitlines() == ["postgresql+psycopg://u@old-host:5432/db"] * 2 + ["old-pw"]
    lines = done.stderr.splitlines()
    assert lines == [
        "warning: $HPO_DATABASE_URL is deprecated and will stop working: set $SCALESWEEP_DATABASE_URL instead",
        "warning: $HPO_READER_PASSWORD is deprecated and will stop working: set $SCALESWEEP_READER_PASSWORD instead",
    ]  # the URL was read twice, and said once


def test_the_new_name_wins_over_the_old() -> None:
    done = run({"SCALESWEEP_DATABASE_URL": "postgresql://u@new-host:5432/db", "HPO_DATABASE_URL": "postgresql://u@old-host:5432/db"})
    assert done.stdout.splitlines()[0] == "postgresql+psycopg://u@new-host:5432/db"
    assert "deprecated" not in done.stderr
