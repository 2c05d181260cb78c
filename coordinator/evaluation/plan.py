"""Which runs a study's evaluation needs: its top-k configurations x the protocol's seeds.

`record_protocol` freezes, per study, the protocol and the configurations chosen (the top k COMPLETE
trials by the study's objective, ties to the earlier trial, identical configurations counted once)
the first time the study is evaluated. Later calls with the same protocol return what was stored,
so re-running `coordinator evaluate` is idempotent even if the study gained trials meanwhile; a
different protocol is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from coordinator.errors import UserError
from coordinator.evaluation.protocol import EvaluationProtocol
from coordinator.lifecycle.claims import StudyEntry
from coordinator.lifecycle.ledger import SEARCH
from coordinator.store.tables import attempts, evaluation_protocols, evaluation_runs, work_items


@dataclass(frozen=True)
class StudyEvaluation:
    entry: StudyEntry
    protocol: EvaluationProtocol
    configurations: list[dict[str, Any]]  # rank, trial_number, trial_id, params, objective, n_params
    status: str  # new | unchanged

    @property
    def n_runs(self) -> int:
        return len(self.configurations) * self.protocol.n_seeds


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
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('scalesweep.evaluation_protocol'), hashtext(:s))"),
                     {"s": entry.name})
        row = conn.execute(sa.select(t).where(t.c.study_name == entry.name)).mappings().first()
        if row is not None:  # another `evaluate` won the race
            return check_same(entry, protocol, row)
        conn.execute(t.insert().values(study_name=entry.name, protocol=protocol.to_dict(), protocol_sha256=protocol.sha256(),
                                       configurations=configurations))
    return StudyEvaluation(entry, protocol, configurations, "new")


def check_same(entry: StudyEntry, protocol: EvaluationProtocol, row: Any) -> StudyEvaluation:
    if row["protocol_sha256"] != protocol.sha256():
        stored = EvaluationProtocol.from_dict(row["protocol"])
        raise UserError(
            f"study {entry.name} is already evaluated under another protocol ({stored.describe()}); "
            "a study's evaluation protocol is immutable: rerun with its original --k/--seeds, or evaluate a new study"
        )
    return StudyEvaluation(entry, protocol, list(row["configurations"]), "unchanged")


def payloads(evaluation: StudyEvaluation) -> list[dict[str, Any]]:
    """One work item per (configuration, seed); `slot` makes enqueueing idempotent."""
    return [
        {
            "slot": f"rank{c['rank']}-seed{seed}",
            "study_name": evaluation.entry.name,
            "rank": c["rank"],
            "seed": seed,
            "trial_number": c["trial_number"],
            "params": c["params"],
            "protocol_sha256": evaluation.protocol.sha256(),
        }
        for c in evaluation.configurations
        for seed in evaluation.protocol.seeds
    ]


def runs_done(engine: sa.Engine, study_names: list[str]) -> dict[str, int]:
    """study -> evaluation runs stored."""
    t = evaluation_runs
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.study_name, sa.func.count()).where(t.c.study_name.in_(study_names))
                            .group_by(t.c.study_name)).all()
    return {name: 0 for name in study_names} | {name: int(n) for name, n in rows}
