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
from coordinator.evaluation.tables import evaluation_protocols, evaluation_runs
from coordinator.trials import StudyEntry

KIND = "evaluation"  # the ledger's kind of work for evaluation runs


@dataclass(frozen=True)
class StudyEvaluation:
    entry: StudyEntry
    protocol: EvaluationProtocol
    configurations: list[dict[str, Any]]  # rank, trial_number, trial_id, params, objective, n_params
    status: str  # new | unchanged

    @property
    def n_runs(self) -> int:
        return len(self.configurations) * self.protocol.n_seeds


def top_configurations(url: str, entry: StudyEntry, k: int) -> list[dict[str, Any]]:
    """The study's k best COMPLETE trials by its objective, one per distinct configuration."""
    import optuna

    from coordinator import db

    storage = db.optuna_storage(url)
    try:
        study = optuna.load_study(study_name=entry.name, storage=storage)
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    finally:
        storage.engine.dispose()
    sign = -1.0 if entry.spec.objective.direction == "maximize" else 1.0
    chosen: list[dict[str, Any]] = []
    seen: set[str] = set()
    for t in sorted(complete, key=lambda t: (sign * float(t.value), t.number)):
        key = json.dumps(t.params, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        chosen.append({"rank": len(chosen) + 1, "trial_number": t.number, "trial_id": t._trial_id, "params": t.params,
                       "objective": float(t.value), "n_params": t.user_attrs.get("n_params")})
        if len(chosen) == k:
            break
    return chosen


def record_protocol(url: str, engine: sa.Engine, entry: StudyEntry, protocol: EvaluationProtocol) -> StudyEvaluation:
    """Freeze the study's protocol and configurations (first time), or return the stored ones."""
    t = evaluation_protocols
    with engine.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.study_name == entry.name)).mappings().first()
    if row is not None:
        return check_same(entry, protocol, row)
    configurations = top_configurations(url, entry, protocol.k)
    if not configurations:
        raise UserError(f"study {entry.name} has no COMPLETE trial to evaluate")
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
