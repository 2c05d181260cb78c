"""A fresh clone has no ../shared beside it: the tests that need the real series skip, none fail."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from coordinator.data.location import ENV_DATA, real_data_dir
from tests.conftest import REPO

# Every module that reads the real series, except the trainer's (its data tests are marked the same
# way, and its other tests train models for a minute).
DATA_MODULES = [
    "tests/integration/test_data_series.py", "tests/unit/test_data_labels.py", "tests/integration/test_data_registry.py",
    "tests/unit/test_data_features.py", "tests/unit/test_data_splits.py", "tests/integration/test_baselines.py",
]  # fmt: skip


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


def test_real_data_is_fetched_once_into_the_cache_and_validated(tmp_path: Path, monkeypatch) -> None:
    """Without the shared folder, SPY and ^VIX come from Yahoo (here: a stand-in for the network with
    yfinance's layout) into data/, validated like an import; the next run reads the cache."""
    from coordinator.data import location, series
    from coordinator.data.synth import synthetic_series

    calls = []

    def yahoo(symbol: str):
        calls.append(symbol)
        frame = synthetic_series(400, seed=len(calls)).frame
        out = frame.rename(columns=str.capitalize)
        out.index = out.index.tz_localize("America/New_York").rename("Date")
        return out

    monkeypatch.setenv(ENV_DATA, str(tmp_path / "absent"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(series, "yfinance_history", yahoo)
    said: list[str] = []
    found = location.find_real_bars(say=said.append)
    assert found is not None and calls == ["SPY", "^VIX"] and "fetched now" in found.origin
    assert found.spy == tmp_path / "data" / "SPY.csv" and found.vix == tmp_path / "data" / "VIX.csv"
    assert len(series.read_bars(found.spy).frame) == 400  # what was written reads back as valid bars
    again = location.find_real_bars(say=said.append)
    assert again is not None and "fetched earlier" in again.origin and calls == ["SPY", "^VIX"]

    def broken(symbol: str):
        frame = yahoo(symbol)
        frame.iloc[5, frame.columns.get_loc("Close")] = -1.0  # a bad download is refused, nothing is cached
        return frame

    (tmp_path / "data" / "SPY.csv").unlink()
    (tmp_path / "data" / "VIX.csv").unlink()
    monkeypatch.setattr(series, "yfinance_history", broken)
    assert location.find_real_bars(say=said.append) is None
    assert not (tmp_path / "data" / "SPY.csv").exists()
    assert any("could not fetch real data" in line and "non-positive close" in line for line in said)
