"""Raw daily bars: read a CSV or parquet file (or a yfinance download) and validate it.

The result of `read_bars` / `validate_bars` is a canonical frame: a DatetimeIndex named `date`
(daily, unique, ascending, datetime64[ns]) and float64 columns `open, high, low, close[, volume]`.
Nothing is dropped or reordered silently: any problem is a UserError naming it, and the only
change ever made to the values is the optional OHLC repair, which is counted.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from coordinator.errors import UserError

PRICE_COLUMNS = ["open", "high", "low", "close"]

# Header spellings we accept (after lower-casing and collapsing spaces/underscores); the rest is ignored.
# 'Adj Close' is deliberately not an alias of close: adjusted files already carry adjusted prices in Close.
HEADER_ALIASES = {
    "date": "date",
    "datetime": "date",
    "timestamp": "date",
    "time": "date",
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "close/last": "close",
    "volume": "volume",
    "vol": "volume",
}

OHLC_REL_TOL = 1e-9

CSV_SUFFIXES = (".csv", ".csv.gz", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class Bars:
    """Validated bars and what validation had to say about them."""

    frame: pd.DataFrame
    repaired_rows: int = 0
    notes: tuple[str, ...] = ()

    @property
    def has_volume(self) -> bool:
        return "volume" in self.frame.columns


def read_bars(path: str | Path, *, repair_ohlc: bool = False) -> Bars:
    """Read and validate a CSV or parquet file of daily bars; UserError names any problem."""
    path = Path(path)
    raw = read_table(path)
    try:
        return validate_bars(raw, repair_ohlc=repair_ohlc)
    except UserError as exc:
        raise UserError(f"{path.name}: {exc}") from None


def read_table(path: Path) -> pd.DataFrame:
    """The file as a DataFrame, whatever its layout; UserError if it cannot be read."""
    name = path.name.lower()
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a .csv or .parquet file")
    if not path.is_file():  # a FIFO would block the read forever, a device never ends
        raise UserError(f"{path}: not a regular file (a pipe, socket or device), expected a .csv or .parquet file")
    if name.endswith(CSV_SUFFIXES):
        check_line_lengths(path)
    try:
        if name.endswith(CSV_SUFFIXES):
            return pd.read_csv(path)
        if name.endswith(PARQUET_SUFFIXES):
            frame = pd.read_parquet(path)
            if isinstance(frame.index, pd.DatetimeIndex):  # pandas-style: dates in the index
                frame = frame.rename_axis(frame.index.name or "date").reset_index()
            return frame
    except pd.errors.EmptyDataError:
        raise UserError(f"{path.name}: empty file, no header and no rows") from None
    except Exception as exc:  # OSError, UnicodeDecodeError, ParserError, pyarrow's own types...
        raise UserError(f"{path.name}: unreadable file ({one_line(exc)})") from None
    suffix = "".join(path.suffixes) or "(none)"
    raise UserError(f"{path.name}: unknown format {suffix!r}, expected .csv or .parquet")


MAX_CSV_LINE = 10_000  # a daily bar is a date and a few numbers: ~100 characters


def check_line_lengths(path: Path) -> None:
    """Refuse a CSV with an absurdly long line before pandas spends minutes on a 2-million-digit number."""
    with path.open("rb") as handle:
        for number, line in enumerate(iter(lambda: handle.readline(MAX_CSV_LINE + 1), b""), start=1):
            if len(line) > MAX_CSV_LINE:
                raise UserError(f"{path.name}: line {number} is longer than {MAX_CSV_LINE:,} characters: not a file of daily bars")


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def canonical_header(name: object) -> str:
    text = str(name[0] if isinstance(name, tuple) else name)  # yfinance may give (field, ticker) tuples
    return re.sub(r"[\s_]+", " ", text.strip().lower())


def validate_bars(raw: pd.DataFrame, *, repair_ohlc: bool = False) -> Bars:
    """Check a table of bars and return it in canonical form."""
    columns = pick_columns(raw)
    if len(raw) == 0:
        raise UserError("no rows (only a header)")
    dates = parse_dates(raw[columns["date"]])
    check_dates(dates)
    names = PRICE_COLUMNS + (["volume"] if "volume" in columns else [])
    frame = pd.DataFrame({n: parse_numbers(raw[columns[n]], n, dates) for n in names})
    frame.index = pd.DatetimeIndex(dates, name="date")
    notes = []
    if "volume" in frame.columns and bool((frame["volume"] == 0).all()):
        frame = frame.drop(columns="volume")  # Yahoo reports Volume 0 for indices such as ^VIX
        notes.append("volume is 0 on every row: treated as absent")
    check_values(frame)
    frame, repaired = check_ohlc(frame, repair_ohlc)
    if repaired:
        notes.append(f"repaired OHLC on {repaired} rows (High/Low widened to the Open/Close envelope)")
    return Bars(frame=frame, repaired_rows=repaired, notes=tuple(notes))


def pick_columns(raw: pd.DataFrame) -> dict[str, object]:
    """Map canonical names (date, open, ...) to the raw headers; extra columns are ignored."""
    found: dict[str, object] = {}
    for header in raw.columns:
        canonical = HEADER_ALIASES.get(canonical_header(header))
        if canonical is None:
            continue
        if canonical in found:
            raise UserError(f"ambiguous columns {found[canonical]!r} and {header!r} both mean {canonical!r}")
        found[canonical] = header
    missing = [n for n in ["date", *PRICE_COLUMNS] if n not in found]
    if missing:
        have = ", ".join(str(c) for c in raw.columns)
        raise UserError(f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} (found: {have})")
    return found


def parse_dates(values: pd.Series) -> pd.DatetimeIndex:
    parsed = pd.to_datetime(values, errors="coerce", format="mixed")
    bad = parsed.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise UserError(f"unparsable date {values.iloc[row]!r} on row {row + 1} ({plural(int(bad.sum()), 'row')})")
    index = pd.DatetimeIndex(parsed)
    if index.tz is not None:  # e.g. yfinance: midnight in the exchange's time zone; keep the local date
        index = index.tz_localize(None)
    return index.normalize().as_unit("ns")


def check_dates(dates: pd.DatetimeIndex) -> None:
    duplicated = dates.duplicated()
    if duplicated.any():
        first = dates[duplicated][0]
        raise UserError(f"duplicate date {first.date()} ({plural(int(duplicated.sum()), 'duplicate row')})")
    steps = np.diff(dates.asi8)
    if (steps < 0).any():
        row = int(np.flatnonzero(steps < 0)[0]) + 1
        raise UserError(f"dates not ascending: {dates[row].date()} on row {row + 1} comes after {dates[row - 1].date()}")


def parse_numbers(values: pd.Series, name: str, dates: pd.DatetimeIndex) -> np.ndarray:
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(numbers)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        shown = values.iloc[row]
        shown = repr(shown) if isinstance(shown, str) else str(shown)
        raise UserError(f"missing or non-finite {name} {shown} on {dates[row].date()} ({plural(int(bad.sum()), 'row')})")
    return numbers


def check_values(frame: pd.DataFrame) -> None:
    for name in PRICE_COLUMNS:
        bad = frame[name].to_numpy() <= 0
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise UserError(
                f"non-positive {name} {frame[name].iloc[row]} on {frame.index[row].date()} ({plural(int(bad.sum()), 'row')})"
            )
    if "volume" in frame.columns and bool((frame["volume"] < 0).any()):
        row = int(np.flatnonzero(frame["volume"].to_numpy() < 0)[0])
        raise UserError(f"negative volume on {frame.index[row].date()}")


def check_ohlc(frame: pd.DataFrame, repair: bool) -> tuple[pd.DataFrame, int]:
    """High must be >= max(Open, Close) and Low <= min(Open, Close) (hence High >= Low).

    Adjusted prices carry rounding noise (SPY.csv has 15 rows where High is Close minus 1e-16
    relative), so a row counts as inconsistent only beyond OHLC_REL_TOL; such noise is left as is.
    """
    o, h, l, c = (frame[n].to_numpy() for n in PRICE_COLUMNS)
    top = np.maximum(o, c)
    bottom = np.minimum(o, c)
    bad = (h < top * (1 - OHLC_REL_TOL)) | (l > bottom * (1 + OHLC_REL_TOL))
    count = int(bad.sum())
    if count == 0:
        return frame, 0
    if not repair:
        first = frame.index[np.flatnonzero(bad)[0]].date()
        raise UserError(
            f"{count} rows have inconsistent OHLC (High < max(Open, Close) or Low > min(Open, Close)), "
            f"first on {first}; re-run with --repair-ohlc to widen High/Low to the envelope"
        )
    repaired = frame.copy()
    repaired["high"] = np.where(bad, np.maximum(h, top), h)
    repaired["low"] = np.where(bad, np.minimum(l, bottom), l)
    return repaired, count


def content_sha256(frame: pd.DataFrame) -> str:
    """sha256 of a canonical byte form of a dated float frame, stable across runs and libraries.

    Column names, ISO dates and little-endian float64 values column by column: unlike parquet
    bytes, this does not depend on the writer's version or metadata.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps([str(c) for c in frame.columns]).encode())
    digest.update("\n".join(frame.index.strftime("%Y-%m-%d")).encode())
    values = np.ascontiguousarray(frame.to_numpy(dtype="<f8").T)
    digest.update(values.tobytes())
    return digest.hexdigest()


