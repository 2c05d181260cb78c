"""The Pareto front of a multi-objective study and its knee (plain data, no database).

A study created with `--objectives val_auc,n_params` asks which trade-off between validation quality
and model size (or training time per epoch) is best, not which single trial is. A trial is on the
front when no other trial is at least as good in every objective and better in one. The knee is the
front's point farthest from the straight line between its two ends, after scaling every objective
to [0, 1] over the front: where giving up a little of one objective stops buying much of the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Point:
    key: Any  # e.g. the trial number
    values: tuple[float, ...]  # one per objective, in the study's order


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """a is at least as good as b in every objective and better in at least one."""
    better = False
    for x, y, direction in zip(a, b, directions, strict=True):
        if (x < y) if direction == "maximize" else (x > y):
            return False
        better = better or x != y
    return better


def front(points: Sequence[Point], directions: Sequence[str]) -> list[Point]:
    """The non-dominated points, sorted by the first objective (best first); duplicates all kept."""
    kept = [p for p in points if not any(dominates(q.values, p.values, directions) for q in points)]
    first = 1 if directions[0] == "minimize" else -1
    return sorted(kept, key=lambda p: (first * p.values[0], str(p.key)))


def knee(points: Sequence[Point], directions: Sequence[str]) -> Point:
    """The front's knee (see the module doc); with one or two points on the front, its best by the first objective."""
    on_front = front(points, directions)
    if not on_front:
        raise ValueError("no points")
    if len(on_front) <= 2:
        return on_front[0]
    scaled = [scale(on_front, i, d) for i, d in enumerate(directions)]  # per objective: 1 = best on the front
    rows = [tuple(column[j] for column in scaled) for j in range(len(on_front))]
    start, end = rows[0], rows[-1]
    return on_front[max(range(len(rows)), key=lambda j: (distance_to_line(rows[j], start, end), -j))]


def scale(points: Sequence[Point], index: int, direction: str) -> list[float]:
    values = [p.values[index] for p in points]
    low, high = min(values), max(values)
    if high == low:
        return [1.0 for _ in values]
    return [(v - low) / (high - low) if direction == "maximize" else (high - v) / (high - low) for v in values]


def distance_to_line(p: Sequence[float], a: Sequence[float], b: Sequence[float]) -> float:
    """Euclidean distance from p to the line through a and b (any dimension)."""
    ab = [y - x for x, y in zip(a, b, strict=True)]
    ap = [y - x for x, y in zip(a, p, strict=True)]
    norm = sum(v * v for v in ab)
    if norm == 0:
        return sum(v * v for v in ap) ** 0.5
    t = sum(u * v for u, v in zip(ab, ap, strict=True)) / norm
    return sum((u - t * v) ** 2 for u, v in zip(ap, ab, strict=True)) ** 0.5
