"""The worker: claim an item, run it, report it, repeat until every selected study meets its target.

    while not stopped:
        claim an item of the study furthest behind        -> one transaction, exact counts (ledger)
        run it with the executor of its kind              -> heartbeats carry its progress counter
        finish the attempt, then tell Optuna              -> ledger, trial_records, Optuna agree

A background thread beats the running attempt's heartbeat (with its step counter), refreshes
the GPU lease, and reaps overdue attempts (lost, stalled, timed out: failed, recorded, re-queued
up to the retry limit), this worker's own included. SIGTERM or SIGINT stops the item at the next batch or epoch boundary; it is failed
with reason "worker stopped", re-queued for another worker, and the process exits 0. An attempt
reaped while it ran (its heartbeat says so) is stopped too, and whatever it reports afterwards is
kept as a late result. A dropped or restarting database is survived by backing off and retrying
every database step (coordinator.lifecycle.reconnect).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from coordinator.data.registry import load_dataset
from coordinator.data.samples import Samples
from coordinator.errors import UserError
from coordinator.lifecycle import claims, optuna_adapter, outcomes, reaper
from coordinator.lifecycle.claims import BUSY, ClaimedItem, StudyEntry
from coordinator.lifecycle.reconnect import DatabaseUnavailable, with_reconnect
from coordinator.lifecycle.settings import Liveness
from coordinator.store import engines
from coordinator.studies.samples import SamplesCache
from coordinator.studies.spec import StudySpec
from coordinator.version import code_version
from worker import leases
from worker.executors import Outcome, load_executors

log = logging.getLogger("scalesweep")

MAX_UNEXPECTED_ERRORS = 3  # consecutive items failing with a bug-like error: stop rather than burn the study
BUSY_WAIT_S = 0.02  # every study with room was being claimed by someone else this instant


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
    synthetic_stall: bool = False  # synthetic trials never advance their step counter
    liveness: Liveness = field(default_factory=Liveness)
    gpu_share: int = 1
    poll_s: float = 1.0  # wait between looks when every study is busy


class StudyRefused(UserError):
    """No selected study can run here (e.g. every dataset hash differs from its spec)."""


class Worker:
    def __init__(self, options: WorkerOptions) -> None:
        self.options = options
        self.stop = threading.Event()
        self.storage: optuna_adapter.Storage | None = None
        self.entries: list[StudyEntry] = []
        self.executors = load_executors()
        self.device = "cpu"
        self.lease: leases.Lease | None = None
        self.running: ClaimedItem | None = None  # beaten by the heartbeat thread while set
        self.steps = 0  # the running attempt's progress counter
        self.lost = threading.Event()  # the running attempt was reaped while it ran
        self.reporting = False  # the main thread is finishing the running attempt (its end is ours, not a reaping)
        self.done_trials = 0
        self.unexpected_errors = 0
        self.samples_cache = SamplesCache(self.dataset)
        self.datasets_cache: dict[tuple[str, int], Any] = {}

    # ---------------------------------------------------------------- what executors see

    @property
    def synthetic(self) -> float | None:
        return self.options.synthetic

    @property
    def synthetic_stall(self) -> bool:
        return self.options.synthetic_stall

    @property
    def engine(self) -> sa.Engine:
        """One pool for Optuna and the ledger (~2 connections per worker)."""
        assert self.storage is not None
        return self.storage.engine

    def should_stop(self) -> bool:
        return self.stop.is_set() or self.lost.is_set()

    def progress(self, steps: int) -> None:
        self.steps = steps

    # ---------------------------------------------------------------- lifecycle

    def run(self) -> int:
        """Returns the exit code: 0 when done or stopped cleanly, 1 after repeated unexpected errors."""
        self.install_signal_handlers()

        engines.connect(self.options.url).dispose()  # a bad URL or a dead server: one clear line, now
        self.storage = with_reconnect(lambda: optuna_adapter.open_storage(self.options.url), "open the storage")
        beat = threading.Thread(target=self.heartbeat_loop, name="heartbeat", daemon=True)
        try:
            self.entries = with_reconnect(lambda: claims.load_studies(self.engine, self.options.studies), "load studies")
            if not self.entries:
                which = f"matching {self.options.studies!r}" if self.options.studies else "at all"
                raise UserError(f"no study {which}: create them with `coordinator create-studies`")
            self.entries = self.runnable(self.entries)
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
            self.engine.dispose()

    def runnable(self, entries: list[StudyEntry]) -> list[StudyEntry]:
        """The studies whose dataset is the one their spec was made on; the others are refused here."""
        if self.options.synthetic is not None:
            return entries
        kept = []
        for entry in entries:
            ref = entry.spec.dataset
            dataset = self.dataset(ref.name, ref.version)
            if dataset.sha256 != ref.sha256:
                log.error(
                    "study %s refused: dataset %s has sha256 %s but the study was created on %s",
                    entry.name, ref, dataset.sha256, ref.sha256,
                )
                continue
            kept.append(entry)
        if not kept:
            raise StudyRefused("no runnable study: every selected study's dataset differs from its spec (see above)")
        return kept

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: object) -> None:
            if not self.stop.is_set():
                log.warning("%s received: stopping at the next batch or epoch boundary", signal.Signals(signum).name)
            self.stop.set()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)
            signal.signal(signal.SIGINT, handler)

    def who(self) -> claims.Who:
        return claims.Who(
            worker=self.options.worker_id,
            host=socket.gethostname(),
            device=self.lease.describe() if self.lease else self.device,
            code_version=code_version(),
            synthetic=self.options.synthetic is not None,
        )

    def loop(self) -> int:
        idle_logged = False
        kinds = sorted(self.executors)
        while not self.stop.is_set():
            if self.options.max_trials is not None and self.done_trials >= self.options.max_trials:
                log.info("finished %d trials (--max-trials)", self.done_trials)
                break
            claimed = with_reconnect(
                lambda: claims.claim_next(self.engine, self.storage, self.entries, self.who(), kinds), "claim a trial"
            )
            if claimed is BUSY:
                self.stop.wait(BUSY_WAIT_S)
                continue
            if claimed is None:
                if self.all_done(kinds):
                    with_reconnect(self.reap, "settle Optuna with the ledger")  # leave nothing half-done behind
                    log.info("every selected study has met its target")
                    break
                if not idle_logged:
                    log.info("nothing to claim now; waiting for running trials elsewhere to finish or be reaped")
                    idle_logged = True
                self.stop.wait(self.options.poll_s)
                continue
            assert isinstance(claimed, ClaimedItem)
            idle_logged = False
            self.run_item(claimed)
            if self.unexpected_errors >= MAX_UNEXPECTED_ERRORS:
                log.error("stopping: %d trials in a row failed with unexpected errors (see above)", self.unexpected_errors)
                return 1
        return 0

    def all_done(self, kinds: list[str]) -> bool:
        def read() -> bool:
            with self.engine.connect() as conn:
                return all(p.done for p in claims.read_progress(conn, [e.name for e in self.entries], kinds).values())

        return with_reconnect(read, "read progress")

    def reap(self) -> None:
        """Fail and retry overdue attempts (this worker's own included: a hung trial is timed out too)."""
        reaped = reaper.reap(self.engine, self.storage, self.entries, self.options.liveness)
        if reaped:
            log.warning("reaped %d attempt(s)", reaped)

    # ---------------------------------------------------------------- heartbeats and devices

    def beat(self) -> None:
        item = self.running
        if item is not None and not claims.heartbeat(self.engine, item.attempt_id, self.steps):
            # No row back: the attempt is no longer RUNNING. That is a reaping only if we have not
            # begun reporting it ourselves and it is still the one we run (the main thread may have
            # finished it, or moved on to the next, while this beat was on its way).
            if self.running is not item or self.reporting:
                return
            if not self.lost.is_set():
                log.warning("trial %s was reaped while it ran (see trial_results.reason); stopping it", item.label)
            self.lost.set()
        if self.lease is not None and not leases.refresh(self.engine, self.lease, ttl_s=self.options.liveness.grace_period):
            log.error("GPU lease %s was lost (expired and taken by another worker)", self.lease.describe())

    def heartbeat_loop(self) -> None:
        """Every heartbeat interval: beat (first: after an outage our own attempt is re-asserted
        before we judge anyone else's), then reap. Runs while the main thread trains."""
        interval = self.options.liveness.heartbeat_interval
        failing = False
        while True:
            if self.stop.wait(interval):
                if self.running is None:
                    return
                time.sleep(interval)  # stopping: keep the attempt alive until it has been reported
            try:
                self.beat()
                if not self.stop.is_set():
                    self.reap()
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
                if self.stop.wait(self.options.liveness.heartbeat_interval) or self.all_done(sorted(self.executors)):
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

    # ---------------------------------------------------------------- one item

    def run_item(self, item: ClaimedItem) -> None:
        self.steps = 0
        self.lost.clear()
        self.reporting = False
        self.running = item
        started = time.monotonic()
        log.info("trial %s claimed (attempt %d, sampler seed %s)", item.label, item.attempt, item.sampler_seed)
        executor = self.executors[item.kind]
        try:
            # A dropped connection mid-item re-runs it from the start: epoch rows are upserts and
            # repeated intermediate values are ignored by Optuna.
            outcome = with_reconnect(lambda: executor(self, item), f"run trial {item.label}")
            self.unexpected_errors = 0
        except DatabaseUnavailable:
            raise
        except Exception as exc:  # a bug or an unforeseen runtime error: FAIL with the reason, keep the fleet alive
            log.error("trial %s raised:\n%s", item.label, traceback.format_exc())
            outcome = Outcome("FAIL", reason=f"unexpected error: {type(exc).__name__}: {exc}"[:500])
            self.unexpected_errors += 1
        outcome.details.setdefault("duration_s", time.monotonic() - started)
        self.reporting = True
        try:
            with_reconnect(lambda: self.report(item, outcome), f"report trial {item.label}", on_reconnect=self.beat)
        finally:
            self.running = None
        self.done_trials += 1

    def report(self, item: ClaimedItem, outcome: Outcome) -> None:
        """Finish the attempt in the ledger (with its record), then tell Optuna the same."""
        state, reason, retry = outcome.state, outcome.reason, False
        if state == "STOPPED":
            state, retry = "FAIL", item.attempt <= self.options.liveness.max_retry
        if state == "COMPLETE" and (outcome.value is None or outcome.value != outcome.value):
            state, reason = "FAIL", "objective is not a finite number"
        finished, row = outcomes.finish(
            self.engine, item.attempt_id, state, value=outcome.value, reason=reason, details=outcome.details, retry=retry
        )
        if not finished.counted:
            log.warning("trial %s: late result (%s) of an attempt already reaped; kept as such, not counted", item.label, outcome.state)
            return
        assert row is not None and self.storage is not None
        outcomes.tell_optuna(self.storage, item.optuna_study, row, state, outcome.value, item.trial)
        shown = f" {item.study.spec.objective.metric}={outcome.value:.4f}" if outcome.value is not None and state == "COMPLETE" else ""
        note = f" ({reason})" if reason else ""
        log.info("trial %s %s%s%s%s", item.label, state, shown, note, "; re-queued" if retry else "")

    # ---------------------------------------------------------------- data

    def dataset(self, name: str, version: int) -> Any:
        key = (name, version)
        if key not in self.datasets_cache:
            self.datasets_cache[key] = with_reconnect(lambda: load_dataset(self.engine, name, version), "load the dataset")
        return self.datasets_cache[key]

    def samples_for(self, spec: StudySpec) -> Samples:
        """The study's samples, built once per process (its dataset was checked against the spec)."""
        return self.samples_cache(spec)


def configure_logging(worker_id: str) -> None:
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {worker_id} %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
