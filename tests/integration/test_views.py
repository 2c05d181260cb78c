"""The SQL read model agrees with the ledger and with Optuna's API, and hpo_reader can read it and write nothing."""

from __future__ import annotations

from dataclasses import dataclass

import optuna
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from coordinator.lifecycle import claims, ledger, optuna_adapter, outcomes
from coordinator.store import roles, schema, tables
from tests.service_helpers import create, make_dataset

VIEWS = ["trial_results", "study_progress", "leaderboard", "learning_curves", "work_counts"]


@dataclass
class Populated:
    best: optuna.Study  # maximise, target 10: every kind of trial
    lowest: optuna.Study  # minimise, target 4, all finished, a tie
    empty: optuna.Study  # target 4, one running, the rest cancelled
    numbers: dict[str, int]  # role -> trial number in `best`


def claim(storage: optuna_adapter.Storage, name: str, worker: str = "w1", device: str = "cpu") -> claims.ClaimedItem:
    entries = claims.load_studies(storage.engine, name)
    claimed = claims.claim_next(storage.engine, storage, entries, claims.Who(worker, "host", device, "test"))
    assert isinstance(claimed, claims.ClaimedItem)
    return claimed


def end(storage: optuna_adapter.Storage, item: claims.ClaimedItem, state: str, value: float | None = None, **kw: object) -> None:
    """Finish an attempt the way the worker does: ledger and record, then Optuna."""
    finished, row = outcomes.finish(storage.engine, item.attempt_id, state, value=value, details={"val_auc": value}, **kw)  # type: ignore[arg-type]
    assert finished.counted and row is not None
    outcomes.tell_optuna(storage, item.optuna_study, row, state, value)


def populate(engine: sa.Engine, url: str) -> Populated:
    """Three studies made by create-studies and run through the ledger's own claim/finish path."""
    make_dataset(url)
    create(url, preset="smoke", budgets=("100K",), horizons=(1,), trials=10)
    create(url, preset="smoke", budgets=("100K",), horizons=(5,), trials=4, objective="val_loss", suffix="min")
    create(url, preset="smoke", budgets=("300K",), horizons=(1,), trials=4)
    storage = optuna_adapter.open_storage(url)
    best_name, low_name, empty_name = "syn-a25-thr1pct-100K-h1", "syn-a25-thr1pct-100K-h5-min", "syn-a25-thr1pct-300K-h1"
    numbers = {}
    try:
        for role, value in (("first", 0.61), ("top", 0.72), ("third", 0.65)):
            item = claim(storage, best_name)
            end(storage, item, "COMPLETE", value)
            numbers[role] = item.trial_number
        pruned = claim(storage, best_name)
        optuna_adapter.report(pruned.trial, 0.55, 0)
        end(storage, pruned, "PRUNED", reason="median pruner")
        lost, broken = claim(storage, best_name), claim(storage, best_name)
        running = claim(storage, best_name, worker="w-live", device="cuda:0")
        end(storage, lost, "FAIL", reason="lost: no heartbeat for over 3 s (w1)", retry=True)  # what the reaper does
        end(storage, broken, "FAIL", reason="diverged: loss is nan")
        numbers.update(pruned=pruned.trial_number, lost=lost.trial_number, broken=broken.trial_number, running=running.trial_number)
        for epoch, auc in enumerate([0.60, 0.66, 0.64], start=1):
            outcomes.write_epoch(engine, running.trial_id, {"epoch": epoch, "val_auc": auc})

        for value in (0.69, 0.64, 0.64, 0.70):  # a tie: the earlier trial wins
            end(storage, claim(storage, low_name), "COMPLETE", value)

        claim(storage, empty_name)
        with engine.begin() as conn:
            ledger.cancel_study(conn, empty_name)
        load = lambda n: optuna.load_study(study_name=n, storage=storage)  # noqa: E731
        return Populated(load(best_name), load(low_name), load(empty_name), numbers)
    finally:
        storage.engine.dispose()


def rows(engine: sa.Engine, sql: str, **params: object) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(sql), params))


def test_views_exist_and_init_stays_idempotent(engine: sa.Engine, initialised_db: str) -> None:
    with engine.begin() as conn:  # a view an older version had and this one no longer defines
        conn.exec_driver_sql("CREATE VIEW trial_slots AS SELECT 1 AS x")
    schema.init_db(initialised_db)  # dropping and recreating the views again must work
    names = {r.viewname for r in rows(engine, "SELECT viewname FROM pg_views WHERE schemaname = 'public'")}
    assert set(VIEWS) <= names and "trial_slots" not in names


