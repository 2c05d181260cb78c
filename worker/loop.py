"""The worker: claim a trial, train it, report it, repeat until every selected study meets its target.

    while not stopped:
        reap lost trials (stale heartbeats)           -> failed, recorded, re-enqueued (capped)
        claim a trial from the study furthest behind  -> exact counts, enforced in PostgreSQL
        train it with heartbeats, report every epoch  -> Optuna intermediate values + trial_epochs
        record the result, tell Optuna               -> trial_records + COMPLETE / PRUNED / FAIL

A background thread beats the running trial's heartbeat and refreshes the GPU lease. SIGTERM or
SIGINT stops the trial at the next batch or epoch boundary; it is failed with reason "worker
stopped", re-enqueued for another worker, and the process exits 0. A dropped or restarting database
is survived by backing off and retrying every database step (see coordinator.trials.with_reconnect).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
import sqlalchemy as sa

from coordinator import trials as lifecycle
from coordinator.errors import UserError
from coordinator.study_spec import StudySpec
from coordinator.trials import Claim, Liveness, StudyEntry, with_reconnect
from coordinator.version import code_version
from worker import leases

log = logging.getLogger("scalesweep")

MAX_UNEXPECTED_ERRORS = 3  # consecutive trials failing with a bug-like error: stop rather than burn the study


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class WorkerOptions:
    url: str
    studies: str | None = None  # glob over study names
    max_trials: int | None = None
    device: str = "auto"  # cpu | cuda | auto
    worker_id: str = field(default_factory=lambda: default_worker_id())
    synthetic: float | None = None  # seconds per trial instead of training
    liveness: Liveness = field(default_factory=Liveness)
    gpu_share: int = 1
    poll_s: float = 1.0  # wait between looks when every study is busy


@dataclass
class Outcome:
    state: str  # COMPLETE | PRUNED | FAIL | STOPPED (failed and retried)
    value: float | None = None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class TrialRefused(Exception):
    """The trial cannot run as specified (e.g. the dataset hash differs from the spec): FAIL, no retry."""


class Stopped(Exception):
    """Raised inside a synthetic trial when the worker is asked to stop."""


class Worker:
    def __init__(self, options: WorkerOptions) -> None:
        self.options = options
        self.stop = threading.Event()
        self.storage: optuna.storages.RDBStorage | None = None
        self.entries: list[StudyEntry] = []
        self.device = "cpu"
        self.lease: leases.Lease | None = None
        self.running_trial: int | None = None  # beaten by the heartbeat thread while set
        self.done_trials = 0
        self.unexpected_errors = 0
        self.last_reap = 0.0
        self.samples_cache: dict[tuple, Any] = {}
        self.datasets_cache: dict[tuple[str, int], Any] = {}

    # ---------------------------------------------------------------- lifecycle

    def run(self) -> int:
        """Returns the exit code: 0 when done or stopped cleanly, 1 after repeated unexpected errors."""
        self.install_signal_handlers()
        from coordinator import db

        db.connect(self.options.url).dispose()  # a bad URL or a dead server: one clear line, now
        self.storage = with_reconnect(lambda: lifecycle.open_storage(self.options.url, self.options.liveness), "open the storage")
        beat = threading.Thread(target=self.heartbeat_loop, name="heartbeat", daemon=True)
        try:
            self.entries = with_reconnect(lambda: lifecycle.load_studies(self.engine, self.options.studies), "load studies")
            if not self.entries:
                which = f"matching {self.options.studies!r}" if self.options.studies else "at all"
                raise UserError(f"no study {which}: create them with `coordinator create-studies`")
            beat.start()
            if not self.choose_device():
                return 0
            log.info("worker %s on %s, code %s, %d studies", self.options.worker_id, self.device, code_version(), len(self.entries))
            return self.loop()
        finally:
            self.stop.set()
            if beat.is_alive():
                beat.join(timeout=5)
            if self.lease is not None:
                try:
                    leases.release(self.engine, self.lease)
                except Exception as exc:  # the lease expires by itself anyway
                    log.warning("could not release the GPU lease: %s", exc)
            self.storage.engine.dispose()

    @property
    def engine(self) -> sa.Engine:
        """One pool for Optuna and our own queries (~2 connections per worker)."""
        assert self.storage is not None
        return self.storage.engine

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: object) -> None:
            if not self.stop.is_set():
                log.warning("%s received: stopping at the next batch or epoch boundary", signal.Signals(signum).name)
            self.stop.set()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)
            signal.signal(signal.SIGINT, handler)

    def loop(self) -> int:
        idle_logged = False
        while not self.stop.is_set():
            if self.options.max_trials is not None and self.done_trials >= self.options.max_trials:
                log.info("finished %d trials (--max-trials)", self.done_trials)
                break
            self.maybe_reap()
            claim = with_reconnect(lambda: lifecycle.claim_next(self.storage, self.entries, self.trial_attrs()), "claim a trial")
            if claim is None:
                if self.all_done():
                    log.info("every selected study has met its target")
                    break
                if not idle_logged:
                    log.info("no trial to claim now; waiting for running trials elsewhere to finish or be reaped")
                    idle_logged = True
                self.stop.wait(self.options.poll_s)
                continue
            idle_logged = False
            self.run_trial(claim)
            if self.unexpected_errors >= MAX_UNEXPECTED_ERRORS:
                log.error("stopping: %d trials in a row failed with unexpected errors (see above)", self.unexpected_errors)
                return 1
        return 0

    def all_done(self) -> bool:
        def read() -> dict[str, lifecycle.Progress]:
            with self.engine.connect() as conn:
                return lifecycle.read_progress(conn, self.entries)

        return all(p.done for p in with_reconnect(read, "read progress").values())

    def maybe_reap(self) -> None:
        """Fail and retry lost trials; at most once per heartbeat interval per worker."""
        now = time.monotonic()
        if now - self.last_reap < self.options.liveness.heartbeat_interval:
            return
        self.last_reap = now
        reaped = with_reconnect(lambda: lifecycle.reap(self.storage, self.entries), "reap lost trials")
        if reaped:
            log.warning("reaped %d lost trial(s)", reaped)

    def trial_attrs(self) -> dict[str, str]:
        """Provenance stored on every trial as it is claimed (Optuna user attributes)."""
        return {
            "worker": self.options.worker_id,
            "host": socket.gethostname(),
            "device": self.lease.describe() if self.lease else self.device,
            "code_version": code_version(),
        }

    # ---------------------------------------------------------------- heartbeats and devices

    def heartbeat_loop(self) -> None:
        interval = self.options.liveness.heartbeat_interval
        failing = False
        while True:
            if self.stop.wait(interval):
                if self.running_trial is None:
                    return
                time.sleep(interval)  # stopping: keep the trial alive until it has been reported
            try:
                trial_id = self.running_trial
                if trial_id is not None:
                    self.storage.record_heartbeat(trial_id)
                if self.lease is not None and not leases.refresh(self.engine, self.lease, ttl_s=self.options.liveness.grace_period):
                    log.error("GPU lease %s was lost (expired and taken by another worker)", self.lease.describe())
                if failing:
                    log.info("heartbeats resumed")
                failing = False
            except Exception as exc:
                if not failing:
                    log.warning("heartbeat failed (%s); retrying every %d s", exc.__class__.__name__, interval)
                failing = True

    def choose_device(self) -> bool:
        """Pick cpu, or lease a GPU and make it the only one CUDA sees. False if stopped while waiting."""
        wanted = self.options.device
        if wanted not in ("cpu", "cuda", "auto"):
            raise UserError(f"unknown device {wanted!r}: choose cpu, cuda or auto")
        if wanted == "cpu" or self.options.synthetic is not None:
            self.device = "cpu" if self.options.synthetic is None else "synthetic"
            return True
        if leases.bound_by_scheduler():
            return self.record_scheduler_binding(wanted)
        gpus = leases.visible_gpus()
        if not gpus:
            if wanted == "cuda":
                raise UserError("--device cuda but no GPU is visible (nvidia-smi / torch find none)")
            self.device = "cpu"
            return True
        waited = False
        while self.lease is None:
            self.lease = with_reconnect(
                lambda: leases.acquire(
                    self.engine, gpus, self.options.worker_id, share=self.options.gpu_share, ttl_s=self.options.liveness.grace_period
                ),
                "lease a GPU",
            )
            if self.lease is None:
                if not waited:
                    log.info("all %d GPU(s) are leased (%d worker(s) each); waiting for one", len(gpus), self.options.gpu_share)
                    waited = True
                if self.stop.wait(self.options.liveness.heartbeat_interval) or self.all_done():
                    return False
        os.environ["CUDA_VISIBLE_DEVICES"] = self.lease.gpu.visible_id  # before anything initialises CUDA
        self.device = "cuda"
        log.info("leased %s", self.lease.describe())
        return True

    def record_scheduler_binding(self, wanted: str) -> bool:
        """A batch system chose the GPUs (CUDA_VISIBLE_DEVICES): use the first as cuda:0 and record it."""
        gpus = leases.scheduler_gpus()
        if not gpus:
            if wanted == "cuda":
                raise UserError("--device cuda but the scheduler bound no GPU (CUDA_VISIBLE_DEVICES is empty)")
            self.device = "cpu"
            return True
        self.lease = with_reconnect(
            lambda: leases.record(self.engine, gpus[0], self.options.worker_id, ttl_s=self.options.liveness.grace_period),
            "record the GPU binding",
        )
        self.device = "cuda"
        log.info("GPU bound by the scheduler (CUDA_VISIBLE_DEVICES=%s): %s", os.environ.get("CUDA_VISIBLE_DEVICES"), self.lease.describe())
        return True

    # ---------------------------------------------------------------- one trial

    def run_trial(self, claim: Claim) -> None:
        self.running_trial = claim.trial_id
        started = time.monotonic()
        log.info("trial %s claimed (sampler seed %d)", claim.label, claim.sampler_seed)
        try:
            # A dropped connection mid-trial re-runs it from the start: sampled params are kept by
            # Optuna, epoch rows are upserts and repeated intermediate values are ignored.
            outcome = with_reconnect(lambda: self.execute(claim), f"run trial {claim.label}")
            self.unexpected_errors = 0
        except lifecycle.DatabaseUnavailable:
            raise
        except Exception as exc:  # a bug or an unforeseen runtime error: FAIL with the reason, keep the fleet alive
            log.error("trial %s raised:\n%s", claim.label, traceback.format_exc())
            outcome = Outcome("FAIL", reason=f"unexpected error: {type(exc).__name__}: {exc}"[:500])
            self.unexpected_errors += 1
        outcome.details.setdefault("duration_s", time.monotonic() - started)
        try:
            with_reconnect(lambda: self.report(claim, outcome), f"report trial {claim.label}")
        finally:
            self.running_trial = None
        self.done_trials += 1
        shown = f" {claim.entry.spec.objective.metric}={outcome.value:.4f}" if outcome.value is not None else ""
        log.info("trial %s %s%s%s", claim.label, outcome.state, shown, f" ({outcome.reason})" if outcome.reason else "")

    def execute(self, claim: Claim) -> Outcome:
        """Build and train the sampled trial; every way it can end becomes an Outcome."""
        from coordinator.search_space import SearchSpace, suggest

        spec = claim.entry.spec
        details: dict[str, Any] = {}
        try:
            space = SearchSpace.from_dict(spec.search_space)
            config = suggest(claim.trial, space)
            n_params = config.architecture.n_params
            details.update(n_params=n_params, **asdict(config.architecture), **config.training_values())
            if not space.within_budget(n_params):  # checked before any tensor exists (SPEC pitfall 9)
                return Outcome("FAIL", reason=f"{n_params} parameters, outside {spec.budget.label} ±{space.tolerance:.0%}", details=details)
            if self.options.synthetic is not None:
                return self.synthetic(claim, details)
            samples = self.samples_for(spec)
            return self.train(claim, config, samples, details)
        except optuna.TrialPruned as exc:
            return Outcome("PRUNED", reason=str(exc) or "pruned", details=details)
        except (TrialRefused, UserError) as exc:
            return Outcome("FAIL", reason=str(exc), details=details)
        except Stopped:
            return Outcome("STOPPED", reason="worker stopped", details=details)

    def train(self, claim: Claim, config: Any, samples: Any, details: dict[str, Any]) -> Outcome:
        from worker.train import TrialFailed, TrialInterrupted, train

        spec = claim.entry.spec
        try:
            result = train(
                config,
                samples,
                device=self.device,
                objective=spec.objective.metric,
                on_epoch=self.epoch_reporter(claim),
                should_stop=self.stop.is_set,
            )
        except TrialFailed as exc:
            return Outcome("FAIL", reason=str(exc), details=details)
        except TrialInterrupted:
            return Outcome("STOPPED", reason="worker stopped", details=details)
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

    def epoch_reporter(self, claim: Claim) -> Callable[[Any], None]:
        """After each epoch: a trial_epochs row, the intermediate value for the pruner, maybe prune."""
        spec = claim.entry.spec
        metric = spec.objective.metric

        def on_epoch(epoch: Any) -> None:
            values = asdict(epoch)
            with_reconnect(lambda: lifecycle.write_epoch(self.engine, claim.trial_id, values), "record an epoch")
            value = values[metric]
            if value is None or value != value:  # NaN: nothing to compare; the trainer decides FAIL/PRUNED
                return
            with_reconnect(lambda: claim.trial.report(value, epoch.epoch), "report an epoch")
            if with_reconnect(claim.trial.should_prune, "ask the pruner"):
                raise optuna.TrialPruned(f"{spec.pruner.kind} pruner at epoch {epoch.epoch}: {metric} {value:.4f}")

        return on_epoch

    def synthetic(self, claim: Claim, details: dict[str, Any]) -> Outcome:
        """Sleep instead of training, then a deterministic pseudo-objective: same claim/beat/report path."""
        seconds = float(self.options.synthetic or 0.0)
        started = time.monotonic()
        if seconds > 0 and self.stop.wait(seconds):
            raise Stopped
        spec = claim.entry.spec
        digest = hashlib.sha256(json.dumps(claim.trial.params, sort_keys=True).encode()).digest()
        score = int.from_bytes(digest[:4], "big") / 2**32  # in [0, 1), fixed by the params
        metrics = {"val_auc": 0.5 + 0.2 * score, "val_loss": 0.7 - 0.1 * score}
        epoch = {"epoch": 1, "train_loss": metrics["val_loss"], "learning_rate": details.get("learning_rate"),
                 "seconds": time.monotonic() - started, **metrics}
        with_reconnect(lambda: lifecycle.write_epoch(self.engine, claim.trial_id, epoch), "record an epoch")
        details.update(metrics, epochs_run=1, best_epoch=1, device="synthetic", duration_s=time.monotonic() - started)
        return Outcome("COMPLETE", value=metrics[spec.objective.metric], details=details)

    def samples_for(self, spec: StudySpec) -> Any:
        """The study's samples, built once per process; refuses a dataset whose hash is not the spec's."""
        from coordinator.data.registry import load_dataset
        from coordinator.data.samples import make_samples
        from coordinator.data.splits import Splits

        ref = spec.dataset
        key = (ref.name, ref.version, spec.horizon, spec.label.threshold, spec.context, json.dumps(spec.splits, sort_keys=True))
        if key in self.samples_cache:
            return self.samples_cache[key]
        dataset = self.datasets_cache.get((ref.name, ref.version))
        if dataset is None:
            dataset = with_reconnect(lambda: load_dataset(self.engine, ref.name, ref.version), "load the dataset")
            self.datasets_cache[(ref.name, ref.version)] = dataset
        if dataset.sha256 != ref.sha256:
            raise TrialRefused(
                f"dataset {ref} has sha256 {dataset.sha256[:12]}… but the study was created on {ref.sha256[:12]}…"
            )
        samples = make_samples(dataset, spec.horizon, Splits.from_dict(spec.splits), context=spec.context, threshold=spec.label.threshold)
        if samples.horizon != spec.horizon:  # SPEC pitfall 1: the horizon must reach the labels
            raise TrialRefused(f"samples were built for horizon {samples.horizon}, the study is h{spec.horizon}")
        self.samples_cache[key] = samples
        return samples

    # ---------------------------------------------------------------- reporting

    def report(self, claim: Claim, outcome: Outcome) -> None:
        """Record first, then tell Optuna: if we die in between, the reaper fails the trial and its
        record is overwritten with the FAIL, so the record always ends up agreeing with Optuna."""
        storage = self.storage
        assert storage is not None
        trial_id = claim.trial_id
        frozen = storage.get_trial(trial_id)
        if frozen.state.is_finished():  # reported by an earlier attempt, or declared lost while we ran
            if frozen.state.name != outcome.state and outcome.state != "STOPPED":
                log.warning("trial %s was already %s; this run's result is dropped", claim.label, frozen.state.name)
            return
        if outcome.state == "STOPPED":
            if storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL):
                lifecycle.retry_callback(storage).record_and_retry(claim.study, storage.get_trial(trial_id), "worker stopped")
            return
        if "n_params" in outcome.details:
            storage.set_trial_user_attr(trial_id, "n_params", int(outcome.details["n_params"]))
        if outcome.reason:
            storage.set_trial_user_attr(trial_id, "reason", outcome.reason)
        if outcome.state == "COMPLETE" and (outcome.value is None or outcome.value != outcome.value):
            outcome = Outcome("FAIL", reason="objective is not a finite number", details=outcome.details)
        frozen = storage.get_trial(trial_id)
        lifecycle.write_record(self.engine, lifecycle.final_record(claim.entry.name, frozen, outcome.state, outcome.reason, outcome.details))
        state = optuna.trial.TrialState[outcome.state]
        told = claim.study.tell(
            claim.trial, outcome.value if state == optuna.trial.TrialState.COMPLETE else None, state=state, skip_if_finished=True
        )
        if told.state != state:  # the reaper got there first: the record must say what Optuna says
            reason = f"declared lost before its result arrived (result was {outcome.state})"
            lifecycle.write_record(self.engine, lifecycle.final_record(claim.entry.name, told, told.state.name, reason, outcome.details))


def configure_logging(worker_id: str) -> None:
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {worker_id} %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
