"""Claiming work: one transaction takes a waiting item, starts its attempt and writes everything known.

    BEGIN
      studies with a waiting item (claim_candidates)      -> the study furthest behind goes first
      search only: the study's row lock (SKIP LOCKED;     -> one ask at a time per study
        if every study is busy: wait, at most 2 s)
      the lowest waiting slot (FOR UPDATE SKIP LOCKED)    -> no two claims take one item
      search only: Optuna ask (+ enqueue_trial for fixed or retried params)
      INSERT attempt (worker, host, device, seed, trial number, limits), item -> running
    COMMIT
    search only: suggest (sampling), then the attempt's params, architecture and n_params

Every lock is a row lock, which a role with SELECT only cannot take; a claim skips locked rows and
waits for one at most LOCK_WAIT_MS. Target counts are exact because each slot is a row claimed by one attempt at a
time. An Optuna trial asked by a claim that died before COMMIT is closed by the reaper.

API for every kind of work (stable): `claim_next(...) -> ClaimedItem | BUSY | None`, then
`heartbeat(engine, attempt_id, progress)` while it runs, then coordinator.lifecycle.outcomes.finish.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
import sqlalchemy as sa

from coordinator.lifecycle import optuna_adapter
from coordinator.lifecycle.ledger import SEARCH
from coordinator.lifecycle.queries import query
from coordinator.store import tables
from coordinator.studies.search_space import SearchSpace, suggest
from coordinator.studies.spec import StudySpec, claim_seed


@dataclass(frozen=True)
class StudyEntry:
    name: str
    spec: StudySpec


def load_studies(engine: sa.Engine, pattern: str | None = None) -> list[StudyEntry]:
    """The studies created by `create-studies` whose names match the glob, or any of several
    comma-separated globs (all studies when None)."""
    globs = [g.strip() for g in pattern.split(",") if g.strip()] if pattern else ["*"]
    t = tables.study_specs
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.study_name, t.c.spec).order_by(t.c.study_name)).all()
    return [StudyEntry(row.study_name, StudySpec.from_dict(row.spec)) for row in rows if any(fnmatch.fnmatchcase(row.study_name, g) for g in globs)]


@dataclass(frozen=True)
class Progress:
    """One (kind, study)'s counts from the work_counts view (the slot rule)."""

    target: int = 0  # slots: items that count towards the target
    waiting: int = 0
    running: int = 0
    finished: int = 0
    claims: int = 0  # attempts ever started

    @property
    def has_room(self) -> bool:
        return self.waiting > 0

    @property
    def done(self) -> bool:
        return self.running == 0 and self.waiting == 0

    @property
    def share(self) -> float:
        """Fair-progress key: the study with the smallest share of its target under way goes first."""
        return (self.finished + self.running) / self.target if self.target else 1.0


def read_progress(conn: sa.Connection, names: list[str], kinds: list[str] = [SEARCH]) -> dict[tuple[str, str], Progress]:  # noqa: B006
    """(kind, study) -> Progress for every requested pair (zeros where a study has no such item)."""
    found = {(r.kind, r.study_name): r for r in conn.execute(query("work_counts"), {"names": names, "kinds": kinds})}
    out = {}
    for kind in kinds:
        for name in names:
            r = found.get((kind, name))
            out[(kind, name)] = Progress(r.slots, r.waiting, r.running, r.finished, r.claims) if r else Progress()
    return out


@dataclass(frozen=True)
class Who:
    """Provenance written on every attempt at its claim."""

    worker: str
    host: str
    device: str
    code_version: str
    synthetic: bool = False


@dataclass
class ClaimedItem:
    """A claimed unit of work. For kind `search`: the Optuna trial and its sampled config too."""

    kind: str
    study: StudyEntry
    item_id: int
    slot: int
    attempt_id: int
    attempt: int
    payload: dict[str, Any]
    trial_number: int | None = None
    trial_id: int | None = None  # Optuna's, for trial_records and trial_epochs
    sampler_seed: int | None = None
    trial: Any = None  # optuna.Trial (search)
    optuna_study: Any = None  # optuna.Study (search)
    config: Any = None  # coordinator.studies.search_space.TrialConfig (search)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        which = f"#{self.trial_number}" if self.trial_number is not None else f"slot {self.slot}"
        return f"{self.study.name} {which}" if self.kind == SEARCH else f"{self.kind} {self.study.name} {which}"


class Busy:
    """Every study with room had its claim lock taken by another claim just now: try again soon."""


BUSY = Busy()


LOCK_WAIT_MS = 2000  # the longest a claim waits for a study's claim lock (then BUSY: stop flags are checked)


