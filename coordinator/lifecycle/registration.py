"""Registering planned studies: the Optuna study, its `study_specs` row and its ledger slots, in one
transaction per study. Safe against concurrent and half-done runs of `create-studies`.
"""

from __future__ import annotations

import sqlalchemy as sa

from coordinator.errors import UserError
from coordinator.lifecycle import ledger, optuna_adapter
from coordinator.store import tables
from coordinator.studies.planning import PlannedStudy


def create_studies(url: str, plans: list[PlannedStudy]) -> list[PlannedStudy]:
    """Create the planned studies that are new. Safe against concurrent runs and half-done runs.

    Each study is one transaction: its Optuna study (for sampling), its `study_specs` row and its
    ledger items (one `search` slot per target trial, the extreme architectures first).
    """
    storage = optuna_adapter.open_storage(url)
    engine = storage.engine
    created = []
    try:
        for plan in plans:
            if plan.status != "new":
                continue
            with engine.begin() as conn:
                # One create-studies at a time; re-check under the lock (another run may have won).
                # A table lock stronger than ACCESS SHARE needs write privileges: readers cannot hold it.
                conn.execute(sa.text("LOCK TABLE study_specs IN SHARE ROW EXCLUSIVE MODE"))
                if check_existing_locked(conn, plan):
                    continue
                spec = plan.spec
                study = optuna_adapter.create_study(storage, spec)
                foreign = optuna_adapter.started_trials(study)
                if foreign:
                    raise UserError(
                        f"Optuna study {spec.name} already has {foreign} trials but no scalesweep spec; "
                        "it was not made by create-studies: delete it or use another dataset name"
                    )
                study_id = conn.execute(sa.text("SELECT study_id FROM studies WHERE study_name = :n"), {"n": spec.name}).scalar_one()
                conn.execute(
                    tables.study_specs.insert().values(
                        study_name=spec.name,
                        study_id=study_id,
                        budget=spec.budget.label,
                        budget_params=spec.budget.params,
                        horizon=spec.horizon,
                        dataset_name=spec.dataset.name,
                        dataset_version=spec.dataset.version,
                        dataset_sha256=spec.dataset.sha256,
                        objective=spec.objective.metric,
                        direction=spec.objective.direction,
                        target_trials=spec.target_trials,
                        spec=spec.to_dict(),
                        spec_sha256=spec.sha256(),
                        code_version=spec.code_version,
                    )
                )
                ledger.register_search(conn, spec.name, spec.target_trials, plan.extremes)
            created.append(plan)
    finally:
        storage.engine.dispose()
    return created


def check_existing_locked(conn: sa.Connection, plan: PlannedStudy) -> bool:
    """True if the study exists with this spec; UserError if with another."""
    t = tables.study_specs
    sha = conn.execute(sa.select(t.c.spec_sha256).where(t.c.study_name == plan.spec.name)).scalar()
    if sha is None:
        return False
    if sha != plan.spec.sha256():
        raise UserError(f"study {plan.spec.name} was just created by another run with a different spec")
    return True