def test_views_agree_with_optuna_and_the_ledger(engine: sa.Engine, initialised_db: str) -> None:
    p = populate(engine, initialised_db)
    best, lowest, empty, n = p.best, p.lowest, p.empty, p.numbers

    for study in (best, lowest, empty):
        trials = {t.number: t for t in study.get_trials()}
        view = {r.trial_number: r for r in rows(engine, "SELECT * FROM trial_results WHERE study_name = :n AND trial_number IS NOT NULL", n=study.study_name)}
        assert view.keys() == trials.keys()
        for number, trial in trials.items():
            assert view[number].state == trial.state.name
            assert view[number].objective == (trial.value if trial.state.name == "COMPLETE" else None)
            assert view[number].started_at.tzinfo is not None  # the database clock, with its zone

    results = {r.trial_number: r for r in rows(engine, "SELECT * FROM trial_results WHERE study_name = :n", n=best.study_name)}
    assert results[n["lost"]].retried and not results[n["broken"]].retried
    waiting = rows(engine, "SELECT * FROM trial_results WHERE study_name = :n AND state = 'WAITING' ORDER BY slot", n=best.study_name)
    assert len(waiting) == 10 - 7 + 1 and [w.retry_of for w in waiting].count(n["lost"]) == 1  # the retry waits, same slot
    assert results[n["broken"]].reason == "diverged: loss is nan"
    live = results[n["running"]]
    assert (live.worker, live.device) == ("w-live", "cuda:0")  # from the claim
    assert live.n_params and live.d_model and live.n_layers  # architecture known from the claim on
    assert results[n["first"]].budget == "100K" and results[n["first"]].horizon == 1

    progress = {r.study_name: r for r in rows(engine, "SELECT * FROM study_progress")}
    bp = progress[best.study_name]
    assert (bp.complete, bp.pruned, bp.failed, bp.retried, bp.running, bp.waiting) == (3, 1, 1, 1, 1, 4)
    assert bp.finished == bp.complete + bp.pruned + bp.failed and bp.remaining == 10 - bp.finished
    assert bp.best_objective == best.best_value == 0.72
    assert progress[lowest.study_name].best_objective == lowest.best_value == 0.64
    assert progress[lowest.study_name].remaining == 0 and progress[lowest.study_name].eta_s == 0
    ep = progress[empty.study_name]
    assert ep.best_objective is None and ep.running == 1 and ep.cancelled == 3 and ep.target_trials == 1

    board = {r.study_name: r for r in rows(engine, "SELECT * FROM leaderboard")}
    assert set(board) == {best.study_name, lowest.study_name}
    assert board[best.study_name].trial_number == best.best_trial.number == n["top"]
    assert board[best.study_name].objective == 0.72
    assert board[best.study_name].n_params == results[n["top"]].n_params
    assert board[lowest.study_name].trial_number == lowest.best_trial.number == 1  # minimise; tie to the earlier
    assert board[lowest.study_name].direction == "minimize"

    curve = rows(engine, "SELECT * FROM learning_curves WHERE study_name = :n ORDER BY epoch", n=best.study_name)
    assert [(r.trial_number, r.epoch, r.val_auc) for r in curve] == [(n["running"], e, a) for e, a in ((1, 0.60), (2, 0.66), (3, 0.64))]


