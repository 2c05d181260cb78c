"""A fresh clone has no ../shared beside it: the tests that need the real series skip, none fail."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from coordinator.data.location import ENV_DATA, real_data_dir
from tests.conftest import REPO

DATA_MODULES = ["tests/test_data_series.py", "tests/test_data_labels.py", "tests/test_data_registry.py"]


def test_data_dependent_tests_skip_with_a_reason_without_the_data(tmp_path: Path) -> None:
    empty = tmp_path / "no-data"
    empty.mkdir()
    env = {**os.environ, ENV_DATA: str(empty)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *DATA_MODULES],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    summary = proc.stdout.strip().splitlines()[-1]
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "failed" not in summary and "error" not in summary, summary
    skipped = int(re.search(r"(\d+) skipped", summary).group(1))  # type: ignore[union-attr]
    assert skipped >= 10, summary
    assert f"real SPY/VIX data not found in {empty} (set ${ENV_DATA})" in proc.stdout


def test_the_data_folder_is_one_setting(monkeypatch) -> None:
    monkeypatch.setenv(ENV_DATA, "/somewhere/else")
    assert real_data_dir() == Path("/somewhere/else")
    monkeypatch.delenv(ENV_DATA)
    assert real_data_dir() == REPO.parent / "shared" / "data"
