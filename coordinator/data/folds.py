"""Walk-forward test folds: where each evaluation run trains, early-stops and is scored.

The study's test split (everything after the search's validation split) is cut into F consecutive
folds of near-equal length. For fold f (rolling origin, expanding window):

- test: every day of the fold whose label is known; a test window looks back `context - 1` days
  into the period before the fold (features are the past, known on the day of the prediction), and
  a label may run into the next fold (it is only scored, never learnt from). So the folds' test days
  are disjoint and together cover the whole test split: each test day is predicted exactly once per
  model, by the model of its fold;
- early stopping: the `early_stopping_days` days just before the fold (by default as many as the
  search's validation split, so fold 1 early-stops on exactly the search's validation period);
- train: every day from the start of the study's train split to the day before early stopping.

Training and early-stopping samples are contained in their period (window and horizon, as the
search's splits are), so between them lie H + context - 1 purged days, and the last early-stopping
label ends the day before the fold: no label window of a training or early-stopping sample touches
its fold, and no early-stopping window reaches into training days. A fold's model never sees a day
of its fold or after it.

Pure computation on dates and positions (no database), in the data layer beside the splits because
the worker builds a fold's samples from it; `coordinator.evaluation.plan` freezes the folds of a
study once, with its protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from coordinator.data.samples import Samples, check_gates, split_positions
from coordinator.data.splits import Splits
from coordinator.errors import UserError


@dataclass(frozen=True)
class Fold:
    number: int  # 1 = the earliest
    train: tuple[str, str]  # first and last day (ISO) of the training period
    early_stopping: tuple[str, str]
    test: tuple[str, str]
    purge_days: int  # days between the last training label and the first early-stopping window: H + context - 1
    embargo_days: int  # days between the last early-stopping sample and the fold: H (its label window)

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "train": list(self.train), "early_stopping": list(self.early_stopping),
                "test": list(self.test), "purge_days": self.purge_days, "embargo_days": self.embargo_days}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fold:
        return cls(int(d["number"]), (str(d["train"][0]), str(d["train"][1])),
                   (str(d["early_stopping"][0]), str(d["early_stopping"][1])), (str(d["test"][0]), str(d["test"][1])),
                   int(d["purge_days"]), int(d["embargo_days"]))


def iso(dates: np.ndarray, i: int) -> str:
    return str(np.datetime_as_string(dates[i], unit="D"))


def day_index(dates: np.ndarray, day: str, side: str = "left") -> int:
    return int(np.searchsorted(dates, np.datetime64(day, "ns"), side=side))


def cut_folds(dates: np.ndarray, splits: Splits, n_folds: int, horizon: int, context: int,
              early_stopping_days: int | None = None) -> list[Fold]:
    """The F folds of a study's test split; UserError when the periods are too short for them."""
    dates = np.asarray(dates, dtype="datetime64[ns]")
    if n_folds < 1:
        raise UserError(f"--folds must be at least 1, got {n_folds}")
    first_test = day_index(dates, splits.test[0])
    last_test = day_index(dates, splits.test[1], side="right") - 1
    first_train = day_index(dates, splits.train[0])
    if early_stopping_days is None:
        early_stopping_days = day_index(dates, splits.val[1], side="right") - day_index(dates, splits.val[0])
    n_days = last_test - first_test + 1
    if n_days < n_folds * (horizon + 1):
        raise UserError(f"the test split has {n_days} days: too few for {n_folds} folds at horizon {horizon}")
    folds = []
    for number, chunk in enumerate(np.array_split(np.arange(first_test, last_test + 1), n_folds), start=1):
        start, end = int(chunk[0]), int(chunk[-1])
        stop_start = start - early_stopping_days
        if stop_start - first_train < context + horizon:
            raise UserError(f"fold {number} leaves no training days before its {early_stopping_days} early-stopping days")
        folds.append(Fold(number, (iso(dates, first_train), iso(dates, stop_start - 1)), (iso(dates, stop_start), iso(dates, start - 1)),
                          (iso(dates, start), iso(dates, end)), purge_days=horizon + context - 1, embargo_days=horizon))
    return folds


def fold_positions(dates: np.ndarray, labels: np.ndarray, fold: Fold, context: int, horizon: int) -> dict[str, np.ndarray]:
    """train / val (early stopping) / test sample positions t of one fold (see the module doc)."""
    dates = np.asarray(dates, dtype="datetime64[ns]")
    first = max(day_index(dates, fold.test[0]), context - 1)
    last = day_index(dates, fold.test[1], side="right") - 1
    scored = np.arange(first, last + 1, dtype=np.int64)
    return {
        "train": split_positions(dates, fold.train[0], fold.train[1], context, horizon),
        "val": split_positions(dates, fold.early_stopping[0], fold.early_stopping[1], context, horizon),
        "test": scored[np.isfinite(labels[scored])],  # the data's last H days have no label yet
    }


def fold_samples(samples: Samples, fold: Fold) -> Samples:
    """The study's samples with the fold's train / early-stopping / test positions; the same gates
    as a study's splits (enough early-stopping samples, both classes everywhere)."""
    index = fold_positions(samples.dates, samples.labels, fold, samples.context, samples.horizon)
    try:
        check_gates(index, samples.labels, samples.horizon)
    except UserError as exc:
        raise UserError(f"fold {fold.number}: {exc}") from None
    return replace(samples, index=index)


def pooled_positions(samples: Samples, folds: list[Fold]) -> np.ndarray:
    """Every fold's test positions, in order: the pooled out-of-sample days."""
    parts = [fold_positions(samples.dates, samples.labels, f, samples.context, samples.horizon) for f in folds]
    return np.concatenate([p["test"] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
