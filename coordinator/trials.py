"""The trial lifecycle in PostgreSQL, shared by `worker` and `coordinator reap` (never imports torch).

- **Storage**: Optuna's RDBStorage on the project database, with heartbeats. A RUNNING trial whose
  heartbeat is older than the grace period is failed by whoever reaps next (every worker before it
  claims, and `coordinator reap`) and re-enqueued as a WAITING trial with the same parameters, at most
  `max_retry` times (Optuna's RetryHeartbeatStaleTrialCallback).
- **Claims**: target counts are exact because they are enforced in the database: a claim takes a
  transaction-scoped advisory lock keyed on the study, counts the trials that occupy a slot, and asks
  Optuna for a trial only if a WAITING trial is queued or a slot is free. Crashes release the lock.
- **Records**: every finished trial gets a typed `trial_records` row, every epoch a `trial_epochs` row.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import optuna
import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from coordinator import db, records
from coordinator.errors import UserError
from coordinator.study_spec import StudySpec, claim_seed

log = logging.getLogger("scalesweep")

ENV_HEARTBEAT = "SCALESWEEP_HEARTBEAT_S"
ENV_GRACE = "SCALESWEEP_GRACE_S"
ENV_MAX_RETRY = "SCALESWEEP_MAX_RETRY"
ENV_DB_RETRY = "SCALESWEEP_DB_RETRY_S"

# First key of every advisory lock we take on a study (the second is the study id), so our locks
# cannot collide with anyone else's single-key locks.
CLAIM_LOCK_NAMESPACE = 0x5CA1
CREATE_STUDIES_LOCK_NAMESPACE = 0x5CA3  # serialises `create-studies` runs (0x5CA2: GPU leases)


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna marks heartbeats and the retry callback experimental and warns that heartbeats are meant
    for Study.optimize; we drive heartbeats ourselves around ask/tell, as `optimize` does inside."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        yield

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass(frozen=True)
class Liveness:
    """How quickly a lost worker's trial is noticed and re-run."""

    heartbeat_interval: int = 5  # seconds between heartbeats of a running trial (and lease refreshes)
    grace_period: int = 60  # a RUNNING trial with no heartbeat for this long is failed and retried
    max_retry: int = 2  # a trial lost this many times stays FAIL

    @classmethod
    def from_env(
        cls, heartbeat_interval: int | None = None, grace_period: int | None = None, max_retry: int | None = None
    ) -> Liveness:
        """Flags win over $SCALESWEEP_HEARTBEAT_S / $SCALESWEEP_GRACE_S / $SCALESWEEP_MAX_RETRY."""
        grace_given = grace_period or env_int(ENV_GRACE, 0) or None
        # A short grace period alone implies heartbeats frequent enough to fit in it.
        default_heartbeat = cls.heartbeat_interval if grace_given is None else min(cls.heartbeat_interval, max(1, grace_given // 3))
        heartbeat = heartbeat_interval or env_int(ENV_HEARTBEAT, default_heartbeat)
        grace = grace_given or max(cls.grace_period, 3 * heartbeat)
        retries = max_retry if max_retry is not None else env_int(ENV_MAX_RETRY, cls.max_retry)
        if heartbeat < 1 or grace <= heartbeat or retries < 0:
            raise UserError(
                f"bad liveness settings: heartbeat {heartbeat} s, grace period {grace} s, max retry {retries} "
                "(need heartbeat >= 1 and grace period > heartbeat)"
            )
        return cls(heartbeat, grace, retries)


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"${name} must be an integer, got {raw!r}") from None


# --------------------------------------------------------------------------------------------------
# Storage and the retry of lost trials


class RetryLostTrial:
    """Optuna's retry callback, plus a `trial_records` row saying why the lost run failed.

    Used for trials whose worker vanished (stale heartbeat) and for trials a worker stopped on
    SIGTERM: both are failed, recorded with a reason, and re-enqueued with the same parameters.
    """

    def __init__(self, max_retry: int) -> None:
        with quiet_optuna():
            self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        self.grace_period: int | None = None
        self.engine: sa.Engine | None = None
        self.count = 0

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Called by optuna.storages.fail_stale_trials for every trial it failed."""
        who = trial.user_attrs.get("worker", "unknown worker")
        self.record_and_retry(study, trial, f"lost: no heartbeat for over {self.grace_period} s ({who})")

    def record_and_retry(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, reason: str) -> None:
        assert self.engine is not None
        self.count += 1
        write_record(self.engine, final_record(study.study_name, trial, "FAIL", reason))
        log.warning("trial %s #%d failed (%s); %s", study.study_name, trial.number, reason, self.retry_note(trial))
        fresh = copy.deepcopy(trial)
        fresh.user_attrs = {}  # worker, device, reason... belong to the lost run; the next claim sets its own
        self.retry(study, fresh)

    def retry_note(self, trial: optuna.trial.FrozenTrial) -> str:
        done = len(trial.system_attrs.get("retry_history", [])) + 1
        limit = self.retry._max_retry
        return "re-enqueued" if limit is None or done <= limit else f"not retried (already retried {limit} times)"


def open_storage(url: str, liveness: Liveness) -> optuna.storages.RDBStorage:
    """Optuna storage with heartbeats and the recording retry callback, on a ~2-connection pool.

    The project's own queries (claims, records, leases) use `storage.engine` too, so a worker holds
    one small pool in all.
    """
    callback = RetryLostTrial(liveness.max_retry)
    with quiet_optuna():
        storage = db.optuna_storage(
            url,
            heartbeat_interval=liveness.heartbeat_interval,
            grace_period=liveness.grace_period,
            heartbeat_stale_trial_callback=callback,
        )
    callback.engine = storage.engine
    callback.grace_period = liveness.grace_period
    return storage


def retry_callback(storage: optuna.storages.RDBStorage) -> RetryLostTrial:
    callback = storage.get_heartbeat_stale_trial_callback()
    assert isinstance(callback, RetryLostTrial), "open the storage with coordinator.trials.open_storage"
    return callback


# --------------------------------------------------------------------------------------------------
# Studies and their progress


@dataclass(frozen=True)
class StudyEntry:
    name: str
    study_id: int
    spec: StudySpec


def load_studies(engine: sa.Engine, pattern: str | None = None) -> list[StudyEntry]:
    """The studies created by `create-studies` whose names match the glob, or any of several
    comma-separated globs (all studies when None)."""
    globs = [g.strip() for g in pattern.split(",") if g.strip()] if pattern else ["*"]
    t = records.study_specs
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.study_name, t.c.study_id, t.c.spec).order_by(t.c.study_name)).all()
    return [
        StudyEntry(row.study_name, row.study_id, StudySpec.from_dict(row.spec))
        for row in rows
        if any(fnmatch.fnmatchcase(row.study_name, g) for g in globs)
    ]


@dataclass(frozen=True)
class Progress:
    target: int
    slots: int = 0  # trials that count towards the target: all but FAIL trials superseded by a retry
    waiting: int = 0  # queued (enqueued extremes, retries)
    running: int = 0
    finished: int = 0  # COMPLETE, PRUNED, and FAIL trials that were not retried
    claims: int = 0  # trials that ever left WAITING: a per-claim counter that never repeats

    @property
    def has_room(self) -> bool:
        return self.waiting > 0 or self.slots < self.target

    @property
    def done(self) -> bool:
        return self.finished >= self.target and self.running == 0 and self.waiting == 0

    @property
    def share(self) -> float:
        """Fair-progress key: the study with the smallest share of its target under way goes first."""
        return (self.finished + self.running) / self.target


# Slot counts per study. The rule for a FAIL trial replaced by a retry (its number appears in some
# trial's `retry_history`) is the `trial_slots` view's (sql/20_trial_results.sql), restated here with
# the study filter inside the CTE: through the view PostgreSQL cannot push `study_id = ANY(...)` into
# it, and every claim then parsed every study's retry history (14 ms instead of 1.5 ms per query with
# 100k trials stored). tests/test_views.py checks that both give the same counts.
PROGRESS_SQL = sa.text(
    """
    WITH superseded AS (
        SELECT DISTINCT r.study_id, (jsonb_array_elements_text(a.value_json::jsonb))::int AS number
        FROM trial_system_attributes a JOIN trials r ON r.trial_id = a.trial_id
        WHERE a.key = 'retry_history' AND r.study_id = ANY(:ids)
    )
    SELECT t.study_id,
           count(*) FILTER (WHERE t.state <> 'FAIL' OR s.number IS NULL) AS slots,
           count(*) FILTER (WHERE t.state = 'WAITING') AS waiting,
           count(*) FILTER (WHERE t.state = 'RUNNING') AS running,
           count(*) FILTER (WHERE t.state IN ('COMPLETE', 'PRUNED') OR (t.state = 'FAIL' AND s.number IS NULL))
               AS finished,
           count(*) FILTER (WHERE t.state <> 'WAITING') AS claims
    FROM trials t LEFT JOIN superseded s ON s.study_id = t.study_id AND s.number = t.number
    WHERE t.study_id = ANY(:ids)
    GROUP BY t.study_id
    """
)


def read_progress(conn: sa.Connection, entries: Iterable[StudyEntry]) -> dict[str, Progress]:
    entries = list(entries)
    rows = {row.study_id: row for row in conn.execute(PROGRESS_SQL, {"ids": [e.study_id for e in entries]})}
    out = {}
    for e in entries:
        row = rows.get(e.study_id)
        counts = {k: getattr(row, k) for k in ("slots", "waiting", "running", "finished", "claims")} if row else {}
        out[e.name] = Progress(target=e.spec.target_trials, **counts)
    return out


# --------------------------------------------------------------------------------------------------
# Claiming a trial


@dataclass
class Claim:
    entry: StudyEntry
    study: optuna.Study
    trial: optuna.Trial
    sampler_seed: int

    @property
    def trial_id(self) -> int:
        return self.trial._trial_id

    @property
    def label(self) -> str:
        return f"{self.entry.name} #{self.trial.number}"


def claim_next(
    storage: optuna.storages.RDBStorage, entries: list[StudyEntry], attrs: Mapping[str, Any]
) -> Claim | None:
    """Claim one trial from the study furthest behind its target; None when none has room now."""
    with storage.engine.connect() as conn:
        progress = read_progress(conn, entries)
    candidates = sorted((e for e in entries if progress[e.name].has_room), key=lambda e: (progress[e.name].share, e.name))
    for entry in candidates:
        claim = claim_in(storage, entry, attrs)
        if claim is not None:
            return claim
    return None


def claim_in(storage: optuna.storages.RDBStorage, entry: StudyEntry, attrs: Mapping[str, Any]) -> Claim | None:
    """Ask for a trial in one study, under its claim lock, only if it still has room."""
    with storage.engine.begin() as conn:  # the lock is released when this transaction ends
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:ns, :id)"), {"ns": CLAIM_LOCK_NAMESPACE, "id": entry.study_id})
        progress = read_progress(conn, [entry])[entry.name]
        if not progress.has_room:
            return None
        seed = claim_seed(entry.spec.sampler.seed, entry.name, progress.claims)
        study = optuna.load_study(
            study_name=entry.name,
            storage=storage,
            sampler=entry.spec.make_sampler(seed),
            pruner=entry.spec.make_pruner(),
        )
        with quiet_optuna():
            trial = study.ask()  # commits on the storage's own connection while we still hold the lock
        storage.record_heartbeat(trial._trial_id)  # a trial with no heartbeat row is never reaped
    claim = Claim(entry, study, trial, seed)
    # Provenance outside the claim: retrying these writes must not claim a second trial.
    with_reconnect(lambda: set_user_attrs(storage, claim.trial_id, {**attrs, "sampler_seed": seed}), "label the claimed trial")
    return claim


def set_user_attrs(storage: optuna.storages.RDBStorage, trial_id: int, attrs: Mapping[str, Any]) -> None:
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)


# --------------------------------------------------------------------------------------------------
# Reaping lost trials


# A RUNNING trial that never got its first heartbeat (the worker died between `ask` and the heartbeat,
# or `ask` failed half-way) would be ignored by Optuna forever: give it an already-stale heartbeat.
ADOPT_SQL = sa.text(
    """
    INSERT INTO trial_heartbeats (trial_id, heartbeat)
    SELECT t.trial_id, LOCALTIMESTAMP - make_interval(secs => :grace + 1)
    FROM trials t
    WHERE t.study_id = ANY(:ids) AND t.state = 'RUNNING'
      AND t.datetime_start < (now() AT TIME ZONE 'UTC') - make_interval(secs => 2 * :grace)
      AND NOT EXISTS (SELECT 1 FROM trial_heartbeats h WHERE h.trial_id = t.trial_id)
    """
)

STALE_STUDIES_SQL = sa.text(
    """
    SELECT DISTINCT t.study_id
    FROM trials t JOIN trial_heartbeats h ON h.trial_id = t.trial_id
    WHERE t.study_id = ANY(:ids) AND t.state = 'RUNNING'
      AND h.heartbeat < LOCALTIMESTAMP - make_interval(secs => :grace)
    """
)


def reap(storage: optuna.storages.RDBStorage, entries: list[StudyEntry]) -> int:
    """Fail RUNNING trials whose heartbeat is older than the grace period, and retry them.

    Safe to run from any number of processes at once: Optuna fails each trial exactly once and only
    the process that failed it runs the retry callback. Returns how many trials this call failed.
    """
    callback = retry_callback(storage)
    params = {"ids": [e.study_id for e in entries], "grace": storage.grace_period}
    with storage.engine.begin() as conn:
        conn.execute(ADOPT_SQL, params)
        stale = set(conn.execute(STALE_STUDIES_SQL, params).scalars())
    before = callback.count
    for entry in entries:
        if entry.study_id in stale:
            with quiet_optuna():
                optuna.storages.fail_stale_trials(optuna.load_study(study_name=entry.name, storage=storage))
    return callback.count - before


# --------------------------------------------------------------------------------------------------
# Records


RECORD_COLUMNS = [c.name for c in records.trial_records.columns if c.name not in ("metrics", "recorded_at")]


def final_record(
    study_name: str,
    trial: optuna.trial.FrozenTrial,
    state: str,
    reason: str | None,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A `trial_records` row: known keys of `details` become typed columns; all of it goes in `metrics`.

    Provenance (worker, host, device, code version) comes from the trial's user attributes, set when
    it was claimed, so even a trial whose worker vanished says who ran it.
    """
    flat = {**{k: trial.user_attrs.get(k) for k in ("worker", "host", "device", "code_version")}, **(details or {})}
    row = {name: json_safe(flat.get(name)) for name in RECORD_COLUMNS}
    row.update(trial_id=trial._trial_id, study_name=study_name, trial_number=trial.number, state=state, reason=reason)
    row["metrics"] = json_safe(
        {**(details or {}), "sampler_seed": trial.user_attrs.get("sampler_seed"), "retry_of": trial.system_attrs.get("failed_trial")}
    )
    return row


def write_record(engine: sa.Engine, row: Mapping[str, Any]) -> None:
    """Insert or replace a trial's record (a retried write, or a reaper correcting a late result)."""
    stmt = insert(records.trial_records).values(**row)
    stmt = stmt.on_conflict_do_update(
        index_elements=["trial_id"],
        set_={k: stmt.excluded[k] for k in row if k != "trial_id"} | {"recorded_at": sa.func.now()},
    )
    with engine.begin() as conn:
        conn.execute(stmt)


def write_epoch(engine: sa.Engine, trial_id: int, epoch: Mapping[str, Any]) -> None:
    columns = [c.name for c in records.trial_epochs.columns if c.name not in ("trial_id", "recorded_at")]
    values = {k: json_safe(epoch.get(k)) for k in columns}
    stmt = insert(records.trial_epochs).values(trial_id=trial_id, **values)
    stmt = stmt.on_conflict_do_update(index_elements=["trial_id", "epoch"], set_={k: stmt.excluded[k] for k in values})
    with engine.begin() as conn:
        conn.execute(stmt)


def json_safe(value: Any) -> Any:
    """NaN/inf become NULL (JSON and honest reporting both refuse them); numpy scalars become Python."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.loads(json.dumps(value, default=str))


# --------------------------------------------------------------------------------------------------
# Surviving database restarts and dropped connections

T = TypeVar("T")


def connection_error(exc: BaseException) -> BaseException | None:
    """The error in the cause chain that means 'the connection or server went away', if any."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (sa.exc.OperationalError, sa.exc.InterfaceError, psycopg.OperationalError)):
            return seen
        if isinstance(seen, sa.exc.DBAPIError) and (
            seen.connection_invalidated or isinstance(seen.orig, psycopg.OperationalError)
        ):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def is_connection_error(exc: BaseException) -> bool:
    return connection_error(exc) is not None


class DatabaseUnavailable(UserError):
    """The database stayed unreachable for longer than the reconnect budget."""

    exit_code = 3


def with_reconnect(
    action: Callable[[], T],
    what: str,
    *,
    budget_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `action`; on a connection error back off (0.5 s doubling to 15 s) and retry, up to `budget_s`.

    Only use it for actions that are safe to repeat: every caller here either re-checks state under a
    lock (claims), upserts (records), or tolerates 'already finished' (tell).
    """
    budget = budget_s if budget_s is not None else float(env_int(ENV_DB_RETRY, 300))
    deadline = time.monotonic() + budget
    delay = 0.5
    while True:
        try:
            return action()
        except Exception as exc:
            cause = connection_error(exc)
            if cause is None:
                raise
            if time.monotonic() + delay > deadline:
                raise DatabaseUnavailable(
                    f"database unreachable for over {budget:.0f} s while trying to {what}: {db.first_line(cause)}"
                ) from None
            log.warning("database connection lost while trying to %s (%s); retrying in %.1f s", what, db.first_line(cause), delay)
            sleep(delay)
            delay = min(delay * 2, 15.0)
