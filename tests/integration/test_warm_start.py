"""Warm start: new studies begin with the best feasible configurations of earlier ones; bad sources are refused."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from coordinator.errors import UserError
from coordinator.lifecycle import claims, optuna_adapter, outcomes
from tests.service_helpers import create, make_dataset, rows, scalar

SOURCE = "syn-a25-thr1pct-100K-h1"


def finish_trials(url: str, values: list[float]) -> list[dict]:
    """Claim and finish the source study's trials with these objective values, as a real worker would;
    returns every COMPLETE attempt, best first."""
    storage = optuna_adapter.open_storage(url)
    who = claims.Who("earlier", "host", "cpu", "v")
    try:
        entries = [e for e in claims.load_studies(storage.engine) if e.name == SOURCE]
        for value in values:
            claim = claims.claim_next(storage.engine, storage, entries, who)
            assert isinstance(claim, claims.ClaimedItem)
            _, row = outcomes.finish(storage.engine, claim.attempt_id, "COMPLETE", value=value)
            outcomes.tell_optuna(storage, claim.optuna_study, row, "COMPLETE", value, claim.trial)
        return rows(storage.engine, "SELECT a.params, a.value FROM attempts a WHERE a.state = 'COMPLETE' ORDER BY a.value DESC")
    finally:
        storage.engine.dispose()


def test_warm_started_studies_begin_with_the_best_earlier_configurations(engine: sa.Engine, initialised_db: str) -> None:
    make_dataset(initialised_db)
    create(initialised_db, preset="smoke", budgets=("100K",), horizons=(1,), trials=5)
    earlier = finish_trials(initialised_db, [0.61, 0.66, 0.58, 0.64])
    request = {"preset": "smoke", "budgets": ("100K",), "horizons": (1, 5), "trials": 6, "suffix": "warm",
               "warm_start_from": "syn-*-h1", "warm_start_top": 2}
    plans = create(initialised_db, **request)
    best_two = [earlier[0]["params"], earlier[1]["params"]]  # 0.66 and 0.64
    for plan in plans:
        ws = plan.spec.warm_start
        assert ws is not None and ws.source == "syn-*-h1" and ws.top == 2
        assert [t["value"] for t in ws.trials] == [0.66, 0.64] and [t["params"] for t in ws.trials] == best_two
        slots = rows(engine, "SELECT slot, payload FROM work_items WHERE study_name = :n ORDER BY slot", n=plan.spec.name)
        assert [s["payload"].get("params") for s in slots[:2]] == best_two  # first, then the extremes
        assert len(slots) == 6  # they count towards the target
    assert scalar(engine, "SELECT spec -> 'warm_start' -> 'top' FROM study_specs WHERE study_name = :n", n=plans[0].spec.name) == 2
    # The first claims of a warm-started study run exactly those configurations, as Optuna trials.
    storage = optuna_adapter.open_storage(initialised_db)
    try:
        entries = [e for e in claims.load_studies(storage.engine) if e.name == plans[0].spec.name]
        first = [claims.claim_next(storage.engine, storage, entries, claims.Who("w", "h", "cpu", "v")) for _ in range(2)]
        assert [c.trial.params for c in first if isinstance(c, claims.ClaimedItem)] == best_two
    finally:
        storage.engine.dispose()
    # Running it again changes nothing, even though the earlier study has moved on meanwhile.
    finish_trials(initialised_db, [0.70])
    assert {p.status for p in create(initialised_db, **request)} == {"unchanged"}


def test_bad_warm_starts_are_refused_and_change_nothing(engine: sa.Engine, initialised_db: str) -> None:
    make_dataset(initialised_db)
    create(initialised_db, preset="smoke", budgets=("100K",), horizons=(1,), trials=3)
    finish_trials(initialised_db, [0.6, 0.62])
    before = (scalar(engine, "SELECT count(*) FROM work_items"), scalar(engine, "SELECT count(*) FROM studies"))
    cases = [
        ({"warm_start_from": "nothing-*"}, "--warm-start-from 'nothing-*' matches no study"),
        # 100K configurations fit no 300K study (±25%).
        ({"warm_start_from": SOURCE, "budgets": ("300K",)}, "none of its 2 COMPLETE trials fits study syn-a25-thr1pct-300K-h1-w"),
        ({"warm_start_from": SOURCE, "warm_start_top": 0}, "--top must be between 1 and 1000, got 0"),
        ({"warm_start_top": 2}, "--top needs --warm-start-from"),
    ]
    for request, message in cases:
        with pytest.raises(UserError) as refused:
            create(initialised_db, **{"preset": "smoke", "horizons": (1,), "budgets": ("100K",), "suffix": "w", **request})
        assert message in str(refused.value)
        assert scalar(engine, "SELECT count(*) FROM study_specs") == 1
        assert (scalar(engine, "SELECT count(*) FROM work_items"), scalar(engine, "SELECT count(*) FROM studies")) == before
