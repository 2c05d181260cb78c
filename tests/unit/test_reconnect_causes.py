"""A database error is reported by its real cause first; 'connection lost' only when nothing better is known."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa

from coordinator.lifecycle.outcomes import retry_or_give_up
from coordinator.lifecycle.reconnect import describe_cause


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (psycopg.errors.DiskFull('could not extend file "base/16384/2619": No space left on device'), "disk is full"),
        (psycopg.errors.TooManyConnections("sorry, too many clients already"), "too many clients"),
        (psycopg.errors.OutOfMemory("out of shared memory"), "out of shared memory"),
        # A refused connection carries the server's FATAL line but no SQLSTATE.
        (psycopg.OperationalError('connection failed: FATAL:  sorry, too many clients already'), "too many clients"),
        (psycopg.OperationalError("connection failed: FATAL:  the database system is starting up"), "starting up"),
        (psycopg.OperationalError("server closed the connection unexpectedly"), "database connection lost"),
    ],
)
def test_the_real_cause_comes_first(error: Exception, cause: str) -> None:
    wrapped = sa.exc.OperationalError("SELECT 1", {}, error)
    assert cause in describe_cause(wrapped)
    assert cause in describe_cause(error)


def test_the_stored_reason_says_when_retries_ran_out() -> None:
    assert retry_or_give_up("lost: no heartbeat for over 60 s (w1)", attempt=1, max_retry=2) == (True, "lost: no heartbeat for over 60 s (w1)")
    assert retry_or_give_up("lost: no heartbeat for over 60 s (w1)", attempt=3, max_retry=2) == (
        False, "lost: no heartbeat for over 60 s (w1); retries exhausted (2 of 2 used)")
    assert retry_or_give_up("worker stopped", attempt=1, max_retry=0) == (False, "worker stopped; no retry allowed (max retry 0)")
