"""A seeded synthetic daily market, for tests and demos without real data.

Log returns follow a GARCH(1, 1) process with Student-t shocks, so volatility clusters (calm and
turbulent stretches, fat tails) like real equity returns; the same seed gives the same bars.
Open gaps, intraday ranges and volume scale with the day's volatility, and every bar satisfies
Low <= min(Open, Close) <= max(Open, Close) <= High.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from coordinator.data.series import Bars, validate_bars

# Daily GARCH(1, 1): sigma2[t] = OMEGA + ALPHA * r[t-1]^2 + BETA * sigma2[t-1]; 1% long-run daily vol.
ALPHA = 0.08
BETA = 0.90
LONG_RUN_VOL = 0.01
OMEGA = LONG_RUN_VOL**2 * (1 - ALPHA - BETA)
DRIFT = 0.0003  # ~7.5% a year
T_DOF = 5  # Student-t degrees of freedom of the shocks (fat tails)


def synthetic_bars(days: int, seed: int, start: str = "2000-01-03", first_close: float = 100.0) -> pd.DataFrame:
    """`days` business days of OHLCV bars in the canonical form of series.validate_bars."""
    if days < 2:
        raise ValueError("days must be >= 2")
    rng = np.random.default_rng(seed)
    shocks = rng.standard_t(T_DOF, size=days) / np.sqrt(T_DOF / (T_DOF - 2))  # unit variance
    sigma = np.empty(days)
    returns = np.empty(days)
    variance = LONG_RUN_VOL**2
    previous = 0.0
    for t in range(days):
        variance = OMEGA + ALPHA * previous**2 + BETA * variance
        sigma[t] = np.sqrt(variance)
        returns[t] = DRIFT + sigma[t] * shocks[t]
        previous = returns[t] - DRIFT
    close = first_close * np.exp(np.cumsum(returns))
    previous_close = np.concatenate([[first_close], close[:-1]])
    # Part of each day's move happens overnight (the gap), the rest during the session.
    open_ = previous_close * np.exp(0.3 * sigma * rng.standard_normal(days))
    high = np.maximum(open_, close) * np.exp(np.abs(0.5 * sigma * rng.standard_normal(days)))
    low = np.minimum(open_, close) * np.exp(-np.abs(0.5 * sigma * rng.standard_normal(days)))
    volume = np.round(1e6 * (sigma / LONG_RUN_VOL) * np.exp(0.3 * rng.standard_normal(days)))
    index = pd.bdate_range(start, periods=days, name="date").as_unit("ns")
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=index)


def synthetic_series(days: int, seed: int) -> Bars:
    """The synthetic bars after the same validation as an imported file (ready to register).

    About 2,500 days or more give default splits that pass the sample gates at context 60.
    """
    return validate_bars(synthetic_bars(days, seed).rename_axis("date").reset_index())
