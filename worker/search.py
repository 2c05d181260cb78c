"""The `search` executor: one attempt of an Optuna trial (sampled at the claim), trained or synthetic.

Training reports every optimizer step to the worker's progress counter (the stall detector) and
every epoch to trial_epochs, the log and Optuna's pruner. `worker --synthetic S` sleeps S seconds
instead (in `--synthetic-epochs` epochs, each reported like a trained one), ticking the counter ten
times a second (`--synthetic-stall`: never ticking, to exercise the stall detector), and never
imports torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from coordinator.errors import UserError
from coordinator.lifecycle import optuna_adapter, outcomes
from coordinator.lifecycle.claims import ClaimedItem
from coordinator.lifecycle.ledger import SEARCH
from coordinator.lifecycle.reconnect import with_reconnect
from coordinator.studies.search_space import SearchSpace
from worker.executors import Outcome, WorkerContext, register

log = logging.getLogger("scalesweep")


class Stopped(Exception):
    """The worker was asked to stop (or its attempt was reaped) in the middle of a trial."""


@register(SEARCH)
def run_search(context: WorkerContext, item: ClaimedItem) -> Outcome:
    """Build and train the sampled trial, then describe it to Optuna (count, architecture, metrics)."""
    outcome = search_outcome(context, item)
    with_reconnect(lambda: optuna_adapter.describe_trial(item.trial, outcome.details), f"describe trial {item.label}")
    return outcome


def search_outcome(context: WorkerContext, item: ClaimedItem) -> Outcome:
    """Every way a search trial can end becomes an Outcome."""
    spec = item.study.spec
    config = item.config
    space = SearchSpace.from_dict(spec.search_space)
    n_params = config.architecture.n_params
    details: dict[str, Any] = dict(n_params=n_params, **asdict(config.architecture), **config.training_values())
    try:
        if not space.within_budget(n_params):  # checked before any tensor exists
            return Outcome("FAIL", reason=f"{n_params} parameters, outside {spec.budget.label} ±{space.tolerance:.0%}", details=details)
        if context.synthetic is not None:
            return synthetic(context, item, details)
        return train(context, item, context.samples_for(spec), details)
    except optuna_adapter.TrialPruned as exc:
        return Outcome("PRUNED", reason=str(exc) or "pruned", details=details)
    except UserError as exc:
        return Outcome("FAIL", reason=str(exc), details=details)
    except Stopped:
        return Outcome("STOPPED", reason="worker stopped", details=details)


def train(context: WorkerContext, item: ClaimedItem, samples: Any, details: dict[str, Any]) -> Outcome:
    from worker.train import TrainOptions, TrialFailed, TrialInterrupted, train

    spec = item.study.spec
    try:
        options = TrainOptions(
            device=context.device,
            objective=spec.objective.metric,
            on_epoch=epoch_reporter(context, item),
            on_step=context.progress,
            should_stop=context.should_stop,
            keep_best_state=spec.keep_checkpoints,
        )
        result = train(item.config, samples, options)
    except TrialFailed as exc:
        return Outcome("FAIL", reason=str(exc), details=details)
    except TrialInterrupted:
        return Outcome("STOPPED", reason="worker stopped", details=details)
    if spec.keep_checkpoints:  # the study keeps every COMPLETE trial's weights (create-studies --keep-checkpoints)
        from worker.checkpoints import keep_checkpoint  # torch, like worker.train

        checkpoint = keep_checkpoint(context.engine, result, item.config, samples, spec.dataset, attach_to=item.trial,
                                     filename=f"{spec.name}-trial{item.trial_number}.pt")
        details["checkpoint_sha256"] = checkpoint.sha256
    details.update(
        n_params=result.n_params,
        **result.values_used,
        **result.metrics,
        epochs_run=result.epochs_run,
        best_epoch=result.best_epoch,
        duration_s=result.duration_s,
        samples_per_s=result.samples_per_s,
        peak_memory_mb=result.peak_memory_mb,
        device=result.device,
    )
    return Outcome("COMPLETE", value=result.objective_value, details=details)


def epoch_reporter(context: WorkerContext, item: ClaimedItem, last_epoch: int | None = None) -> Callable[[Any], None]:
    """After each epoch: a trial_epochs row, one log line, the best objective so far for the pruner
    (never asked after `last_epoch`, by default the schedule's max epochs)."""
    spec = item.study.spec
    metric = spec.objective.metric
    reports = optuna_adapter.EpochReports(item.trial, spec.objective.direction, last_epoch or item.config.max_epochs)

    def on_epoch(epoch: Any) -> None:
        values = asdict(epoch)
        with_reconnect(lambda: outcomes.write_epoch(context.engine, item.trial_id, values), "record an epoch")
        log.info(
            "trial %s epoch %d: train loss %.4f, val AUC %.4f, %.1f s/epoch",
            item.label, epoch.epoch, values["train_loss"], values["val_auc"] if values["val_auc"] is not None else float("nan"), values["seconds"],
        )
        value = values[metric]
        if value is None or value != value:  # NaN: nothing to compare; the trainer decides FAIL/PRUNED
            return
        if spec.extra_objectives:  # Optuna takes no intermediate values of multi-objective trials
            return
        if with_reconnect(lambda: reports.epoch(value, epoch.epoch), "report an epoch"):
            raise optuna_adapter.TrialPruned(f"{spec.pruner.kind} pruner at epoch {epoch.epoch}: best {metric} so far {reports.best:.4f}")

    return on_epoch


def synthetic(context: WorkerContext, item: ClaimedItem, details: dict[str, Any]) -> Outcome:
    """Sleep instead of training, epoch by epoch, with a deterministic pseudo-objective: the same
    claim/beat/report path, and the study's pruner sees every epoch (`worker --synthetic-epochs N`)."""
    epochs = max(1, context.synthetic_epochs)
    digest = hashlib.sha256(json.dumps(item.trial.params, sort_keys=True).encode()).digest()
    score = int.from_bytes(digest[:4], "big") / 2**32  # in [0, 1), fixed by the params
    on_epoch = epoch_reporter(context, item, last_epoch=epochs)
    steps = 0
    started_trial = time.monotonic()
    for number in range(1, epochs + 1):
        started = time.monotonic()
        steps = synthetic_sleep(context, float(context.synthetic or 0.0) / epochs, steps)
        # Rises with the epoch to the trial's own level at the last (as with one epoch): trials keep
        # their order at every epoch.
        grown = score * (1 - 0.5**number) / (1 - 0.5**epochs)
        metrics = {"val_auc": 0.5 + 0.2 * grown, "val_loss": 0.7 - 0.1 * grown}
        on_epoch(SyntheticEpoch(number, metrics["val_loss"], metrics["val_loss"], metrics["val_auc"], details.get("learning_rate"), time.monotonic() - started))
    spec = item.study.spec
    details.update(metrics, epochs_run=epochs, best_epoch=epochs, device="synthetic", duration_s=time.monotonic() - started_trial)
    return Outcome("COMPLETE", value=metrics[spec.objective.metric], details=details)


@dataclass
class SyntheticEpoch:
    """The fields of worker.train.EpochMetrics (that module imports torch, which synthetic workers never do)."""

    epoch: int
    train_loss: float
    val_loss: float
    val_auc: float
    learning_rate: float | None
    seconds: float


def synthetic_sleep(context: WorkerContext, seconds: float, steps: int) -> int:
    """Sleep `seconds`, ticking the progress counter ten times a second (unless stalling); returns the count."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if context.should_stop():
            raise Stopped
        time.sleep(min(0.1, max(0.0, seconds - (time.monotonic() - started))))
        if not context.synthetic_stall:
            steps += 1
            context.progress(steps)
    if context.should_stop():
        raise Stopped
    return steps
