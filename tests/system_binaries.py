"""The system programs the default test run uses, the Debian package each comes from, and the
one-line skip reason when one is missing.

A test that runs one of them skips when it is not on PATH (`requires("pgbouncer")`), and `.ci/run`
installs every package listed here (tests/unit/test_system_binaries.py checks both: every program a
test names is listed, and every listed package is installed by `.ci/run`). Only PATH is searched, so
hiding a program is as simple as running the tests with a PATH that lacks its folder; `.ci/run` puts
/usr/sbin (pgbouncer) and PostgreSQL's server folder (initdb, pg_ctl) on PATH.

The slow end-to-end targets (`make e2e-compose`, `make e2e-slurm`) install their own daemons.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from functools import cache

import pytest


@dataclass(frozen=True)
class Program:
    name: str  # the executable, looked up on PATH
    package: str  # what `.ci/run` installs it with: a Debian package, or a script of ours
    used_for: str


APT = "apt"
SCRIPT = "script"
COMPOSE_INSTALLER = "scripts/install_compose.sh"  # bookworm has no Compose v2 package

PROGRAMS = {
    p.name: p
    for p in (
        Program("initdb", "postgresql", "private PostgreSQL servers (TLS, passwords, restarts, stalls)"),
        Program("pg_ctl", "postgresql", "private PostgreSQL servers (TLS, passwords, restarts, stalls)"),
        Program("psql", "postgresql-client", "`db shell` and the embedded server's checks"),
        Program("openssl", "openssl", "throw-away certificates for the TLS tests"),
        Program("pgbouncer", "pgbouncer", "workers through transaction pooling"),
        Program("docker", "docker.io", "`docker compose config` of the stack files"),
        Program("docker-compose", COMPOSE_INSTALLER, "Compose v2 (the `docker compose` plugin)"),
    )
}
# Part of every Debian system (or of the clone itself): never skipped for, never installed.
BASE_SYSTEM = frozenset({"bash", "sh", "git", "runuser", "kill"})


def installer(program: Program) -> str:
    return SCRIPT if program.package.startswith("scripts/") else APT


@cache
def compose_v2() -> bool:
    """`docker compose` (v2, the CLI plugin) answers; the v1 `docker-compose` script does not count."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def missing(*names: str) -> str | None:
    """None when every program is there, else the one-line reason to skip."""
    absent = []
    for name in names:
        program = PROGRAMS[name]  # a KeyError here: list the program above first
        found = compose_v2() if name == "docker-compose" else shutil.which(name) is not None
        if not found:
            absent.append(program)
    if not absent:
        return None
    what = ", ".join(p.name for p in absent)
    apt = " ".join(dict.fromkeys(p.package for p in absent if installer(p) == APT))
    how = "; ".join(([f"apt-get install {apt}"] if apt else []) + [p.package for p in absent if installer(p) == SCRIPT])
    return f"{what} not on PATH (needed for {absent[0].used_for}; {how})"


def requires(*names: str) -> pytest.MarkDecorator:
    """A skip mark for tests that run these programs."""
    reason = missing(*names)
    return pytest.mark.skipif(reason is not None, reason=reason or "")
