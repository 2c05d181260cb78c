"""Ctrl-C always ends as one line, "interrupted", and exit 130: while the CLI is still being
imported, inside a command, and when something in between swallowed the KeyboardInterrupt."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import typer

from coordinator.errors import run_app
from tests.conftest import REPO


@pytest.fixture(autouse=True)
def shell_ctrl_c() -> Iterator[None]:
    """Ctrl-C as a shell leaves it (earlier tests in the run may have replaced the handler)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def run(command: object, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    app = typer.Typer(add_completion=False)
    app.command()(command)  # type: ignore[arg-type]
    with pytest.raises(SystemExit) as info:
        run_app(app, "probe", [])
    return int(info.value.code), capsys.readouterr().err


def test_ctrl_c_inside_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted_command() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)

    assert run(interrupted_command, capsys) == (130, "interrupted\n")


def test_ctrl_c_swallowed_on_the_way_still_exits_130(capsys: pytest.CaptureFixture[str]) -> None:
    def swallowing_command() -> None:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        except KeyboardInterrupt:
            pass  # a library catching it must not turn Ctrl-C into a run that goes on and exits 0

    assert run(swallowing_command, capsys) == (130, "interrupted\n")


def test_ctrl_c_while_the_cli_is_imported() -> None:
    """The console script's first seconds are imports (here a slow import, made slow on purpose):
    Ctrl-C there is one line too."""
    slow_import = "import time; from coordinator.errors import guarded; guarded(lambda: (time.sleep(30), print)[1])"
    proc = subprocess.Popen([sys.executable, "-c", slow_import], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # the interpreter is up and inside the guard
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (130, "interrupted\n"), err


def test_the_console_scripts_import_their_cli_inside_the_guard() -> None:
    """Nothing heavy is imported before the guard: the launchers load their CLI only inside it."""
    probe = ("import sys, coordinator.launch, worker.launch; "
             "print(sorted(m for m in ('sqlalchemy', 'pandas', 'optuna', 'coordinator.cli', 'worker.cli') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
