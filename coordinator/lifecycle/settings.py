"""Liveness settings: how quickly a lost, stalled or overlong attempt is noticed and retried."""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum

from coordinator.errors import UserError

ENV_HEARTBEAT = "SCALESWEEP_HEARTBEAT_S"
ENV_GRACE = "SCALESWEEP_GRACE_S"
ENV_MAX_RETRY = "SCALESWEEP_MAX_RETRY"
ENV_DB_RETRY = "SCALESWEEP_DB_RETRY_S"


@dataclass(frozen=True)
class Liveness:
    """Heartbeats every `heartbeat_interval` s; an attempt silent for `grace_period` s is lost."""

    heartbeat_interval: int = 5  # seconds between heartbeats of a running attempt (and lease refreshes)
    grace_period: int = 60  # a RUNNING attempt with no heartbeat for this long is failed and retried
    max_retry: int = 2  # an item whose attempts were lost this many times more stays FAIL

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
        return cls.checked(heartbeat, grace, retries)

    @classmethod
    def checked(cls, heartbeat: int, grace: int, retries: int) -> Liveness:
        if heartbeat < 1 or retries < 0:
            raise UserError(f"bad liveness settings: heartbeat {heartbeat} s, max retry {retries} (need heartbeat >= 1, retries >= 0)")
        if grace <= heartbeat:
            raise UserError(
                f"grace period {grace} s is not longer than the heartbeat interval {heartbeat} s: "
                "healthy attempts would be reaped; use a grace period of at least 3 heartbeats"
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


class Device(StrEnum):
    """Where a worker trains: auto takes a leased GPU when one is visible, else the CPU."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
