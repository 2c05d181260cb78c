"""One evaluation run: re-train a study's configuration with a fresh seed, score it once on test.

The recipe is exactly the trial's (`worker.train.train`: the study's objective, early stopping,
schedule); the only difference is `score_test=True`, which keeps the best epoch's weights and scores
the test days with them once, after training. Under a walk-forward protocol a run belongs to one
fold: it trains on the fold's training period, early-stops on the period just before the fold and
scores the fold's days (`coordinator.data.folds`, boundaries frozen with the protocol); under the
single-period protocol it trains on the study's train split, early-stops on its validation split
and scores its whole test split. This module and that flag are the only code that reads test rows
for a transformer.

`evaluate_run` does one run and stores its row in `evaluation_runs` (an upsert keyed by study,
configuration rank, seed and fold, so a retried attempt replaces, never duplicates). Runs are work items
of kind "evaluation" in the ledger (`coordinator evaluate` enqueues them): any `worker` claims them
like search trials, with the same heartbeats, stall detection, reaping and retries, through the
executor `run_evaluation` registered below.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import optuna
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from coordinator.data.folds import Fold, fold_samples
from coordinator.errors import UserError
from coordinator.lifecycle import optuna_adapter
from coordinator.lifecycle.claims import ClaimedItem
from coordinator.lifecycle.ledger import EVALUATION
from coordinator.store.tables import evaluation_protocols, evaluation_runs, study_specs
from coordinator.studies.metrics import binary_metrics
from coordinator.studies.search_space import SearchSpace, TrialConfig, suggest
from coordinator.studies.samples import DatasetChanged, load_study_samples
from coordinator.studies.spec import StudySpec
from worker.executors import Outcome, WorkerContext, register


class EvaluationRefused(Exception):
    """The run cannot be done as specified (protocol changed, no such study): no retry helps."""


def load_spec(engine: sa.Engine, study_name: str) -> StudySpec:
    with engine.connect() as conn:
        spec = conn.execute(sa.select(study_specs.c.spec).where(study_specs.c.study_name == study_name)).scalar()
    if spec is None:
        raise EvaluationRefused(f"no study {study_name}")
    return StudySpec.from_dict(spec)


def config_for(spec: StudySpec, params: dict[str, Any], trial_number: int, seed: int) -> TrialConfig:
    """The configuration of a search trial (its sampled params through the same `suggest`), with `seed`."""
    config = suggest(optuna.trial.FixedTrial(params, number=trial_number), SearchSpace.from_dict(spec.search_space))
    return replace(config, seed=seed)


def evaluate_run(
    engine: sa.Engine,
    payload: dict[str, Any],
    *,
    device: str = "cpu",
    should_stop: Callable[[], bool] | None = None,
    on_step: Callable[[int], None] | None = None,
    worker: str | None = None,
    item_id: int | None = None,
    attempt_id: int | None = None,
    samples_for: Callable[[StudySpec], Any] | None = None,
    storage: Any = None,
) -> dict[str, Any]:
    """Train and score one (study, rank, seed, fold) run, keep its best-epoch weights as a checkpoint and
    store its row; returns the row. `storage`: the worker's Optuna storage (else one is opened)."""
    from worker.train import TrainOptions, train

    started = time.monotonic()
    study = payload["study_name"]
    t = evaluation_protocols
    with engine.connect() as conn:
        stored = conn.execute(sa.select(t.c.protocol_sha256, t.c.folds).where(t.c.study_name == study)).first()
    sha = None if stored is None else stored.protocol_sha256
    if sha != payload["protocol_sha256"]:
        raise EvaluationRefused(f"study {study} is evaluated under protocol {str(sha)[:12]}…, this run belongs to {payload['protocol_sha256'][:12]}…")
    spec = load_spec(engine, study)
    samples = samples_for(spec) if samples_for is not None else load_study_samples(engine, spec)
    fold = int(payload.get("fold", 0))  # 0: the single test period
    if fold:
        folds = stored.folds or []
        if not 1 <= fold <= len(folds):
            raise EvaluationRefused(f"study {study} has {len(folds)} frozen folds, this run asks for fold {fold}")
        try:
            samples = fold_samples(samples, Fold.from_dict(folds[fold - 1]))
        except UserError as exc:  # gated when the protocol was frozen; a changed dataset could still fail them
            raise EvaluationRefused(str(exc)) from None
    config = config_for(spec, payload["params"], payload["trial_number"], int(payload["seed"]))
    options = TrainOptions(device=device, objective=spec.objective.metric, should_stop=should_stop, on_step=on_step, score_test=True)
    result = train(config, samples, options)
    assert result.test_predictions is not None
    checkpoint = keep_run_checkpoint(engine, result, config, samples, spec, payload, storage)
    positions = samples.index["test"]
    test = binary_metrics(samples.labels[positions], result.test_predictions, prefix="test_", pred_prefix="test_")
    row = {
        "study_name": study,
        "rank": int(payload["rank"]),
        "seed": int(payload["seed"]),
        "fold": fold,
        "protocol_sha256": payload["protocol_sha256"],
        "trial_number": int(payload["trial_number"]),
        "n_params": result.n_params,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "max_epochs": config.max_epochs,
        "objective_value": result.objective_value,
        "val_auc": result.metrics["val_auc"],
        "val_loss": result.metrics["val_loss"],
        "test_auc": test["test_auc"],
        "test_pr_auc": test["test_pr_auc"],
        "test_loss": test["test_loss"],
        "test_positions": positions.tolist(),
        "test_predictions": np.asarray(result.test_predictions, dtype=np.float64).tolist(),
        "epochs": [e.to_dict() for e in result.epochs],
        "metrics": {**result.metrics, **test, **result.values_used, "architecture": asdict(config.architecture)},
        "duration_s": time.monotonic() - started,
        "device": result.device,
        "worker": worker,
        "item_id": item_id,
        "attempt_id": attempt_id,
        "checkpoint_sha256": checkpoint.sha256,
    }
    statement = insert(evaluation_runs).values(**row)
    keys = ("study_name", "rank", "seed", "fold")
    with engine.begin() as conn:
        conn.execute(statement.on_conflict_do_update(
            index_elements=list(keys),
            set_={k: statement.excluded[k] for k in row if k not in keys} | {"recorded_at": sa.func.now()},
        ))
    return row



