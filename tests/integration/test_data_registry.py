"""Registry: stable hashes, idempotent builds, new versions on change, exact round trips, checks on load."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from coordinator.data import registry
from coordinator.data.labels import positive_rate, threshold_label
from coordinator.data.series import Bars, content_sha256, read_bars, to_parquet_bytes
from coordinator.errors import UserError
from tests.conftest import SPY_CSV, VIX_CSV, requires_real_data
from tests.data_helpers import count_rows, run_cli


def import_real(engine: sa.Engine) -> None:
    registry.register_series(engine, "SPY", read_bars(SPY_CSV), source=str(SPY_CSV))
    registry.register_series(engine, "VIX", read_bars(VIX_CSV, repair_ohlc=True), source=str(VIX_CSV))


@requires_real_data
def test_content_hash_is_canonical() -> None:
    frame = read_bars(SPY_CSV).frame
    sha = content_sha256(frame)
    assert sha == content_sha256(frame.copy())
    assert sha == content_sha256(pd.read_parquet(io.BytesIO(to_parquet_bytes(frame))))
    nudged = frame.copy()
    nudged.iloc[100, 3] = np.nextafter(nudged.iloc[100, 3], np.inf)  # one ulp of one close
    assert content_sha256(nudged) != sha
    assert content_sha256(frame[["open", "high", "low", "volume", "close"]]) != sha  # column order matters


@requires_real_data
def test_build_registers_and_round_trips(engine: sa.Engine) -> None:
    import_real(engine)
    built, created = registry.build_dataset(engine, "SPY", vix="VIX")
    assert created and built.name == "spy-a25-vix8" and built.version == 1
    assert len(built.input_columns) == 33 and list(built.frame.columns) == built.input_columns
    assert not built.frame.isna().any().any()
    assert built.frame.index[0] == pd.Timestamp("1993-11-11")  # SMA 200 warm-up dropped
    assert built.meta["warmup_rows_dropped"] == 199 and built.meta["gap_rows_dropped"] == 0

    loaded = registry.load_dataset(engine, "spy-a25-vix8")
    pd.testing.assert_frame_equal(loaded.frame, built.frame, check_exact=True)
    assert loaded.frame.index.name == "date" and loaded.frame.index.is_monotonic_increasing
    assert (loaded.name, loaded.version, loaded.sha256) == (built.name, built.version, built.sha256)
    assert loaded.input_columns == built.input_columns
    assert [s["symbol"] for s in loaded.meta["sources"]] == ["SPY", "VIX"]
    assert loaded.meta["sources"][0]["sha256"] == content_sha256(read_bars(SPY_CSV).frame)
    assert loaded.meta["tier"] == "a25-vix8"

    # The same inputs again: the same version, nothing new stored.
    again, created = registry.build_dataset(engine, "SPY", vix="VIX")
    assert not created and (again.version, again.sha256) == (1, built.sha256)
    assert count_rows(engine.url.render_as_string(hide_password=False), "datasets") == 1


@requires_real_data
def test_changed_input_makes_a_new_version(engine: sa.Engine) -> None:
    full = read_bars(SPY_CSV)
    registry.register_series(engine, "SPY", Bars(full.frame.iloc[:-250]), source="first part")
    first, _ = registry.build_dataset(engine, "SPY")
    grown = registry.register_series(engine, "SPY", full, source=str(SPY_CSV))
    assert grown.created and grown.version == 2
    second, created = registry.build_dataset(engine, "SPY")
    assert created and (first.name, first.version, second.version) == ("spy-a25", 1, 2)
    assert second.sha256 != first.sha256 and len(second.frame) == len(first.frame) + 250
    assert second.meta["sources"][0]["version"] == 2
    assert registry.load_dataset(engine, "spy-a25").version == 2  # the latest by default
    old = registry.load_dataset(engine, "spy-a25", 1)  # older versions stay as they were
    pd.testing.assert_frame_equal(old.frame, first.frame, check_exact=True)
    names = [(d["name"], d["version"]) for d in registry.list_datasets(engine)]
    assert names == [("spy-a25", 1), ("spy-a25", 2)]


@requires_real_data
def test_load_refuses_unknown_and_tampered(engine: sa.Engine) -> None:
    import_real(engine)
    built, _ = registry.build_dataset(engine, "SPY")
    with pytest.raises(UserError, match=r"unknown dataset 'qqq-a25' \(registered: spy-a25;"):
        registry.load_dataset(engine, "qqq-a25")
    with pytest.raises(UserError, match=r"dataset 'spy-a25' has no version 7 \(latest is 1\)"):
        registry.load_dataset(engine, "spy-a25", 7)
    tampered = built.frame.copy()
    tampered.iloc[10, 3] *= 1.01
    with engine.begin() as conn:
        conn.execute(registry.datasets_table.update().values(content=to_parquet_bytes(tampered)))
    with pytest.raises(UserError, match="spy-a25 v1: stored content does not match its sha256"):
        registry.load_dataset(engine, "spy-a25")


@requires_real_data
def test_build_needs_registered_series_with_volume(engine: sa.Engine) -> None:
    with pytest.raises(UserError, match="no series 'SPY' registered: import it first"):
        registry.build_dataset(engine, "SPY")
    import_real(engine)
    with pytest.raises(UserError, match="tier a25 needs volume, and series VIX v1 has none"):
        registry.build_dataset(engine, "VIX")
    with pytest.raises(UserError, match="unknown tier 'b99'"):
        registry.build_dataset(engine, "SPY", tier="b99")


@requires_real_data
def test_cli_build_is_stable_across_processes(
    initialised_db: str, engine: sa.Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ["--database-url", initialised_db]
    assert run_cli(capsys, *url, "data", "import", "SPY", str(SPY_CSV))[0] == 0
    assert run_cli(capsys, *url, "data", "import", "VIX", str(VIX_CSV), "--repair-ohlc")[0] == 0
    code, out, err = run_cli(capsys, *url, "data", "build", "--symbol", "SPY", "--vix", "VIX")
    assert code == 0, err
    assert "registered dataset spy-a25-vix8 v1" in out
    assert "6993 (1993-11-11 .. 2021-08-19)" in out and "columns  33: open, high, low, close, volume, dema_9" in out
    frame = registry.load_dataset(engine, "spy-a25-vix8").frame
    close, high = frame["close"].to_numpy(), frame["high"].to_numpy()
    rates = "  ".join(f"H={h} {positive_rate(threshold_label(close, high, h)):.1%}" for h in (1, 3, 5))
    assert f"positive rate at threshold 1%: {rates}" in out

    # Another process computes the same bytes, hence the same hash: no new version.
    proc = subprocess.run(
        [sys.executable, "-m", "coordinator.cli", *url, "data", "build", "--symbol", "SPY", "--vix", "VIX"],
        capture_output=True, text=True, timeout=120, env={**os.environ},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "unchanged (same sources and content; nothing registered): dataset spy-a25-vix8 v1" in proc.stdout
    assert count_rows(initialised_db, "datasets") == 1

    code, out, err = run_cli(capsys, *url, "data", "list")
    assert code == 0, err
    assert "spy-a25-vix8" in out and "a25-vix8" in out and "SPY v1, VIX v1" in out and "9235" in out

    code, out, err = run_cli(capsys, *url, "data", "build", "--symbol", "QQQ")
    assert code == 2 and err.strip().splitlines() == [
        "error: no series 'QQQ' registered: import it first (coordinator data import QQQ FILE)"
    ]