def to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, engine="pyarrow", compression="zstd", index=True)
    return buffer.getvalue()


def from_parquet_bytes(content: bytes) -> pd.DataFrame:
    frame = pd.read_parquet(io.BytesIO(content), engine="pyarrow")
    frame.index = pd.DatetimeIndex(frame.index, name="date").as_unit("ns")
    frame.columns = [str(c) for c in frame.columns]
    return frame


def yfinance_history(symbol: str) -> pd.DataFrame:
    """The full daily history from Yahoo (prices adjusted for splits and dividends)."""
    import yfinance

    # yfinance logs each failed request on stderr; the caller turns the outcome into one line.
    logger = logging.getLogger("yfinance")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        return yfinance.Ticker(symbol).history(period="max", interval="1d", auto_adjust=True)
    finally:
        logger.setLevel(level)


def fetch_bars(
    symbol: str, *, repair_ohlc: bool = False, download: Callable[[str], pd.DataFrame] = yfinance_history
) -> Bars:
    """Download and validate; UserError when the download fails or comes back empty.

    yfinance returns an empty frame without raising when offline or for an unknown symbol.
    """
    try:
        raw = download(symbol)
    except Exception as exc:
        detail = one_line(exc).split(" See https://")[0]
        raise UserError(f"yfinance could not download {symbol}: {detail}") from None
    if raw is None or len(raw) == 0:
        raise UserError(f"yfinance returned no data for {symbol} (offline, or an unknown symbol)")
    if isinstance(raw.index, pd.DatetimeIndex):
        raw = raw.rename_axis("date").reset_index()
    try:
        return validate_bars(raw, repair_ohlc=repair_ohlc)
    except UserError as exc:
        raise UserError(f"yfinance {symbol}: {exc}") from None
