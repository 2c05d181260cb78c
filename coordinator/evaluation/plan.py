"""Which runs a study's evaluation needs: its top-k configurations x the protocol's seeds x its folds.

`record_protocol` freezes, per study, the protocol, the configurations chosen (the top k COMPLETE
trials by the study's objective, ties to the earlier trial, identical configurations counted once)
and, for a walk-forward protocol, the fold boundaries cut from the study's test split
(`coordinator.data.folds`) the first time the study is evaluated. Later calls with the same protocol return what was stored,
so re-running `coordinator evaluate` is idempotent even if the study gained trials meanwhile; a
different protocol is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from coordinator.data.folds import Fold, cut_folds, fold_samples
from coordinator.data.registry import load_dataset
from coordinator.data.samples import make_samples
from coordinator.data.splits import Splits
from coordinator.errors import UserError
from coordinator.evaluation.protocol import EvaluationProtocol
from coordinator.lifecycle.claims import StudyEntry
from coordinator.lifecycle.ledger import SEARCH
from coordinator.store import locks
from coordinator.store.tables import attempts, evaluation_protocols, evaluation_runs, trial_records, work_items
from coordinator.studies import pareto


@dataclass(frozen=True)
class StudyEvaluation:
    entry: StudyEntry
    protocol: EvaluationProtocol
    configurations: list[dict[str, Any]]  # rank, trial_number, trial_id, params, objective, n_params
    status: str  # new | unchanged
    folds: list[Fold] = field(default_factory=list)  # empty: the single-period protocol

    @property
    def n_runs(self) -> int:
        return len(self.configurations) * self.protocol.n_seeds * self.protocol.n_folds


def study_folds(engine: sa.Engine, entry: StudyEntry, protocol: EvaluationProtocol) -> list[Fold]:
    """The protocol's folds of this study's test split (none for the single-period protocol)."""
    if not protocol.walk_forward:
        return []
    spec = entry.spec
    dataset = load_dataset(engine, spec.dataset.name, spec.dataset.version)
    dates = dataset.frame.index.to_numpy(dtype="datetime64[ns]")
    folds = cut_folds(dates, Splits.from_dict(spec.splits), protocol.n_folds, spec.horizon, spec.context)
    samples = make_samples(dataset, spec.horizon, Splits.from_dict(spec.splits), context=spec.context, threshold=spec.label.threshold)
    for fold in folds:
        fold_samples(samples, fold)  # the gates: enough early-stopping samples, both classes, before anything is written
    return folds


def top_configurations(engine: sa.Engine, entry: StudyEntry, k: int) -> list[dict[str, Any]]:
    """The study's k best COMPLETE search trials by its objective, one per distinct configuration.

    Read from the ledger: synthetic attempts (`worker --synthetic`, a sleep and a pseudo-objective)
    are not results and are never evaluated.
    """
    a, i = attempts, work_items
    order = a.c.value.desc() if entry.spec.objective.direction == "maximize" else a.c.value.asc()
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(a.c.trial_number, a.c.trial_id, a.c.params, a.c.value, a.c.n_params)
            .join(i, i.c.item_id == a.c.item_id)
            .where(i.c.kind == SEARCH, i.c.study_name == entry.name, a.c.state == "COMPLETE", sa.not_(a.c.synthetic),
                   a.c.value.is_not(None), a.c.params.is_not(None))
            .order_by(order, a.c.trial_number)
        ).all()
    if entry.spec.extra_objectives:
        rows = knee_first(engine, entry, rows)
    chosen: list[dict[str, Any]] = []
    seen: set[str] = set()
    for r in rows:
        key = json.dumps(r.params, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        chosen.append({"rank": len(chosen) + 1, "trial_number": r.trial_number, "trial_id": r.trial_id, "params": r.params,
                       "objective": float(r.value), "n_params": r.n_params})
        if len(chosen) == k:
            break
    return chosen


def knee_first(engine: sa.Engine, entry: StudyEntry, rows: list[Any]) -> list[Any]:
    """A multi-objective study's trials in the order its evaluation takes them: the Pareto front's
    knee, the rest of the front (best first objective first), then every other trial as before."""
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(trial_records.c.trial_number, trial_records.c.metrics["objective_values"])
            .where(trial_records.c.study_name == entry.name, trial_records.c.state == "COMPLETE")
        ).all()
    values = {number: tuple(float(v) for v in objective_values) for number, objective_values in found if objective_values}
    points = [pareto.Point(r.trial_number, values[r.trial_number]) for r in rows if r.trial_number in values]
    if not points:
        return rows
    directions = entry.spec.directions
    order = [p.key for p in pareto.front(points, directions)]
    order.remove(pareto.knee(points, directions).key)
    order.insert(0, pareto.knee(points, directions).key)
    rank = {number: i for i, number in enumerate(order)}
    return sorted(rows, key=lambda r: rank.get(r.trial_number, len(rank)))  # stable: the rest keep their order


def record_protocol(engine: sa.Engine, entry: StudyEntry, protocol: EvaluationProtocol) -> StudyEvaluation:
    """Freeze the study's protocol and configurations (first time), or return the stored ones."""
    t = evaluation_protocols
    with engine.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.study_name == entry.name)).mappings().first()
    if row is not None:
        return check_same(entry, protocol, row)
    configurations = top_configurations(engine, entry, protocol.k)
    if not configurations:
        raise UserError(f"study {entry.name} has no COMPLETE (non-synthetic) trial to evaluate")
    folds = study_folds(engine, entry, protocol)
    with engine.begin() as conn:
        locks.hold(conn, f"evaluation_protocol:{entry.name}")
        row = conn.execute(sa.select(t).where(t.c.study_name == entry.name)).mappings().first()
        if row is not None:  # another `evaluate` won the race
            return check_same(entry, protocol, row)
        conn.execute(t.insert().values(study_name=entry.name, protocol=protocol.to_dict(), protocol_sha256=protocol.sha256(),
                                       configurations=configurations, folds=[f.to_dict() for f in folds] if folds else None))
    return StudyEvaluation(entry, protocol, configurations, "new", folds)


