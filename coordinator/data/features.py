"""Model inputs computed from raw daily bars, with TA-Lib, in float64.

Tier `a25` is the 5 raw OHLCV columns followed by the 20 indicators of A25_INDICATORS, in that order.
Tier `vix8` adds the 8 VIX columns of VIX8_COLUMNS. The order of these lists is the documented
column order of every dataset; never reorder or rename them (that would be a different feature set,
so bump FEATURES_VERSION and let the registry make a new dataset version).

Every value on day t depends only on bars up to and including day t:
- TA-Lib's indicators are causal (recursive or trailing windows).
- Weekly indicators use completed weeks only: a day in week k sees the weekly value of week k-1 at
  the latest, never the week it belongs to (which is still unfinished on that day).
- VIX is aligned on the main series' calendar by forward-filling at most one day, never backwards.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import talib

FEATURES_VERSION = 1

RAW_COLUMNS = ["open", "high", "low", "close", "volume"]

A25_INDICATORS = [
    "dema_9",
    "dema_10",
    "dema_20",
    "dema_25",
    "dema_90",
    "sma_12",
    "sma_50",
    "sma_100",
    "sma_200",
    "rsi_14",  # daily RSI 14
    "rsi_14_weekly",  # RSI 14 on completed weekly bars
    "stochrsi_k",  # StochRSI(14, fastk 5, fastd 3) fast-K, daily
    "stochrsi_k_weekly",  # the same on completed weekly bars
    "macd",  # MACD(12, 26, 9) line
    "obv",
    "adosc",  # Chaikin A/D oscillator (3, 10)
    "atr_14",
    "adx_14",
    "bb_pctb",  # Bollinger %B (20, 2 sigma)
    "vwap_20",  # 20-day volume-weighted average of Close
]

VIX8_COLUMNS = [
    "vix_close",
    "vix_sma_10",
    "vix_sma_20",
    "vix_pct_60",  # share of the last 60 closes <= today's close
    "vix_z_20",  # (close - SMA 20) / population std 20
    "vix_regime",  # 0: < 15, 1: 15-25, 2: >= 25
    "vix_chg_1",  # relative change over 1 day
    "vix_chg_5",  # relative change over 5 days
]

TIERS = ("a25",)
WEEK = "W-FRI"  # a trading week ends on Friday; its label is that Friday's date


def input_columns(tier: str, with_vix: bool) -> list[str]:
    """The model inputs of a dataset, in the documented order."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}")
    return RAW_COLUMNS + A25_INDICATORS + (VIX8_COLUMNS if with_vix else [])


def a25_features(bars: pd.DataFrame) -> pd.DataFrame:
    """The 20 a25 indicators on the bars' own dates (NaN during each indicator's warm-up)."""
    h, l, c, v = (bars[name].to_numpy(dtype=np.float64) for name in ("high", "low", "close", "volume"))
    upper, _, lower = talib.BBANDS(c, timeperiod=20, nbdevup=2.0, nbdevdn=2.0, matype=0)
    out = {
        "dema_9": talib.DEMA(c, timeperiod=9),
        "dema_10": talib.DEMA(c, timeperiod=10),
        "dema_20": talib.DEMA(c, timeperiod=20),
        "dema_25": talib.DEMA(c, timeperiod=25),
        "dema_90": talib.DEMA(c, timeperiod=90),
        "sma_12": talib.SMA(c, timeperiod=12),
        "sma_50": talib.SMA(c, timeperiod=50),
        "sma_100": talib.SMA(c, timeperiod=100),
        "sma_200": talib.SMA(c, timeperiod=200),
        "rsi_14": talib.RSI(c, timeperiod=14),
        "rsi_14_weekly": weekly_indicator(bars["close"], rsi_14),
        "stochrsi_k": stochrsi_k(c),
        "stochrsi_k_weekly": weekly_indicator(bars["close"], stochrsi_k),
        "macd": talib.MACD(c, fastperiod=12, slowperiod=26, signalperiod=9)[0],
        "obv": talib.OBV(c, v),
        "adosc": talib.ADOSC(h, l, c, v, fastperiod=3, slowperiod=10),
        "atr_14": talib.ATR(h, l, c, timeperiod=14),
        "adx_14": talib.ADX(h, l, c, timeperiod=14),
        "bb_pctb": (c - lower) / (upper - lower),
        "vwap_20": talib.SUM(c * v, timeperiod=20) / talib.SUM(v, timeperiod=20),
    }
    return pd.DataFrame(out, index=bars.index)[A25_INDICATORS]


