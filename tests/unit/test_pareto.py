"""The Pareto front and knee of constructed trials, checked by hand and against Optuna's own front."""

from __future__ import annotations

import random

import optuna
import pytest

from coordinator.studies.pareto import Point, dominates, front, knee

DIRECTIONS = ["maximize", "minimize"]  # val_auc up, n_params down


def points(*values: tuple[float, float]) -> list[Point]:
    return [Point(i, v) for i, v in enumerate(values)]


def test_front_of_constructed_trials() -> None:
    trials = points(
        (0.60, 100_000),  # 0: on the front (smallest)
        (0.62, 150_000),  # 1: on the front
        (0.61, 160_000),  # 2: dominated by 1 (worse and bigger)
        (0.66, 300_000),  # 3: on the front (best)
        (0.66, 310_000),  # 4: dominated by 3 (as good, bigger)
        (0.59, 100_000),  # 5: dominated by 0 (worse, as big)
        (0.64, 200_000),  # 6: on the front
    )
    assert [p.key for p in front(trials, DIRECTIONS)] == [3, 6, 1, 0]  # best val_auc first
    assert dominates((0.62, 150_000), (0.61, 160_000), DIRECTIONS)
    assert not dominates((0.62, 150_000), (0.62, 150_000), DIRECTIONS)  # equal: neither dominates
    # Knee: scaled to [0, 1] over the front (val_auc 3: 1, 6: 0.67, 1: 0.33, 0: 0; size 3: 0, 6: 0.5,
    # 1: 0.75, 0: 1), the point farthest from the line between the ends 3 and 0: 6 (0.17 vs 0.08 for 1).
    assert knee(trials, DIRECTIONS).key == 6
    assert knee(points((0.6, 1.0), (0.7, 2.0)), DIRECTIONS).key == 1  # two points: the better by the first objective


@pytest.mark.parametrize("directions", [["maximize", "minimize"], ["minimize", "minimize"], ["maximize", "maximize", "minimize"]])
def test_front_agrees_with_optuna(directions: list[str]) -> None:
    rng = random.Random(7)
    study = optuna.create_study(directions=directions)
    trials = []
    for i in range(60):
        values = tuple(float(rng.randint(0, 12)) for _ in directions)  # coarse values: ties and duplicates
        study.add_trial(optuna.trial.create_trial(values=list(values), params={}, distributions={}))
        trials.append(Point(i, values))
    assert sorted(p.key for p in front(trials, directions)) == sorted(t.number for t in study.best_trials)
