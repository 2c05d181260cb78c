"""Checkpoints and `coordinator predict` on a real PostgreSQL with real (tiny) training: the
evaluated answer's checkpoints reproduce the stored test predictions bit for bit, a re-run stores no
second copy, search trials keep theirs with --keep-checkpoints, and bad input (not evaluated,
corrupt or missing artifact, unreachable store, another feature definition) is one line that
changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from coordinator.cli import app, main
from coordinator.data import registry
from coordinator.data.synth import synthetic_series
from coordinator.errors import UserError
from coordinator.evaluation.plan import payloads, record_protocol
from coordinator.evaluation.protocol import make_protocol
from coordinator.evaluation.summary import compute_verdicts, store_verdicts
from coordinator.lifecycle.claims import load_studies
from coordinator.lifecycle.settings import Liveness
from coordinator.store import artifacts
from coordinator.store.engines import make_engine, optuna_storage, scratch_database
from coordinator.store.schema import init_db
from coordinator.studies.architecture import Architecture
from tests.service_helpers import create, make_dataset, rows

torch = pytest.importorskip("torch")
from worker.checkpoints import load_checkpoint  # noqa: E402
from worker.evaluate import evaluate_run  # noqa: E402
from worker.loop import Worker, WorkerOptions  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def evaluated(admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One smoke study (10K parameters, --keep-checkpoints) searched (1 trial) and evaluated with 2
    seeds on one walk-forward fold (the whole test split), checkpoints in a file store; shared by this module's tests (they run in file order; the
    last one breaks things)."""
    store = tmp_path_factory.mktemp("artifacts")
    with pytest.MonkeyPatch.context() as patch, scratch_database(admin_url, "ss_predict") as url:
        patch.setenv(artifacts.ENV_ARTIFACTS, str(store))
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        init_db(url)
        engine = make_engine(url)
        try:
            dataset = make_dataset(url, days=2500)
            create(url, dataset=dataset, preset="smoke", budgets=("10K",), horizons=(1,), trials=1, keep_checkpoints=True)
            options = WorkerOptions(url=url, worker_id="searcher", device="cpu", liveness=Liveness(1, 20, 2), poll_s=0.1)
            assert Worker(options).run() == 0
            entry = load_studies(engine)[0]
            items = payloads(record_protocol(engine, entry, make_protocol("smoke", k=1, n_seeds=2, folds=1)))
            runs = [evaluate_run(engine, item) for item in items]
            store_verdicts(engine, compute_verdicts(engine, entry.spec.dataset.name))
            yield {"study": entry.name, "spec": entry.spec, "items": items, "runs": runs, "url": url, "store": store, "engine": engine}
        finally:
            engine.dispose()
            torch.set_num_threads(before)


@pytest.fixture
def engine(evaluated: dict) -> sa.Engine:
    return evaluated["engine"]


def invoke(url: str, *args: str):
    return runner.invoke(app, ["--database-url", url, *args])


