"""What a worker does with a claimed item, by kind: a small registry (kind -> executor).

    @register("evaluation")
    def evaluate(context: WorkerContext, item: ClaimedItem) -> Outcome: ...

An executor runs one attempt of one item and returns its Outcome; the worker loop does the rest
(claim, heartbeats, finishing the attempt, retries). It must call `context.progress(n)` as it
advances (the stall detector watches that counter) and return promptly once `context.should_stop()`
is true (Outcome state STOPPED). Exceptions other than the ones below become FAIL with the error.
`search` (an Optuna trial: train, or sleep with `worker --synthetic`) lives in worker/search.py;
worker/loop.py imports the modules that register executors, with plain imports.
Store results of other kinds in your own tables keyed by `item.item_id` / `item.attempt_id`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa

from coordinator.lifecycle.claims import ClaimedItem


@dataclass
class Outcome:
    state: str  # COMPLETE | PRUNED | FAIL | STOPPED (failed and retried)
    value: float | None = None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class WorkerContext(Protocol):
    """What an executor may use of the worker running it."""

    engine: sa.Engine
    storage: Any  # Optuna's storage on the same database (artifacts are listed under its studies and trials)
    device: str  # cpu | cuda | synthetic
    synthetic: float | None  # seconds per item in `worker --synthetic`, else None
    synthetic_stall: bool  # `worker --synthetic-stall`: synthetic items never advance (tests the stall detector)
    synthetic_epochs: int  # `worker --synthetic-epochs`: epochs a synthetic search trial reports to the pruner

    def should_stop(self) -> bool: ...

    def progress(self, steps: int) -> None: ...

    def samples_for(self, spec: Any) -> Any: ...


Executor = Callable[[WorkerContext, ClaimedItem], Outcome]

EXECUTORS: dict[str, Executor] = {}


def register(kind: str) -> Callable[[Executor], Executor]:
    def add(executor: Executor) -> Executor:
        EXECUTORS[kind] = executor
        return executor

    return add