def keep_run_checkpoint(engine: sa.Engine, result: Any, config: TrialConfig, samples: Any, spec: StudySpec,
                        payload: dict[str, Any], storage: Any) -> Any:
    """The run's best-epoch weights as a checkpoint, listed under its Optuna study (optuna-dashboard shows it)."""
    from worker.checkpoints import keep_checkpoint  # torch, like worker.train

    opened = storage is None  # a run outside a worker (tests, scripts) opens and closes its own
    storage = storage or optuna_adapter.open_storage(engine.url.render_as_string(hide_password=False))
    try:
        study = optuna.load_study(study_name=spec.name, storage=storage)
        return keep_checkpoint(engine, result, config, samples, spec.dataset, attach_to=study,
                               filename=f"{spec.name}-rank{payload['rank']}-seed{payload['seed']}.pt")
    finally:
        if opened:
            storage.engine.dispose()


@register(EVALUATION)
def run_evaluation(context: WorkerContext, item: ClaimedItem) -> Outcome:
    """One attempt of one evaluation run (the ledger does the claim, heartbeats, reaping, retries)."""
    from worker.train import TrialFailed, TrialInterrupted

    if context.synthetic is not None:
        return Outcome("FAIL", reason="evaluation runs train for real: `worker --synthetic` cannot run them")
    try:
        row = evaluate_run(
            context.engine, item.payload, device=context.device, should_stop=context.should_stop, on_step=context.progress,
            worker=getattr(getattr(context, "options", None), "worker_id", None), item_id=item.item_id,
            attempt_id=item.attempt_id, samples_for=context.samples_for, storage=context.storage,
        )
    except (EvaluationRefused, DatasetChanged, TrialFailed, UserError) as exc:  # UserError: e.g. the artifact store refused the checkpoint
        return Outcome("FAIL", reason=str(exc))
    except TrialInterrupted:
        return Outcome("STOPPED", reason="worker stopped")
    except optuna.TrialPruned as exc:  # diverged or collapsed with this seed: recorded, not retried
        return Outcome("FAIL", reason=f"evaluation run {exc}")
    # The ledger's value is the run's validation objective (as for a trial); test metrics are in evaluation_runs.
    return Outcome("COMPLETE", value=row["objective_value"],
                   details={"best_epoch": row["best_epoch"], "epochs_run": row["epochs_run"], "test_auc": row["test_auc"], "fold": row["fold"]})
