"""Features: documented columns, TA-Lib's values, completed weeks only, and no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import talib

from coordinator.data import features
from coordinator.data.series import read_bars
from tests.conftest import SPY_CSV, VIX_CSV, requires_real_data


@pytest.fixture(scope="module")
def spy() -> pd.DataFrame:
    return read_bars(SPY_CSV).frame


@pytest.fixture(scope="module")
def vix() -> pd.DataFrame:
    return read_bars(VIX_CSV, repair_ohlc=True).frame


@requires_real_data
def test_documented_column_order(spy: pd.DataFrame, vix: pd.DataFrame) -> None:
    a25 = features.input_columns("a25", with_vix=False)
    assert len(a25) == 25 and len(features.A25_INDICATORS) == 20 and len(features.VIX8_COLUMNS) == 8
    assert a25[:5] == ["open", "high", "low", "close", "volume"] and a25[5:] == features.A25_INDICATORS
    assert features.input_columns("a25", with_vix=True) == a25 + features.VIX8_COLUMNS
    assert list(features.compute_features(spy).columns) == a25
    assert list(features.compute_features(spy, vix=vix).columns) == a25 + features.VIX8_COLUMNS


@requires_real_data
def test_values_equal_talib(spy: pd.DataFrame) -> None:
    computed = features.compute_features(spy)
    o, h, l, c, v = (spy[n].to_numpy(dtype=np.float64) for n in features.RAW_COLUMNS)
    upper, _, lower = talib.BBANDS(c, 20, 2.0, 2.0, 0)
    expected = {
        **{f"dema_{n}": talib.DEMA(c, n) for n in (9, 10, 20, 25, 90)},
        **{f"sma_{n}": talib.SMA(c, n) for n in (12, 50, 100, 200)},
        "rsi_14": talib.RSI(c, 14),
        "stochrsi_k": talib.STOCHRSI(c, 14, 5, 3, 0)[0],
        "macd": talib.MACD(c, 12, 26, 9)[0],
        "obv": talib.OBV(c, v),
        "adosc": talib.ADOSC(h, l, c, v, 3, 10),
        "atr_14": talib.ATR(h, l, c, 14),
        "adx_14": talib.ADX(h, l, c, 14),
        "bb_pctb": (c - lower) / (upper - lower),
    }
    for name, values in expected.items():
        np.testing.assert_array_equal(computed[name].to_numpy(), values, err_msg=name)
    # The two hand-defined ones, from their definitions at a few days.
    for t in (250, 3000, len(c) - 1):
        window = slice(t - 19, t + 1)
        vwap = (c[window] * v[window]).sum() / v[window].sum()
        assert computed["vwap_20"].iloc[t] == pytest.approx(vwap, rel=1e-12)
        mean, std = c[window].mean(), c[window].std(ddof=0)
        pctb = (c[t] - (mean - 2 * std)) / (4 * std)
        assert computed["bb_pctb"].iloc[t] == pytest.approx(pctb, rel=1e-8)
    for name in features.RAW_COLUMNS:
        np.testing.assert_array_equal(computed[name].to_numpy(), spy[name].to_numpy())


@requires_real_data
def test_weekly_features_use_the_previous_completed_week(spy: pd.DataFrame) -> None:
    """An independent route: resample to weeks, shift one week, forward-fill to days."""
    computed = features.compute_features(spy)
    weekly_close = spy["close"].resample("W-FRI").last().dropna()
    weekly = pd.DataFrame(
        {
            "rsi_14_weekly": talib.RSI(weekly_close.to_numpy(), 14),
            "stochrsi_k_weekly": talib.STOCHRSI(weekly_close.to_numpy(), 14, 5, 3, 0)[0],
        },
        index=weekly_close.index,
    ).shift(1)
    day_week = spy.index.to_period("W-FRI").end_time.normalize()
    for name in ("rsi_14_weekly", "stochrsi_k_weekly"):
        expected = weekly[name].reindex(day_week).to_numpy()
        np.testing.assert_array_equal(computed[name].to_numpy(), expected, err_msg=name)
    # Within a week the weekly value is constant: nothing of the unfinished week leaks in.
    by_week = computed["rsi_14_weekly"].dropna().groupby(day_week[computed["rsi_14_weekly"].notna()])
    assert (by_week.nunique() == 1).all()


def altered_after(frame: pd.DataFrame, t: pd.Timestamp, seed: int) -> pd.DataFrame:
    """The same bars up to t; every later bar scaled by a different random factor."""
    later = frame.index > t
    factors = np.random.default_rng(seed).uniform(0.7, 1.3, size=(int(later.sum()), 1))
    altered = frame.copy()
    altered.loc[later, :] = frame.loc[later, :].to_numpy() * factors
    return altered


@requires_real_data
def test_no_look_ahead(spy: pd.DataFrame, vix: pd.DataFrame) -> None:
    """Altering any bars after day t leaves every feature up to t unchanged (weekly and VIX included)."""
    full = features.compute_features(spy, vix=vix)
    dates = spy.index
    days = [dates[300], dates[2001], dates[4500], dates[6000], dates[-40]]
    days += [d for d in dates[5000:5010] if d.day_of_week in (1, 2, 3)][:3]  # mid-week: Tuesday..Thursday
    days += [d for d in dates[5500:5510] if d.day_of_week == 4][:1]  # a Friday: its week just completed
    assert len(days) >= 8
    for i, t in enumerate(days):
        altered = features.compute_features(altered_after(spy, t, i), vix=altered_after(vix, t, 100 + i))
        before, after = full.loc[:t], altered.loc[:t]
        np.testing.assert_array_equal(after.to_numpy(), before.to_numpy(), err_msg=str(t.date()))
        # The alteration is real: later values do change, so the equality above is meaningful.
        changed = ~np.isclose(altered.loc[t:].iloc[1:].to_numpy(), full.loc[t:].iloc[1:].to_numpy(), equal_nan=True)
        assert changed.any(axis=0).sum() >= 30, str(t.date())


@requires_real_data
def test_current_week_does_not_reach_weekly_features(spy: pd.DataFrame) -> None:
    """Changing the earlier days of t's own week (all <= t) leaves t's weekly values unchanged."""
    full = features.compute_features(spy)
    thursdays = [d for d in spy.index[6000:6020] if d.day_of_week == 3]
    t = thursdays[0]
    week_start = t - pd.Timedelta(days=3)
    altered = spy.copy()
    same_week = (spy.index >= week_start) & (spy.index <= t)
    altered.loc[same_week, :] = spy.loc[same_week, :].to_numpy() * 1.2
    recomputed = features.compute_features(altered)
    for name in ("rsi_14_weekly", "stochrsi_k_weekly"):
        assert recomputed.loc[t, name] == full.loc[t, name]
    assert recomputed.loc[t, "rsi_14"] != full.loc[t, "rsi_14"]  # the daily one sees today's bar


def test_vix_aligned_forward_at_most_one_day() -> None:
    calendar = pd.DatetimeIndex(pd.bdate_range("2020-01-01", periods=120), name="date").as_unit("ns")
    vix_dates = calendar.delete([100, 110, 111])  # one missing day, then two in a row
    vix_dates = vix_dates.append(pd.DatetimeIndex(["2020-05-09"]).as_unit("ns")).sort_values()  # a Saturday
    close = pd.Series(np.arange(len(vix_dates), dtype=np.float64) + 10.0, index=vix_dates)
    vix = pd.DataFrame({"open": close, "high": close, "low": close, "close": close})
    out = features.vix8_features(vix, calendar)["vix_close"]
    assert out.index.equals(calendar)
    assert out.iloc[100] == close[calendar[99]]  # filled from the day before
    assert out.iloc[110] == close[close.index[close.index < calendar[110]][-1]]  # one day stale at most
    assert np.isnan(out.iloc[111])  # a second missing day is never filled
    assert out.iloc[112] == close[calendar[112]]
    saturday = pd.Timestamp("2020-05-09")
    monday = calendar[calendar > saturday][0]
    assert out[monday] == close[monday]  # the extra VIX day is not moved onto SPY's calendar
    assert not (out.loc[: saturday - pd.Timedelta(days=1)] == close[saturday]).any()  # never backwards


@requires_real_data
def test_vix8_values(vix: pd.DataFrame) -> None:
    own = features.vix8_features(vix, vix.index)
    c = vix["close"].to_numpy()
    t = 5000
    window = c[t - 59 : t + 1]
    assert own["vix_pct_60"].iloc[t] == pytest.approx((window <= c[t]).mean())
    assert own["vix_z_20"].iloc[t] == pytest.approx((c[t] - c[t - 19 : t + 1].mean()) / c[t - 19 : t + 1].std())
    assert own["vix_chg_5"].iloc[t] == pytest.approx(c[t] / c[t - 5] - 1)
    regime = own["vix_regime"].to_numpy()
    assert set(np.unique(regime)) == {0.0, 1.0, 2.0}
    assert ((regime == 2) == (c >= 25)).all() and ((regime == 0) == (c < 15)).all()