def claim_next(
    engine: sa.Engine,
    storage: optuna_adapter.Storage | None,
    entries: list[StudyEntry],
    who: Who,
    kinds: list[str] = [SEARCH],  # noqa: B006
) -> ClaimedItem | Busy | None:
    """Claim one item of the (kind, study) furthest behind its target; None when nothing waits.

    First pass: every candidate with SKIP LOCKED (never waits). If all were being claimed, wait on
    the first one's lock for at most LOCK_WAIT_MS, queued by PostgreSQL rather than polling.
    """
    claimed = claim_item(engine, storage, entries, who, kinds)
    if isinstance(claimed, ClaimedItem) and claimed.kind == SEARCH:
        describe(engine, claimed)
    return claimed


def claim_item(
    engine: sa.Engine, storage: optuna_adapter.Storage | None, entries: list[StudyEntry], who: Who, kinds: list[str]
) -> ClaimedItem | Busy | None:
    """The claim's transaction (see the module doc)."""
    by_name = {e.name: e for e in entries}
    try:
        with engine.begin() as conn:
            candidates = [(r.kind, r.study_name) for r in conn.execute(query("claim_candidates"), {"names": list(by_name), "kinds": kinds})]
            if not candidates:
                return None
            for kind, name in candidates:
                if kind == SEARCH and conn.execute(query("claim_lock_study"), {"study_name": name}).first() is None:
                    continue
                item = conn.execute(query("claim_item"), {"kind": kind, "study_name": name}).first()
                if item is not None:
                    return start(conn, storage, by_name[name], kind, item, who)
            kind, name = candidates[0]
            if kind != SEARCH:
                return BUSY  # its items are held by claims that have not committed yet
            conn.execute(sa.text(f"SET LOCAL lock_timeout = '{LOCK_WAIT_MS}ms'"))
            conn.execute(query("claim_wait_study"), {"study_name": name})
            item = conn.execute(query("claim_item"), {"kind": kind, "study_name": name}).first()
            return start(conn, storage, by_name[name], kind, item, who) if item is not None else BUSY
    except sa.exc.OperationalError as exc:
        if isinstance(exc.orig, psycopg.errors.LockNotAvailable):
            return BUSY
        raise


def start(conn: sa.Connection, storage: optuna_adapter.Storage | None, entry: StudyEntry, kind: str, item: sa.Row, who: Who) -> ClaimedItem:
    spec = entry.spec
    attempt = item.attempts_made + 1
    claimed = ClaimedItem(kind, entry, item.item_id, item.slot, 0, attempt, dict(item.payload))
    values: dict[str, Any] = {"trial_number": None, "sampler_seed": None}
    if kind == SEARCH:
        assert storage is not None, "search items need the Optuna storage"
        seed = claim_seed(spec.sampler.seed, entry.name, item.slot, attempt)
        study = optuna_adapter.load_study(storage, spec, seed)
        trial = optuna_adapter.ask(study, claimed.payload.get("params"))
        claimed.trial, claimed.optuna_study = trial, study
        claimed.trial_number, claimed.sampler_seed = trial.number, seed
        values.update(trial_number=trial.number, sampler_seed=seed)
    row = conn.execute(
        query("start_attempt"),
        {
            **values,
            "item_id": item.item_id,
            "attempt": attempt,
            "study_name": entry.name,
            "worker": who.worker,
            "host": who.host,
            "device": who.device,
            "code_version": who.code_version,
            "synthetic": who.synthetic,
            "stall_timeout_s": spec.limits.stall_timeout_s,
            "time_limit_s": spec.limits.time_limit_s,
        },
    ).one()
    claimed.attempt_id, claimed.trial_id = row.attempt_id, row.trial_id
    return claimed


def describe(engine: sa.Engine, claimed: ClaimedItem) -> None:
    """Sample the claimed trial's config (after COMMIT: the study's claim lock covers only the ask)
    and write its parameters, architecture and exact parameter count on the attempt."""
    config = suggest(claimed.trial, SearchSpace.from_dict(claimed.study.spec.search_space))
    claimed.config = config
    arch = config.architecture
    with engine.begin() as conn:
        conn.execute(
            query("describe_attempt"),
            {
                "attempt_id": claimed.attempt_id,
                "params": json.dumps(claimed.trial.params),
                "architecture": json.dumps(asdict(arch)),
                "n_params": arch.n_params,
            },
        )


def heartbeat(engine: sa.Engine, attempt_id: int, progress: int) -> bool:
    """Beat for a running attempt with its progress counter; False when it is no longer running (reaped)."""
    with engine.begin() as conn:
        return conn.execute(query("heartbeat"), {"attempt_id": attempt_id, "progress": progress}).first() is not None
