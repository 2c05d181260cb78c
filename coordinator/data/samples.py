"""What a trial trains and evaluates on: every day's features, the labels for one horizon, and the
positions t of the samples of each split.

Sample t is the window features[t-context+1 : t+1] with label labels[t]. It belongs to a split only
if its window starts inside the split and its horizon ends inside it (t + H <= the split's last
day), so no sample sees or predicts across a split boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coordinator.data.labels import THRESHOLD, threshold_label
from coordinator.data.registry import Dataset
from coordinator.data.splits import SPLIT_NAMES, Splits
from coordinator.errors import UserError

MIN_VAL_SAMPLES = 200
CONTEXT = 60  # days of history per sample (the model's input window)


@dataclass(frozen=True)
class Samples:
    features: np.ndarray  # (T, F) float32, every day of the dataset
    labels: np.ndarray  # (T,) float32, NaN where the horizon runs past the data
    index: dict[str, np.ndarray]  # split -> int64 positions t
    context: int
    horizon: int
    input_columns: list[str]
    dates: np.ndarray  # (T,) datetime64[ns]

    def positive_rate(self, split: str) -> float:
        return float(self.labels[self.index[split]].mean())


def split_positions(dates: np.ndarray, start: str, end: str, context: int, horizon: int) -> np.ndarray:
    """Positions t whose window and horizon both lie within [start, end]."""
    first = int(np.searchsorted(dates, np.datetime64(start, "ns"), side="left"))
    last = int(np.searchsorted(dates, np.datetime64(end, "ns"), side="right")) - 1
    return np.arange(first + context - 1, last - horizon + 1, dtype=np.int64)


def make_samples(
    dataset: Dataset, horizon: int, splits: Splits, context: int = CONTEXT, threshold: float = THRESHOLD
) -> Samples:
    """Features, labels for `horizon` and the samples of each split; refuses unusable splits."""
    if horizon < 1 or context < 1:
        raise UserError(f"horizon and context must be >= 1 (got horizon={horizon}, context={context})")
    frame = dataset.frame
    dates = frame.index.to_numpy(dtype="datetime64[ns]")
    labels = threshold_label(frame["close"].to_numpy(), frame["high"].to_numpy(), horizon, threshold)
    features = frame[dataset.input_columns].to_numpy(dtype=np.float64).astype(np.float32)
    index = {
        name: split_positions(dates, start, end, context, horizon) for name, (start, end) in splits.ranges().items()
    }
    check_gates(index, labels, horizon)
    return Samples(
        features=features,
        labels=labels.astype(np.float32),
        index=index,
        context=context,
        horizon=horizon,
        input_columns=list(dataset.input_columns),
        dates=dates,
    )


def check_gates(index: dict[str, np.ndarray], labels: np.ndarray, horizon: int) -> None:
    """The split gates: at least MIN_VAL_SAMPLES validation samples, and both classes in every split."""
    n_val = len(index["val"])
    if n_val < MIN_VAL_SAMPLES:
        raise UserError(
            f"validation split has {n_val} samples at horizon {horizon}, fewer than {MIN_VAL_SAMPLES}: widen it"
        )
    for name in SPLIT_NAMES:
        values = labels[index[name]]
        if len(values) == 0:
            raise UserError(f"{name} split has no samples at horizon {horizon}: widen it")
        positives = int(values.sum())
        if positives == 0 or positives == len(values):
            only = "positive" if positives else "negative"
            raise UserError(
                f"{name} split is one-class at horizon {horizon}: all {len(values)} labels are {only}"
            )
