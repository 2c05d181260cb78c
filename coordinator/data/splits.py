"""Date splits: train, then validation, then test, each a closed range of ISO dates.

Containment is strict: a sample t belongs to a split only if its whole context window and its H
future days lie inside that split (see samples.py), so nothing leaks across a boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from coordinator.errors import UserError

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Splits:
    train: tuple[str, str]
    val: tuple[str, str]
    test: tuple[str, str]

    def __post_init__(self) -> None:
        for name in SPLIT_NAMES:
            start, end = (parse_day(day, name) for day in getattr(self, name))
            if start > end:
                raise UserError(f"split {name} starts after it ends ({start.date()} > {end.date()})")
        if not parse_day(self.train[1], "train") < parse_day(self.val[0], "val"):
            raise UserError(f"splits overlap: train ends {self.train[1]}, val starts {self.val[0]}")
        if not parse_day(self.val[1], "val") < parse_day(self.test[0], "test"):
            raise UserError(f"splits overlap: val ends {self.val[1]}, test starts {self.test[0]}")

    def ranges(self) -> dict[str, tuple[str, str]]:
        return {name: getattr(self, name) for name in SPLIT_NAMES}

    def to_dict(self) -> dict[str, list[str]]:
        return {name: list(getattr(self, name)) for name in SPLIT_NAMES}

    @classmethod
    def from_dict(cls, data: dict) -> Splits:
        return cls(**{name: (str(data[name][0]), str(data[name][1])) for name in SPLIT_NAMES})


def parse_day(day: str, split: str) -> pd.Timestamp:
    try:
        return pd.Timestamp(day)
    except (ValueError, TypeError):
        raise UserError(f"split {split}: bad date {day!r}, expected YYYY-MM-DD") from None


def default_splits(dates, val_frac: float = 0.15, test_frac: float = 0.10) -> Splits:
    """The last `test_frac` of the days for test, the `val_frac` before them for validation."""
    index = pd.DatetimeIndex(dates)
    n = len(index)
    if not (0 < val_frac < 1 and 0 < test_frac < 1 and val_frac + test_frac < 1):
        raise UserError(f"bad split fractions val={val_frac}, test={test_frac}: each in (0, 1), sum < 1")
    n_test = round(n * test_frac)
    n_val = round(n * val_frac)
    n_train = n - n_val - n_test
    if min(n_train, n_val, n_test) < 1:
        raise UserError(f"{n} days are too few to split into train, val and test")

    def iso(i: int) -> str:
        return index[i].strftime("%Y-%m-%d")

    return Splits(
        train=(iso(0), iso(n_train - 1)),
        val=(iso(n_train), iso(n_train + n_val - 1)),
        test=(iso(n_train + n_val), iso(n - 1)),
    )