def test_predict_reproduces_the_stored_test_predictions_bit_for_bit(engine: sa.Engine, evaluated: dict, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(artifacts.ENV_ARTIFACTS, str(evaluated["store"]))
    from coordinator.evaluation.predict import predict

    study, spec = evaluated["study"], evaluated["spec"]
    dataset = registry.load_dataset(engine, spec.dataset.name, spec.dataset.version)
    dates = dataset.frame.index
    stored = rows(engine, "SELECT seed, test_positions, test_predictions, checkpoint_sha256 FROM evaluation_runs ORDER BY seed")
    assert len(stored) == 2 and all(r["checkpoint_sha256"] for r in stored)
    first_test = dates[stored[0]["test_positions"][0]].strftime("%Y-%m-%d")

    torch.set_num_threads(2)  # not the runs' count (1): predict uses the run's own, and restores this one
    try:
        by_seed = {run["seed"]: predict(engine, study, start=first_test, seed=run["seed"]) for run in stored}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    for run in stored:
        result = by_seed[run["seed"]]
        frame = result.frame.set_index("date")
        days = dates[run["test_positions"]].strftime("%Y-%m-%d")
        assert np.array_equal(frame.loc[days, "probability"].to_numpy(), np.asarray(run["test_predictions"]))  # bit for bit
        assert frame.index[-1] == dates[-1].strftime("%Y-%m-%d")  # the last days too, whose labels are not known yet

    # Default: every day after what the models saw: from the test split's first day (a walk-forward
    # fold scores every day of its period, its windows reaching back into earlier days: features
    # only), still bit for bit on the scored days.
    both = predict(engine, study).frame
    assert both["date"].iloc[0] == spec.splits["test"][0] == first_test
    seeds = [f"seed_{r['seed']}" for r in stored]
    assert list(both.columns) == ["date", "probability", *seeds]
    on_test = both.set_index("date").loc[dates[stored[0]["test_positions"]].strftime("%Y-%m-%d")]
    for run, column in zip(stored, seeds, strict=True):
        assert np.array_equal(on_test[column].to_numpy(), np.asarray(run["test_predictions"]))
    assert np.array_equal(both["probability"].to_numpy(), both[seeds].mean(axis=1).to_numpy())  # the ensemble: the seeds' mean

    # The command: CSV on stdout, or a parquet file by its suffix.
    done = invoke(evaluated["url"], "predict", "--study", study, "--seed", str(stored[0]["seed"]))
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines()[0] == f"date,probability,seed_{stored[0]['seed']}"
    out = tmp_path / "p.parquet"
    assert invoke(evaluated["url"], "predict", "--study", study, "--out", str(out)).exit_code == 0
    assert pd.read_parquet(out)["probability"].to_numpy().tolist() == both["probability"].tolist()


def test_a_rerun_stores_no_second_copy(engine: sa.Engine, evaluated: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(artifacts.ENV_ARTIFACTS, str(evaluated["store"]))
    before = rows(engine, "SELECT sha256, artifact_id FROM checkpoints ORDER BY sha256")
    files = sorted(p.name for p in evaluated["store"].iterdir())
    assert len(before) == 3 and len(files) == 3  # the search trial's and the two evaluation runs'
    again = evaluate_run(engine, evaluated["items"][0])  # a retried attempt: same recipe, same bytes on CPU
    assert again["test_predictions"] == evaluated["runs"][0]["test_predictions"]
    assert rows(engine, "SELECT sha256, artifact_id FROM checkpoints ORDER BY sha256") == before
    assert sorted(p.name for p in evaluated["store"].iterdir()) == files


def test_complete_search_trials_keep_their_checkpoints(engine: sa.Engine, evaluated: dict, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """create-studies --keep-checkpoints: the COMPLETE trial's weights, listed under its Optuna trial,
    read back with their architecture checked; another architecture is refused in one line."""
    monkeypatch.setenv(artifacts.ENV_ARTIFACTS, str(evaluated["store"]))
    trials = rows(engine, "SELECT r.trial_number, r.state, r.n_params, r.checkpoint_sha256, c.artifact_id, c.n_params AS stored "
                          "FROM trial_records r LEFT JOIN checkpoints c ON c.sha256 = r.checkpoint_sha256")
    assert [t["state"] for t in trials] == ["COMPLETE"] and trials[0]["stored"] == trials[0]["n_params"]
    trial = trials[0]
    study = optuna.load_study(study_name=evaluated["study"], storage=optuna_storage(evaluated["url"]))
    listed = optuna.artifacts.get_all_artifact_meta(study.trials[trial["trial_number"]], storage=study._storage)
    assert [m.artifact_id for m in listed] == [trial["artifact_id"]]

    record = artifacts.recorded(engine, trial["checkpoint_sha256"])
    assert record is not None
    path = artifacts.fetch_checkpoint(record, tmp_path)
    architecture = Architecture.from_dict(rows(engine, "SELECT architecture FROM attempts WHERE trial_number = :n AND state = 'COMPLETE'",
                                               n=trial["trial_number"])[0]["architecture"])
    loaded = load_checkpoint(path, architecture=architecture, n_params=trial["n_params"], label="trial checkpoint")
    assert sum(p.numel() for p in loaded.model.parameters()) == trial["n_params"]
    assert loaded.payload["input_columns"] and loaded.payload["feature_std"].dtype == torch.float64
    wider = replace(architecture, d_ff=architecture.d_ff * 2)
    with pytest.raises(UserError, match=r"^trial checkpoint: checkpoint architecture .* differs from the run's"):
        load_checkpoint(path, architecture=wider, n_params=wider.n_params, label="trial checkpoint")
    with pytest.raises(UserError, match=r"^trial checkpoint: checkpoint has .* parameters, the run recorded"):
        load_checkpoint(path, architecture=architecture, n_params=trial["n_params"] + 1, label="trial checkpoint")


def test_bad_input_is_one_line_and_changes_nothing(engine: sa.Engine, evaluated: dict, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(artifacts.ENV_ARTIFACTS, str(evaluated["store"]))
    url, study, spec = evaluated["url"], evaluated["study"], evaluated["spec"]
    checkpoints_before = rows(engine, "SELECT * FROM checkpoints ORDER BY sha256")

    def refused(*args: str) -> str:
        """The entry point's own handling: one line on stderr, exit status 2, nothing on stdout."""
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            main(["--database-url", url, "predict", *args])
        out, err = capsys.readouterr()
        assert exit_.value.code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
        return err.strip()

    # A study that has not been evaluated.
    create(url, dataset=f"{spec.dataset.name}:{spec.dataset.version}", preset="smoke", budgets=("10K",), horizons=(3,), trials=1)
    other = next(e.name for e in load_studies(engine) if e.name != study)
    assert "has not been evaluated" in refused("--study", other)
    # Days the models learnt from.
    assert "a day the models learnt from" in refused("--study", study, "--from", "2000-01-01")
    # A dataset whose features are defined differently (the VIX tier has more columns).
    registry.register_series(engine, "VIXX", synthetic_series(2500, 5), source="test")
    registry.build_dataset(engine, "SYN", vix="VIXX")
    assert "other input columns" in refused("--study", study, "--dataset", "syn-a25-vix8")
    # An unreachable store.
    monkeypatch.setenv(artifacts.ENV_ARTIFACTS, "s3://nowhere/ckpt")
    monkeypatch.setenv(artifacts.ENV_S3_ENDPOINT, "http://127.0.0.1:9")
    assert "unreachable" in refused("--study", study)
    monkeypatch.setenv(artifacts.ENV_ARTIFACTS, str(evaluated["store"]))
    # A corrupt artifact, then a missing one.
    checkpoint = rows(engine, "SELECT artifact_id FROM checkpoints ORDER BY sha256")[0]
    victim = evaluated["store"] / checkpoint["artifact_id"]
    content = bytearray(victim.read_bytes())
    content[len(content) // 2] ^= 0xFF  # one flipped byte in the middle of the weights
    victim.write_bytes(bytes(content))
    assert "is corrupt: sha256" in refused("--study", study)
    victim.unlink()
    assert "is missing from" in refused("--study", study)
    assert "use a .csv or .parquet file" in refused("--study", study, "--out", str(tmp_path / "p.txt"))
    assert rows(engine, "SELECT * FROM checkpoints ORDER BY sha256") == checkpoints_before

