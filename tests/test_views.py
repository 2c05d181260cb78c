"""The SQL read model agrees with Optuna's API, and hpo_reader can read it and write nothing."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from coordinator import db, records
from coordinator.trials import read_progress, StudyEntry

VIEWS = ["trial_results", "study_progress", "leaderboard", "learning_curves"]

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def add_study(engine: sa.Engine, storage: optuna.storages.RDBStorage, name: str, direction: str, target: int) -> optuna.Study:
    """An Optuna study plus the study_specs row `create-studies` would write (only the typed columns matter here)."""
    study = optuna.create_study(study_name=name, storage=storage, direction=direction)
    with engine.begin() as conn:
        conn.execute(
            records.study_specs.insert().values(
                study_name=name, study_id=study._study_id, budget="2M", budget_params=2_000_000, horizon=3,
                dataset_name="spy-a25", dataset_version=1, dataset_sha256="0" * 64,
                objective="val_auc" if direction == "maximize" else "val_loss", direction=direction,
                target_trials=target, spec={"name": name}, spec_sha256="0" * 64, code_version="test",
            )
        )
    return study


def record(engine: sa.Engine, study: optuna.Study, trial: optuna.trial.FrozenTrial, **columns: object) -> None:
    with engine.begin() as conn:
        conn.execute(
            records.trial_records.insert().values(
                trial_id=trial._trial_id, study_name=study.study_name, trial_number=trial.number,
                state=trial.state.name, worker="w1", device="cpu", **columns,
            )
        )


def populate(engine: sa.Engine, url: str) -> tuple[optuna.Study, optuna.Study, optuna.Study]:
    """A maximise study with every kind of trial, a minimise one, and one with nothing finished."""
    storage = db.optuna_storage(url)
    best = add_study(engine, storage, "spy-a25-thr1pct-2M-h3", "maximize", target=10)
    for value in (0.61, 0.72, 0.65):
        trial = best.ask()
        best.tell(trial, value)
        frozen = best.trials[-1]
        record(engine, best, frozen, val_auc=value, n_params=1_900_000 + trial.number, d_model=128, n_layers=2,
               n_heads=4, d_ff=512, epochs_run=5, best_epoch=3, duration_s=12.5)
    pruned = best.ask()
    pruned.report(0.55, step=0)
    best.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    record(engine, best, best.trials[-1], reason="median pruner")
    # Asked before the retry below, or `ask` would hand out the retry's WAITING trial.
    lost, broken, running = best.ask(), best.ask(), best.ask()
    running.set_user_attr("worker", "w-live")
    running.set_user_attr("device", "cuda:0")
    best.tell(lost, state=optuna.trial.TrialState.FAIL)
    # What the reaper does with a lost trial: Optuna's retry callback enqueues a WAITING copy.
    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)(best, best.trials[lost.number])
    best.tell(broken, state=optuna.trial.TrialState.FAIL)
    record(engine, best, best.trials[broken.number], reason="diverged: loss is nan")
    with engine.begin() as conn:
        for epoch, auc in enumerate([0.60, 0.66, 0.64], start=1):
            conn.execute(records.trial_epochs.insert().values(trial_id=running._trial_id, epoch=epoch, val_auc=auc))

    lowest = add_study(engine, storage, "spy-a25-thr1pct-20M-h1", "minimize", target=3)
    for value in (0.69, 0.64, 0.64, 0.70):  # a tie: the earlier trial wins
        lowest.tell(lowest.ask(), value)

    empty = add_study(engine, storage, "spy-a25-thr1pct-200M-h5", "maximize", target=4)
    empty.ask()
    return best, lowest, empty


def rows(engine: sa.Engine, sql: str, **params: object) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(sql), params))


def test_views_exist_and_init_stays_idempotent(engine: sa.Engine, initialised_db: str) -> None:
    db.init_db(initialised_db)  # dropping and recreating the views again must work
    names = {r.viewname for r in rows(engine, "SELECT viewname FROM pg_views WHERE schemaname = 'public'")}
    assert set(VIEWS) <= names


def test_views_agree_with_optuna(engine: sa.Engine, initialised_db: str) -> None:
    best, lowest, empty = populate(engine, initialised_db)

    for study in (best, lowest, empty):
        trials = {t.number: t for t in study.get_trials()}
        view = {r.trial_number: r for r in rows(engine, "SELECT * FROM trial_results WHERE study_name = :n", n=study.study_name)}
        assert view.keys() == trials.keys()
        for number, trial in trials.items():
            assert view[number].state == trial.state.name
            assert view[number].objective == trial.value
            assert view[number].started_at == trial.datetime_start

    results = {r.trial_number: r for r in rows(engine, "SELECT * FROM trial_results WHERE study_name = :n", n=best.study_name)}
    states = [t.state.name for t in best.get_trials()]
    fail_numbers = [n for n, s in enumerate(states) if s == "FAIL"]
    retried, final = fail_numbers
    assert results[retried].retried and not results[final].retried
    waiting = states.index("WAITING")
    assert results[waiting].retry_of == retried
    assert results[final].reason == "diverged: loss is nan"
    running = states.index("RUNNING")
    assert (results[running].worker, results[running].device) == ("w-live", "cuda:0")  # from the claim's attributes
    assert results[1].n_params == 1_900_001 and results[1].budget == "2M" and results[1].horizon == 3

    progress = {r.study_name: r for r in rows(engine, "SELECT * FROM study_progress")}
    p = progress[best.study_name]
    assert (p.complete, p.pruned, p.failed, p.retried, p.running, p.waiting) == (
        states.count("COMPLETE"), states.count("PRUNED"), 1, 1, states.count("RUNNING"), states.count("WAITING"))
    assert p.finished == p.complete + p.pruned + p.failed and p.remaining == 10 - p.finished
    assert p.best_objective == best.best_value
    assert progress[lowest.study_name].best_objective == lowest.best_value
    assert progress[lowest.study_name].remaining == 0 and progress[lowest.study_name].eta_s == 0
    assert progress[empty.study_name].best_objective is None and progress[empty.study_name].running == 1

    # The worker's own slot count (coordinator.trials) and the view agree on what is finished.
    with engine.connect() as conn:
        entry = StudyEntry(best.study_name, best._study_id, spec=_Spec(10))  # type: ignore[arg-type]
        assert read_progress(conn, [entry])[best.study_name].finished == p.finished

    board = {r.study_name: r for r in rows(engine, "SELECT * FROM leaderboard")}
    assert set(board) == {best.study_name, lowest.study_name}
    assert board[best.study_name].trial_number == best.best_trial.number
    assert board[best.study_name].objective == best.best_value == 0.72
    assert board[best.study_name].n_params == results[best.best_trial.number].n_params
    assert board[lowest.study_name].trial_number == lowest.best_trial.number == 1  # minimise; tie to the earlier
    assert board[lowest.study_name].direction == "minimize"

    curve = rows(engine, "SELECT * FROM learning_curves WHERE study_name = :n ORDER BY epoch", n=best.study_name)
    assert [(r.trial_number, r.epoch, r.val_auc) for r in curve] == [(running, 1, 0.60), (running, 2, 0.66), (running, 3, 0.64)]


class _Spec:
    """The one field of a StudySpec that read_progress uses."""

    def __init__(self, target: int) -> None:
        self.target_trials = target


def reader_url(url: str) -> str:
    return make_url(url).set(username=db.READER_ROLE, password=None).render_as_string(hide_password=False)


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
            assert conn.execute(sa.text("SELECT current_user")).scalar() == db.READER_ROLE
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
    db.init_db(initialised_db)  # drops and re-creates the views: their grants come back with them
    reader = sa.create_engine(reader_url(initialised_db), poolclass=sa.pool.NullPool)
    try:
        with reader.connect() as conn:
            for view in VIEWS:
                conn.execute(sa.text(f"SELECT count(*) FROM {view}")).scalar()
        with reader.connect() as conn, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            conn.execute(sa.text("SELECT x FROM later_results"))
    finally:
        reader.dispose()

