"""The `threshold` label, always computed from raw, un-normalised prices.

y[t] = 1 if max(High[t+1 .. t+H]) >= Close[t] * (1 + threshold), else 0; NaN for the last H days,
whose horizon runs past the data. `horizon` is the study's H: it is the only place H meets the data.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

THRESHOLD = 0.01  # the study label's rise: 1% (`threshold_1pct`)


def threshold_label(close: np.ndarray, high: np.ndarray, horizon: int, threshold: float = THRESHOLD) -> np.ndarray:
    """float64 labels in {0, 1}, NaN where t + horizon is past the end."""
    close = np.asarray(close, dtype=np.float64)
    high = np.asarray(high, dtype=np.float64)
    if close.shape != high.shape or close.ndim != 1:
        raise ValueError("close and high must be 1-D arrays of the same length")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    labels = np.full(len(close), np.nan)
    n = len(close) - horizon
    if n <= 0:
        return labels
    # Row t of the window view over high[1:] is High[t+1 .. t+horizon].
    future_high = sliding_window_view(high[1:], horizon).max(axis=1)[:n]
    labels[:n] = (future_high >= close[:n] * (1.0 + threshold)).astype(np.float64)
    return labels


def positive_rate(labels: np.ndarray) -> float:
    """Share of positives among the defined labels."""
    defined = labels[~np.isnan(labels)]
    return float(defined.mean()) if len(defined) else float("nan")
