"""Raw series: the real files with their quirks, every kind of bad input, fetch and synth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from coordinator.data import series
from coordinator.data.synth import synthetic_bars, synthetic_series
from coordinator.errors import UserError
from tests.conftest import SPY_CSV, VIX_CSV, requires_real_data
from tests.data_helpers import count_rows, run_cli


@requires_real_data
def test_real_spy_imports_once(initialised_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "--database-url", initialised_db, "data", "import", "SPY", str(SPY_CSV))
    assert code == 0, err
    assert "registered SPY v1: 7192 rows, 1993-01-29 .. 2021-08-19, with volume" in out
    # The same content again: no new version, and the user is told so.
    code, out, err = run_cli(capsys, "--database-url", initialised_db, "data", "import", "spy", str(SPY_CSV))
    assert code == 0, err
    assert out.startswith("unchanged: SPY v1") and "nothing registered" in out
    assert count_rows(initialised_db, "series") == 1


@requires_real_data
def test_real_spy_is_canonical() -> None:
    bars = series.read_bars(SPY_CSV)
    frame = bars.frame
    assert list(frame.columns) == ["open", "high", "low", "close", "volume"]  # dividends, stock splits ignored
    assert frame.index.name == "date" and frame.index.is_monotonic_increasing and frame.index.is_unique
    assert all(dtype == np.float64 for dtype in frame.dtypes)
    raw = pd.read_csv(SPY_CSV)
    assert len(frame) == len(raw)  # nothing dropped
    assert np.array_equal(frame["close"].to_numpy(), raw["close"].to_numpy())  # nothing changed
    assert bars.repaired_rows == 0


@requires_real_data
def test_vix_inconsistent_ohlc_needs_repair(initialised_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "--database-url", initialised_db, "data", "import", "VIX", str(VIX_CSV))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "47 rows have inconsistent OHLC" in lines[0] and "--repair-ohlc" in lines[0]
    assert count_rows(initialised_db, "series") == 0

    args = ["--database-url", initialised_db, "data", "import", "VIX", str(VIX_CSV), "--repair-ohlc"]
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "registered VIX v1: 9235 rows, 1990-01-02 .. 2026-07-23, no volume, 47 repaired rows" in out


@requires_real_data
def test_repair_widens_only_the_bad_rows() -> None:
    raw = pd.read_csv(VIX_CSV)
    bars = series.read_bars(VIX_CSV, repair_ohlc=True)
    frame = bars.frame
    o, h, l, c = (raw[n].to_numpy() for n in ("OPEN", "HIGH", "LOW", "CLOSE"))
    bad = (h < np.maximum(o, c)) | (l > np.minimum(o, c))
    assert bars.repaired_rows == int(bad.sum()) == 47
    assert np.array_equal(frame["high"].to_numpy()[~bad], h[~bad])
    assert np.array_equal(frame["high"].to_numpy()[bad], np.maximum(h, np.maximum(o, c))[bad])
    assert np.array_equal(frame["low"].to_numpy()[bad], np.minimum(l, np.minimum(o, c))[bad])
    assert (frame["high"] >= frame[["open", "close"]].max(axis=1)).all()
    assert (frame["low"] <= frame[["open", "close"]].min(axis=1)).all()
    assert np.array_equal(frame["close"].to_numpy(), c)  # Open and Close are never touched


def spy_head(rows: int = 300) -> pd.DataFrame:
    return pd.read_csv(SPY_CSV).head(rows)


@requires_real_data
def test_other_layouts_give_the_same_content(tmp_path) -> None:
    head = spy_head()
    reference = series.content_sha256(series.validate_bars(head).frame)
    # Yahoo download: capitalised headers, Adj Close, Volume last.
    yahoo = head.rename(columns={"date": "Date", "open": "Open", "high": "High", "low": "Low", "close": "Close"})
    yahoo = yahoo.assign(**{"Adj Close": yahoo["Close"] * 0.9}).rename(columns={"volume": "Volume"})
    yahoo = yahoo[["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"]]
    yahoo.to_csv(tmp_path / "yahoo.csv", index=False)
    # pandas: parquet with the dates in a DatetimeIndex.
    indexed = head.assign(date=pd.to_datetime(head["date"])).set_index("date")
    indexed.to_parquet(tmp_path / "pandas.parquet")
    for name in ("yahoo.csv", "pandas.parquet"):
        assert series.content_sha256(series.read_bars(tmp_path / name).frame) == reference, name


def write_bad(tmp_path, case: str):
    """A file with exactly one problem; returns its path."""
    head = spy_head(50)
    path = tmp_path / f"{case}.csv"
    if case == "missing column":
        head.drop(columns="low").to_csv(path, index=False)
    elif case == "duplicate date":
        head.assign(date=head["date"].where(head.index != 10, head["date"][9])).to_csv(path, index=False)
    elif case == "unsorted dates":
        head.iloc[[0, 1, 3, 2, *range(4, 50)]].to_csv(path, index=False)
    elif case == "NaN":
        head.assign(close=head["close"].where(head.index != 20, np.nan)).to_csv(path, index=False)
    elif case == "non-positive price":
        head.assign(open=head["open"].where(head.index != 5, -1.0)).to_csv(path, index=False)
    elif case == "unparsable date":
        head.assign(date=head["date"].where(head.index != 7, "yesterday")).to_csv(path, index=False)
    elif case == "empty file":
        path.write_bytes(b"")
    elif case == "header only":
        head.head(0).to_csv(path, index=False)
    elif case == "unreadable":
        path = tmp_path / "garbage.parquet"
        path.write_bytes(b"\x00\x01 this is not parquet \xff" * 10)
    elif case == "unknown format":
        path = tmp_path / "bars.xlsx"
        path.write_bytes(b"PK\x03\x04")
    elif case == "no such file":
        path = tmp_path / "absent.csv"
    return path


BAD_INPUTS = {
    "missing column": "missing column low",
    "duplicate date": "duplicate date 1993-02-11",
    "unsorted dates": "dates not ascending: 1993-02-02 on row 4 comes after 1993-02-03",
    "NaN": "missing or non-finite close",
    "non-positive price": "non-positive open -1.0 on 1993-02-05",
    "unparsable date": "unparsable date 'yesterday' on row 8",
    "empty file": "empty file",
    "header only": "no rows",
    "unreadable": "unreadable file",
    "unknown format": "unknown format '.xlsx'",
    "no such file": "no such file",
}


@requires_real_data
def test_bad_input_is_one_line_and_registers_nothing(
    tmp_path, initialised_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # One database for all cases (a database per case costs a second each and shows nothing more).
    for case, words in BAD_INPUTS.items():
        path = write_bad(tmp_path, case)
        code, out, err = run_cli(capsys, "--database-url", initialised_db, "data", "import", "SPY", str(path))
        assert code == 2, case
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (case, err)
        assert words in lines[0], (case, lines[0])
        assert count_rows(initialised_db, "series") == 0, case


def yahoo_like(frame: pd.DataFrame) -> pd.DataFrame:
    """What yfinance's Ticker.history returns: tz-aware dates in the index, capitalised columns."""
    out = frame.rename(columns=str.capitalize).assign(Dividends=0.0, **{"Stock Splits": 0.0})
    out.index = out.index.tz_localize("America/New_York").rename("Date")
    return out