def test_every_count_follows_the_one_slot_rule(engine: sa.Engine, initialised_db: str) -> None:
    """work_counts (the rule), the claims' read_progress, study_progress and a recount of the raw rows agree."""
    populate(engine, initialised_db)
    raw = {
        r.study_name: r
        for r in rows(
            engine,
            "SELECT i.study_name, count(*) FILTER (WHERE i.state <> 'cancelled') AS slots, "
            "count(*) FILTER (WHERE i.state = 'waiting') AS waiting, count(*) FILTER (WHERE i.state = 'running') AS running, "
            "count(*) FILTER (WHERE i.state = 'finished') AS finished, "
            "(SELECT count(*) FROM attempts a JOIN work_items j USING (item_id) WHERE j.study_name = i.study_name) AS claims "
            "FROM work_items i WHERE i.kind = 'search' GROUP BY i.study_name",
        )
    }
    assert len(raw) == 3
    view = {r.study_name: r for r in rows(engine, "SELECT * FROM work_counts WHERE kind = 'search'")}
    progress = {r.study_name: r for r in rows(engine, "SELECT * FROM study_progress")}
    with engine.connect() as conn:
        claimed = claims.read_progress(conn, list(raw))
    for name, r in raw.items():
        counts = (r.slots, r.waiting, r.running, r.finished, r.claims)
        assert (view[name].slots, view[name].waiting, view[name].running, view[name].finished, view[name].claims) == counts
        c = claimed[("search", name)]
        assert (c.target, c.waiting, c.running, c.finished, c.claims) == counts
        p = progress[name]
        assert (p.target_trials, p.waiting, p.running, p.finished) == counts[:4]
        assert p.retried == rows(engine, "SELECT count(*) AS n FROM trial_results WHERE study_name = :n AND retried", n=name)[0].n
        # Claims: attempts = Optuna trials asked by a committed claim.
        assert r.claims == rows(engine, "SELECT count(*) AS n FROM trial_results WHERE study_name = :n AND attempt_id IS NOT NULL", n=name)[0].n


def test_records_are_written_by_the_ledger(engine: sa.Engine, initialised_db: str) -> None:
    populate(engine, initialised_db)
    mismatched = rows(
        engine,
        "SELECT a.attempt_id FROM attempts a LEFT JOIN trial_records r ON r.trial_id = a.trial_id "
        "WHERE a.state <> 'RUNNING' AND r.state IS DISTINCT FROM a.state",
    )
    assert mismatched == []
    assert tables.trial_records.name == "trial_records"


def reader_url(url: str) -> str:
    return make_url(url).set(username=roles.READER_ROLE, password=None).render_as_string(hide_password=False)


WRITES = [
    "INSERT INTO trial_records (trial_id, study_name, trial_number, state) VALUES (999, 'x', 0, 'FAIL')",
    "UPDATE trials SET state = 'FAIL'",
    "DELETE FROM study_specs",
    "CREATE TABLE sneaky (a int)",
    "DROP VIEW leaderboard",
]


def test_reader_can_select_every_view_and_write_nothing(engine: sa.Engine, initialised_db: str) -> None:
    populate(engine, initialised_db)
    reader = sa.create_engine(reader_url(initialised_db), poolclass=sa.pool.NullPool)
    try:
        with reader.connect() as conn:
            assert conn.execute(sa.text("SELECT current_user")).scalar() == roles.READER_ROLE
            for view in VIEWS:
                assert conn.execute(sa.text(f"SELECT count(*) FROM {view}")).scalar() > 0
        for sql in WRITES:
            with reader.connect() as conn:  # the role's sessions are read-only by default...
                with pytest.raises(sa.exc.DBAPIError, match="read-only transaction"):
                    conn.exec_driver_sql(sql)
            with reader.connect() as conn:  # ...and with that switched off, privileges refuse it
                conn.exec_driver_sql("SET TRANSACTION READ WRITE")
                with pytest.raises(sa.exc.DBAPIError, match="permission denied|must be owner"):
                    conn.exec_driver_sql(sql)
    finally:
        reader.dispose()
    counts = rows(engine, "SELECT (SELECT count(*) FROM study_specs) AS specs, (SELECT count(*) FROM trial_records WHERE trial_id = 999) AS fake")
    assert counts[0].specs == 3 and counts[0].fake == 0


def test_reader_reads_the_read_model_only_including_views_of_a_later_init(engine: sa.Engine, initialised_db: str) -> None:
    """SELECT is granted on the read model (views re-created by every `db init`), not on every table:
    a table created later stays private until it is part of the read model."""
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE later_results (x int)")
        conn.exec_driver_sql("INSERT INTO later_results VALUES (7)")
    schema.init_db(initialised_db)  # drops and re-creates the views: their grants come back with them
    reader = sa.create_engine(reader_url(initialised_db), poolclass=sa.pool.NullPool)
    try:
        with reader.connect() as conn:
            for view in VIEWS:
                conn.execute(sa.text(f"SELECT count(*) FROM {view}")).scalar()
        with reader.connect() as conn, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            conn.execute(sa.text("SELECT x FROM later_results"))
    finally:
        reader.dispose()

