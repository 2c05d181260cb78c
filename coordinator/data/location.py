"""Where real daily bars come from when nobody imported any: one setting, then a cache, then Yahoo.

`$SCALESWEEP_DATA` names a folder holding SPY.csv (and VIX.csv); default `../shared/data` beside the
repository. Tests that need the real series, the benchmarks and `coordinator local` all read it from
here. When it is absent, `coordinator local` uses `data/` (SPY.csv, VIX.csv fetched earlier, never
committed), else downloads SPY and ^VIX with yfinance into `data/` (validated like an import);
offline, the caller falls back to a synthetic series and says so.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

from coordinator.data import series
from coordinator.errors import UserError, require_extra

ENV_DATA = "SCALESWEEP_DATA"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
CACHE_DIR = Path("data")  # relative to the working directory: the repository's data/ under `make run`
FETCH_TIMEOUT_S = 60.0
YAHOO_SYMBOLS = {"SPY": "SPY", "VIX": "^VIX"}


def real_data_dir() -> Path:
    """The folder of real series: $SCALESWEEP_DATA, default ../shared/data beside the repository."""
    value = os.environ.get(ENV_DATA)
    return Path(value).expanduser().resolve() if value else DEFAULT_DATA


@dataclass(frozen=True)
class RealBars:
    spy: Path
    vix: Path | None
    origin: str  # said to the user: where the files came from


def find_real_bars(allow_fetch: bool = True, say: object = print) -> RealBars | None:
    """SPY (and VIX) files from $SCALESWEEP_DATA, else the data/ cache, else a yfinance download into
    the cache; None when none of these works (offline, yfinance not installed)."""
    shared = real_data_dir()
    if (shared / "SPY.csv").is_file():
        vix = shared / "VIX.csv"
        return RealBars(shared / "SPY.csv", vix if vix.is_file() else None, f"{shared} (${ENV_DATA})")
    cache = CACHE_DIR.absolute()
    if (cache / "SPY.csv").is_file():
        vix = cache / "VIX.csv"
        return RealBars(cache / "SPY.csv", vix if vix.is_file() else None, f"{cache} (fetched earlier)")
    if not allow_fetch:
        return None
    try:
        fetch_into(cache, say)
    except UserError as exc:
        say(f"could not fetch real data: {exc}")  # type: ignore[operator]
        return None
    return RealBars(cache / "SPY.csv", cache / "VIX.csv", f"{cache} (fetched now from Yahoo with yfinance)")


def fetch_into(folder: Path, say: object = print) -> None:
    """Download SPY and ^VIX, validate them like an import, write SPY.csv and VIX.csv (both or neither)."""
    require_extra("yfinance", "fetch", "downloading SPY and ^VIX")
    say(f"no real data in {real_data_dir()}: downloading SPY and ^VIX with yfinance into {folder}")  # type: ignore[operator]
    fetched = {
        name: with_timeout(lambda s=symbol, n=name: series.fetch_bars(s, repair_ohlc=(n == "VIX"), download=series.yfinance_history), symbol)
        for name, symbol in YAHOO_SYMBOLS.items()
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, bars in fetched.items():
        partial = folder / f".{name}.csv.partial"
        bars.frame.rename_axis("date").to_csv(partial)
        partial.replace(folder / f"{name}.csv")


def with_timeout(download: object, symbol: str) -> object:
    """Run a download in a daemon thread: a hung connection must not hang the command (or its exit)."""
    results: queue.Queue = queue.Queue()

    def run() -> None:
        try:
            results.put((True, download()))  # type: ignore[operator]
        except BaseException as exc:  # handed to the caller's thread
            results.put((False, exc))

    threading.Thread(target=run, daemon=True).start()
    try:
        ok, value = results.get(timeout=FETCH_TIMEOUT_S)
    except queue.Empty:
        raise UserError(f"yfinance did not answer for {symbol} within {FETCH_TIMEOUT_S:.0f} s") from None
    if not ok:
        raise value
    return value
