"""Labels: the definition by hand for H = 1, 3, 5, and the horizon's effect on real SPY."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.data.labels import positive_rate, threshold_label
from coordinator.data.series import read_bars
from tests.conftest import SPY_CSV, requires_real_data

NAN = np.nan
CLOSE = np.array([100.0, 101.0, 99.0, 102.0, 100.0, 98.0])
HIGH = np.array([100.5, 100.9, 101.2, 102.5, 101.5, 99.0])


@pytest.mark.parametrize(
    "horizon, expected",
    [
        # t=0: 100.9 < 101.00; t=1: 101.2 < 102.01; t=2: 102.5 >= 99.99; t=3: 101.5 < 103.02; t=4: 99 < 101
        (1, [0, 0, 1, 0, 0, NAN]),
        # t=0: max(100.9, 101.2, 102.5) >= 101; t=1: max(101.2, 102.5, 101.5) >= 102.01; t=2: 102.5 >= 99.99
        (3, [1, 1, 1, NAN, NAN, NAN]),
        # t=0: max(High[1..5]) = 102.5 >= 101
        (5, [1, NAN, NAN, NAN, NAN, NAN]),
        (6, [NAN] * 6),
    ],
)
def test_hand_computed(horizon: int, expected: list[float]) -> None:
    np.testing.assert_array_equal(threshold_label(CLOSE, HIGH, horizon, 0.01), np.array(expected, dtype=float))


def test_threshold_is_applied() -> None:
    # At t=0 with H=5 the best future High is 102.5: above +2%, below +3%.
    assert threshold_label(CLOSE, HIGH, 5, 0.02)[0] == 1
    assert threshold_label(CLOSE, HIGH, 5, 0.03)[0] == 0
    # Reaching the threshold exactly counts as a positive.
    assert threshold_label(np.array([100.0, 100.0]), np.array([100.0, 101.0]), 1, 0.01)[0] == 1


def test_today_high_is_not_part_of_the_future() -> None:
    close = np.array([100.0, 100.0, 100.0])
    high = np.array([150.0, 100.0, 100.0])  # a spike on day t itself
    assert threshold_label(close, high, 2, 0.01)[0] == 0


@requires_real_data
def test_real_spy_rate_rises_with_horizon() -> None:
    frame = read_bars(SPY_CSV).frame
    close, high = frame["close"].to_numpy(), frame["high"].to_numpy()
    rates = {h: positive_rate(threshold_label(close, high, h)) for h in (1, 3, 5)}
    assert rates[1] < rates[3] < rates[5]
    # The expected rates: about 23%, 48% and 60% on SPY 1993-2021.
    assert rates[1] == pytest.approx(0.23, abs=0.02)
    assert rates[3] == pytest.approx(0.48, abs=0.02)
    assert rates[5] == pytest.approx(0.60, abs=0.02)
    for h in (1, 3, 5):
        labels = threshold_label(close, high, h)
        assert np.isnan(labels[-h:]).all() and not np.isnan(labels[:-h]).any()