def test_fetch_says_so_when_yfinance_returns_nothing() -> None:
    with pytest.raises(UserError, match="yfinance returned no data for SPY"):
        series.fetch_bars("SPY", download=lambda symbol: pd.DataFrame())

    def offline(symbol: str) -> pd.DataFrame:
        raise ConnectionError("Could not resolve host: query2.finance.yahoo.com")

    with pytest.raises(UserError, match="yfinance could not download SPY: Could not resolve host"):
        series.fetch_bars("SPY", download=offline)


def test_fetch_accepts_yfinance_layout() -> None:
    bars = synthetic_bars(400, seed=3)
    fetched = series.fetch_bars("SYN", download=lambda symbol: yahoo_like(bars))
    assert fetched.frame.index.equals(bars.index)
    assert series.content_sha256(fetched.frame) == series.content_sha256(bars)


def test_synthetic_market_is_seeded_and_realistic() -> None:
    a, b, c = synthetic_bars(3000, seed=7), synthetic_bars(3000, seed=7), synthetic_bars(3000, seed=8)
    assert series.content_sha256(a) == series.content_sha256(b) != series.content_sha256(c)
    validated = synthetic_series(3000, seed=7)  # passes every import check
    assert validated.repaired_rows == 0 and validated.has_volume
    returns = np.diff(np.log(a["close"].to_numpy()))

    def autocorrelation(x: np.ndarray) -> float:
        return float(np.corrcoef(x[:-1], x[1:])[0, 1])

    # Volatility clusters (squared returns are autocorrelated) while returns themselves are not.
    assert autocorrelation(returns**2) > 0.1
    assert abs(autocorrelation(returns)) < 0.1
    # Fat tails: excess kurtosis well above a normal's 0.
    standardised = (returns - returns.mean()) / returns.std()
    assert float((standardised**4).mean()) - 3 > 1.0


def test_synth_command_registers_a_series(initialised_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--database-url", initialised_db, "data", "synth", "SYN", "--days", "500", "--seed", "1"]
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "registered SYN v1: 500 rows" in out
    code, out, err = run_cli(capsys, *args)
    assert out.startswith("unchanged: SYN v1")
    assert count_rows(initialised_db, "series") == 1
