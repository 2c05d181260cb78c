"""`create-studies --keep-checkpoints`: every COMPLETE search trial's best-epoch weights are stored
(listed under its Optuna trial), recorded with the trial, and read back with their architecture
checked; a checkpoint read against another architecture is refused in one line."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa

from coordinator.errors import UserError
from coordinator.lifecycle.settings import Liveness
from coordinator.store import artifacts
from coordinator.store.engines import optuna_storage
from coordinator.studies.architecture import Architecture
from tests.service_helpers import create, make_dataset, rows

torch = pytest.importorskip("torch")
from worker.checkpoints import load_checkpoint  # noqa: E402
from worker.loop import Worker, WorkerOptions  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_complete_trials_keep_their_checkpoints(engine: sa.Engine, initialised_db: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(artifacts.ENV_ARTIFACTS, str(tmp_path / "store"))
    create(initialised_db, dataset=make_dataset(initialised_db, days=2500), preset="smoke", budgets=("10K",), horizons=(1,),
           trials=1, keep_checkpoints=True)
    options = WorkerOptions(url=initialised_db, worker_id="w", device="cpu", liveness=Liveness(1, 20, 2), poll_s=0.1)
    assert Worker(options).run() == 0

    trials = rows(engine, "SELECT r.trial_id, r.trial_number, r.state, r.n_params, r.checkpoint_sha256, c.artifact_id, c.n_params AS stored "
                          "FROM trial_records r LEFT JOIN checkpoints c ON c.sha256 = r.checkpoint_sha256 ORDER BY r.trial_number")
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    assert complete and all(t["checkpoint_sha256"] and t["stored"] == t["n_params"] for t in complete)
    assert all(t["checkpoint_sha256"] is None for t in trials if t["state"] != "COMPLETE")
    assert len(list((tmp_path / "store").iterdir())) == len({t["checkpoint_sha256"] for t in complete})
    study = optuna.load_study(study_name=rows(engine, "SELECT study_name FROM study_specs")[0]["study_name"],
                              storage=optuna_storage(initialised_db))
    first = complete[0]
    listed = optuna.artifacts.get_all_artifact_meta(study.trials[first["trial_number"]], storage=study._storage)
    assert [m.artifact_id for m in listed] == [first["artifact_id"]]

    record = artifacts.recorded(engine, first["checkpoint_sha256"])
    assert record is not None
    path = artifacts.fetch_checkpoint(record, tmp_path)
    architecture = Architecture.from_dict(rows(engine, "SELECT architecture FROM attempts WHERE trial_number = :n AND state = 'COMPLETE'",
                                               n=first["trial_number"])[0]["architecture"])
    loaded = load_checkpoint(path, architecture=architecture, n_params=first["n_params"], label="trial checkpoint")
    assert sum(p.numel() for p in loaded.model.parameters()) == first["n_params"]
    assert loaded.payload["input_columns"] and loaded.payload["feature_std"].dtype == torch.float64

    wider = replace(architecture, d_ff=architecture.d_ff * 2)
    with pytest.raises(UserError, match=r"^trial checkpoint: checkpoint architecture .* differs from the run's"):
        load_checkpoint(path, architecture=wider, n_params=wider.n_params, label="trial checkpoint")
    with pytest.raises(UserError, match=r"^trial checkpoint: checkpoint has .* parameters, the run recorded"):
        load_checkpoint(path, architecture=architecture, n_params=first["n_params"] + 1, label="trial checkpoint")
