"""The `search` executor: one attempt of an Optuna trial (sampled at the claim), trained or synthetic.

Training reports every optimizer step to the worker's progress counter (the stall detector) and
every epoch to trial_epochs, the log and Optuna's pruner. `worker --synthetic S` sleeps S seconds
instead, ticking the counter ten times a second (`--synthetic-stall`: never ticking, to exercise the
stall detector), and never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
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
    """Build and train the sampled trial; every way it can end becomes an Outcome."""
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


def epoch_reporter(context: WorkerContext, item: ClaimedItem) -> Callable[[Any], None]:
    """After each epoch: a trial_epochs row, one log line, the intermediate value for the pruner."""
    spec = item.study.spec
    metric = spec.objective.metric

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
        if with_reconnect(lambda: optuna_adapter.report(item.trial, value, epoch.epoch), "report an epoch"):
            raise optuna_adapter.TrialPruned(f"{spec.pruner.kind} pruner at epoch {epoch.epoch}: {metric} {value:.4f}")

    return on_epoch


def synthetic(context: WorkerContext, item: ClaimedItem, details: dict[str, Any]) -> Outcome:
    """Sleep instead of training, then a deterministic pseudo-objective: same claim/beat/report path."""
    seconds = float(context.synthetic or 0.0)
    stall = context.synthetic_stall
    started = time.monotonic()
    steps = 0
    while time.monotonic() - started < seconds:
        if context.should_stop():
            raise Stopped
        time.sleep(min(0.1, max(0.0, seconds - (time.monotonic() - started))))
        if not stall:
            steps += 1
            context.progress(steps)
    if context.should_stop():
        raise Stopped
    spec = item.study.spec
    digest = hashlib.sha256(json.dumps(item.trial.params, sort_keys=True).encode()).digest()
    score = int.from_bytes(digest[:4], "big") / 2**32  # in [0, 1), fixed by the params
    metrics = {"val_auc": 0.5 + 0.2 * score, "val_loss": 0.7 - 0.1 * score}
    epoch = {"epoch": 1, "train_loss": metrics["val_loss"], "learning_rate": details.get("learning_rate"),
             "seconds": time.monotonic() - started, **metrics}
    with_reconnect(lambda: outcomes.write_epoch(context.engine, item.trial_id, epoch), "record an epoch")
    log.info("trial %s epoch 1: train loss %.4f, val AUC %.4f, %.1f s/epoch (synthetic)", item.label, epoch["train_loss"], metrics["val_auc"], epoch["seconds"])
    details.update(metrics, epochs_run=1, best_epoch=1, device="synthetic", duration_s=time.monotonic() - started)
    return Outcome("COMPLETE", value=metrics[spec.objective.metric], details=details)