def check_same(entry: StudyEntry, protocol: EvaluationProtocol, row: Any) -> StudyEvaluation:
    if row["protocol_sha256"] != protocol.sha256():
        stored = EvaluationProtocol.from_dict(row["protocol"])
        raise UserError(
            f"study {entry.name} is already evaluated under another protocol ({stored.describe()}); "
            "a study's evaluation protocol is immutable: run `coordinator evaluate` without --preset/--k/--seeds/--folds to reuse it, "
            "or evaluate a new study"
        )
    folds = [Fold.from_dict(f) for f in row["folds"] or []]
    return StudyEvaluation(entry, protocol, list(row["configurations"]), "unchanged", folds)


def payloads(evaluation: StudyEvaluation) -> list[dict[str, Any]]:
    """One work item per (configuration, seed, fold); `slot` makes enqueueing idempotent. A run of
    the single-period protocol has no fold."""
    items = []
    for c in evaluation.configurations:
        for seed in evaluation.protocol.seeds:
            run = {"slot": f"rank{c['rank']}-seed{seed}", "study_name": evaluation.entry.name, "rank": c["rank"], "seed": seed,
                   "trial_number": c["trial_number"], "params": c["params"], "protocol_sha256": evaluation.protocol.sha256()}
            if not evaluation.folds:
                items.append(run)
            items += [run | {"slot": f"{run['slot']}-fold{f.number}", "fold": f.number} for f in evaluation.folds]
    return items


def runs_done(engine: sa.Engine, study_names: list[str]) -> dict[str, int]:
    """study -> evaluation runs stored."""
    t = evaluation_runs
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.study_name, sa.func.count()).where(t.c.study_name.in_(study_names))
                            .group_by(t.c.study_name)).all()
    return {name: 0 for name in study_names} | {name: int(n) for name, n in rows}