def rsi_14(close: np.ndarray) -> np.ndarray:
    return talib.RSI(close, timeperiod=14)


def stochrsi_k(close: np.ndarray) -> np.ndarray:
    return talib.STOCHRSI(close, timeperiod=14, fastk_period=5, fastd_period=3, fastd_matype=0)[0]


def weekly_closes(close: pd.Series) -> pd.Series:
    """Last close of every week that has at least one bar, labelled by the week's Friday."""
    return close.resample(WEEK).last().dropna()


def weekly_indicator(close: pd.Series, indicator) -> np.ndarray:
    """`indicator` on weekly closes, seen on each day only once its week is complete.

    Equivalent to "resample to weeks, shift one week, forward-fill to days": day d (in the week
    labelled L) gets the value of the latest week whose label is strictly before L.
    """
    weekly = weekly_closes(close)
    values = indicator(weekly.to_numpy(dtype=np.float64))
    labels = weekly.index.to_numpy(dtype="datetime64[ns]")
    own_week = close.index.to_period(WEEK).end_time.normalize().to_numpy(dtype="datetime64[ns]")
    previous = np.searchsorted(labels, own_week, side="left") - 1
    out = np.full(len(close), np.nan)
    seen = previous >= 0
    out[seen] = values[previous[seen]]
    return out


def vix8_features(vix: pd.DataFrame, calendar: pd.DatetimeIndex) -> pd.DataFrame:
    """The 8 VIX columns, computed on VIX's own dates, then aligned on `calendar`.

    A day of `calendar` that VIX lacks takes the previous row's value (forward fill of at most one
    row on the union of both calendars), never a later one; longer gaps stay NaN.
    """
    c = vix["close"].to_numpy(dtype=np.float64)
    close = vix["close"].astype(np.float64)
    sma_20 = talib.SMA(c, timeperiod=20)
    std_20 = talib.STDDEV(c, timeperiod=20, nbdev=1.0)
    regime = np.where(c < 15.0, 0.0, np.where(c < 25.0, 1.0, 2.0))
    own = pd.DataFrame(
        {
            "vix_close": c,
            "vix_sma_10": talib.SMA(c, timeperiod=10),
            "vix_sma_20": sma_20,
            "vix_pct_60": close.rolling(60).rank(pct=True, method="max").to_numpy(),
            "vix_z_20": (c - sma_20) / std_20,
            "vix_regime": regime,
            "vix_chg_1": close.pct_change(1, fill_method=None).to_numpy(),
            "vix_chg_5": close.pct_change(5, fill_method=None).to_numpy(),
        },
        index=vix.index,
    )[VIX8_COLUMNS]
    union = own.index.union(calendar)
    return own.reindex(union).ffill(limit=1).reindex(calendar)


def compute_features(bars: pd.DataFrame, tier: str = "a25", vix: pd.DataFrame | None = None) -> pd.DataFrame:
    """Raw OHLCV plus every feature of the tier, on all of the bars' dates (warm-up rows included)."""
    if "volume" not in bars.columns:
        raise ValueError("tier a25 needs a volume column")
    frame = bars[RAW_COLUMNS].astype(np.float64)
    parts = [frame, a25_features(frame)]
    if vix is not None:
        parts.append(vix8_features(vix, frame.index))
    out = pd.concat(parts, axis=1)
    return out[input_columns(tier, vix is not None)]
