"""What an evaluation would cost and what it would take to narrow it: `coordinator evaluate --dry-run`.

Per study: the runs the protocol needs (k configurations x S seeds x F folds), the study's own
measured search trials (median wall time of its COMPLETE, non-synthetic attempts), and the projected
device time: runs x median trial time x how much longer a fold's training period is than the
search's train split on average (a run is a trial of the same configuration and schedule, trained on
more days for later folds). Per evaluated horizon: how many test days (as folds of today's length, at the
current seeds) or seeds (at today's test days) a slope interval of a target width would need (`comparison.folds_and_seeds_needed`).
Reads only; writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from coordinator.data.folds import cut_folds, day_index
from coordinator.data.registry import load_dataset
from coordinator.data.splits import Splits
from coordinator.evaluation.comparison import Projection, folds_and_seeds_needed
from coordinator.evaluation.protocol import EvaluationProtocol
from coordinator.lifecycle.claims import StudyEntry
from coordinator.lifecycle.ledger import SEARCH
from coordinator.store.tables import attempts, evaluation_protocols, evaluation_results, scaling_verdicts, work_items


@dataclass(frozen=True)
class StudyProjection:
    study_name: str
    budget: str
    horizon: int
    runs: int
    trials_measured: int
    median_trial_s: float | None  # None: no real trial finished yet
    fold_scale: float  # mean fold training days / the search's training days
    device_s: float | None


@dataclass(frozen=True)
class WidthProjection:
    dataset: str
    horizon: int
    width: float  # the current slope interval's width (or the difference's, with one model size)
    measure: str  # slope | difference
    projection: Projection


def measured_trials(engine: sa.Engine, names: list[str]) -> dict[str, tuple[int, float]]:
    """study -> (COMPLETE real search attempts, their median wall seconds)."""
    a, i = attempts, work_items
    seconds = sa.extract("epoch", a.c.finished_at - a.c.claimed_at)
    query = (sa.select(i.c.study_name, sa.func.count(), sa.func.percentile_cont(0.5).within_group(seconds))
             .join(i, i.c.item_id == a.c.item_id)
             .where(i.c.kind == SEARCH, i.c.study_name.in_(names), a.c.state == "COMPLETE", sa.not_(a.c.synthetic),
                    a.c.finished_at.is_not(None))
             .group_by(i.c.study_name))
    with engine.connect() as conn:
        return {name: (int(n), float(median)) for name, n, median in conn.execute(query)}


def fold_scale(dates: np.ndarray, entry: StudyEntry, protocol: EvaluationProtocol) -> float:
    """Mean training days of the protocol's folds over the search's training days (1 for one period)."""
    spec = entry.spec
    splits = Splits.from_dict(spec.splits)
    search_days = day_index(dates, splits.train[1], side="right") - day_index(dates, splits.train[0])
    if not protocol.walk_forward:
        return 1.0
    folds = cut_folds(dates, splits, protocol.n_folds, spec.horizon, spec.context)
    days = [day_index(dates, f.train[1], side="right") - day_index(dates, f.train[0]) for f in folds]
    return float(np.mean(days)) / search_days


def project_runs(engine: sa.Engine, entries: list[StudyEntry], protocol: EvaluationProtocol) -> list[StudyProjection]:
    measured = measured_trials(engine, [e.name for e in entries])
    dates_of: dict[tuple[str, int], np.ndarray] = {}
    out = []
    for entry in entries:
        ref = entry.spec.dataset
        if (ref.name, ref.version) not in dates_of:
            dates_of[(ref.name, ref.version)] = load_dataset(engine, ref.name, ref.version).frame.index.to_numpy(dtype="datetime64[ns]")
        scale = fold_scale(dates_of[(ref.name, ref.version)], entry, protocol)
        runs = protocol.k * protocol.n_seeds * protocol.n_folds
        n, median = measured.get(entry.name, (0, None))
        out.append(StudyProjection(entry.name, entry.spec.budget.label, entry.spec.horizon, runs, n, median, scale,
                                   None if median is None else runs * median * scale))
    return out


def seed_share(answer: Any) -> float:
    """The seed part of the answer's AUC variance: seed sd^2 / S over the interval's variance (0 if unknown)."""
    if answer is None or answer.test_auc_sd is None or answer.n_seeds < 2:
        return 0.0
    total = ((answer.test_auc_high - answer.test_auc_low) / (2 * 1.96)) ** 2
    return min(1.0, answer.test_auc_sd**2 / answer.n_seeds / total) if total > 0 else 0.0


def project_widths(engine: sa.Engine, dataset_names: list[str], target_width: float) -> list[WidthProjection]:
    """For every stored verdict of these datasets: test days (as folds of today's length) or seeds for
    an interval `target_width` wide; the seed share of the variance estimated from the answer's seeds."""
    v, p, e = scaling_verdicts, evaluation_protocols, evaluation_results
    with engine.connect() as conn:
        rows = conn.execute(sa.select(v).where(v.c.dataset_name.in_(dataset_names)).order_by(v.c.dataset_name, v.c.horizon)).mappings().all()
        protocols = {r.protocol_sha256: r.protocol for r in conn.execute(sa.select(p.c.protocol_sha256, p.c.protocol))}
        answers = {r.study_name: r for r in conn.execute(sa.select(e).where(e.c.chosen))}
    out = []
    for r in rows:
        if r["slope_low"] is not None:
            width, measure = r["slope_high"] - r["slope_low"], "slope"
        elif r["vs_best_baseline_low"] is not None:
            width, measure = r["vs_best_baseline_high"] - r["vs_best_baseline_low"], "difference"
        else:
            continue
        stored = EvaluationProtocol.from_dict(protocols[r["protocol_sha256"]])
        share = seed_share(answers.get(r["answer_study"]))
        out.append(WidthProjection(f"{r['dataset_name']}:{r['dataset_version']}", r["horizon"], width, measure,
                                   folds_and_seeds_needed(width, target_width, stored.n_folds, stored.n_seeds, share, r["n_test"])))
    return out
