"""Database URLs: what a user may write, what we pass to SQLAlchemy and libpq, what we print.

The driver is psycopg 3 (`postgresql+psycopg`): `postgresql://` and `postgres://` URLs are accepted
and mapped to it. Passwords never reach a message (`redact`, `describe`).
"""

from __future__ import annotations

import re

from sqlalchemy.engine import make_url

from coordinator.errors import UserError

ENV_URL = "HPO_DATABASE_URL"


def normalise_url(raw: str) -> str:
    """Accept `postgresql://`, `postgres://` and `postgresql+driver://`; always use psycopg 3."""
    try:
        url = make_url(raw)
    except Exception:
        raise UserError(f"bad database URL {redact(raw)!r}: expected postgresql://user@host:port/dbname") from None
    backend = url.get_backend_name()
    if backend not in ("postgresql", "postgres"):
        raise UserError(f"bad database URL {redact(raw)!r}: only PostgreSQL is supported, got {backend!r}")
    if not url.database:
        raise UserError(f"bad database URL {redact(raw)!r}: no database name")
    return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def libpq_url(sa_url: str) -> str:
    """The same URL in the form psql and libpq accept (no `+driver`)."""
    url = make_url(sa_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def redact(url: str) -> str:
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def describe(url: str) -> str:
    u = make_url(url)
    where = u.host or u.query.get("host") or "localhost"
    port = f":{u.port}" if u.port else ""
    return f"{where}{port}/{u.database}"
