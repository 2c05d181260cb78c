"""Surviving dropped connections and database restarts: back off and retry idempotent steps."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
import sqlalchemy as sa

from coordinator.errors import UserError, first_line
from coordinator.lifecycle.settings import ENV_DB_RETRY, env_int

log = logging.getLogger("scalesweep")

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
    on_reconnect: Callable[[], None] | None = None,
) -> T:
    """Run `action`; on a connection error back off (0.5 s doubling to 15 s) and retry, up to `budget_s`.

    Only for actions that are safe to repeat: claims re-check under row locks, records are upserts,
    and finishing an attempt is conditional on it still running. `on_reconnect` runs once the
    database answers again, before the action is retried (a worker re-asserts its heartbeat there).
    """
    budget = budget_s if budget_s is not None else float(env_int(ENV_DB_RETRY, 300))
    deadline = time.monotonic() + budget
    delay = 0.5
    failed = False
    while True:
        try:
            if failed and on_reconnect is not None:
                on_reconnect()
            return action()
        except Exception as exc:
            cause = connection_error(exc)
            if cause is None:
                raise
            failed = True
            if time.monotonic() + delay > deadline:
                raise DatabaseUnavailable(
                    f"database unreachable for over {budget:.0f} s while trying to {what}: {first_line(cause)}"
                ) from None
            log.warning("database connection lost while trying to %s (%s); retrying in %.1f s", what, first_line(cause), delay)
            sleep(delay)
            delay = min(delay * 2, 15.0)
