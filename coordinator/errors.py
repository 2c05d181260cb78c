"""One exception type for everything a user can get wrong.

The CLI turns a UserError into a single line on stderr and a non-zero exit, never a traceback.
Raise it for bad input (files, flags, names) and unreachable services; let real bugs raise anything else.
"""

from __future__ import annotations

import importlib.util
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import typer


class UserError(Exception):
    """A problem the user can fix; its message is shown as-is on one line."""

    exit_code = 2


def first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


INTERRUPTED_EXIT = 130  # the shell's code for "stopped by Ctrl-C"


class CtrlC:
    """Remembers a Ctrl-C (SIGINT) while still raising KeyboardInterrupt where the program is.

    Typer turns a KeyboardInterrupt into a plain exit code 130 that a caller cannot tell from a
    command's own exit, and code in between may catch it; the remembered flag still says
    "interrupted". A SIGINT the parent chose to ignore (nohup, `&`) stays ignored.
    """

    def __init__(self) -> None:
        self.seen = False
        self.previous: Any = None

    def __enter__(self) -> CtrlC:
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self.previous = signal.signal(signal.SIGINT, self.handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def handle(self, signum: int, frame: object) -> None:
        self.seen = True
        raise KeyboardInterrupt


def run_app(typer_app: typer.Typer, prog_name: str, argv: list[str] | None = None) -> None:
    """Run a Typer app with one-line user errors; shared by the `coordinator` and `worker` entry points."""
    with CtrlC() as ctrl_c:
        run_command(typer.main.get_command(typer_app), prog_name, argv, ctrl_c)


def run_command(command: Any, prog_name: str, argv: list[str] | None, ctrl_c: CtrlC) -> NoReturn:
    try:
        result: Any = command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except UserError as exc:
        if ctrl_c.seen:  # e.g. a query cancelled by the Ctrl-C, reported as a database error
            interrupted()
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:
        interrupted()
    except typer.TyperException as exc:  # bad flags, missing arguments
        print(f"error: {exc.format_message()} (see `{prog_name} --help`)", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as exc:
        if ctrl_c.seen:
            interrupted()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        interrupted()
    if ctrl_c.seen:
        interrupted()
    sys.exit(result if isinstance(result, int) else 0)


def guarded(load: Callable[[], Callable[[], None]]) -> None:
    """A console script's start: import its CLI with `load`, then run it. Importing takes seconds
    (SQLAlchemy, pandas, Optuna); a Ctrl-C in that time ends like one later, not in a traceback."""
    try:
        cli_main = load()
    except KeyboardInterrupt:
        interrupted()
    cli_main()


def interrupted() -> NoReturn:
    """Ctrl-C: one line, the shell's exit code for SIGINT, never a traceback."""
    print("interrupted", file=sys.stderr)
    sys.exit(INTERRUPTED_EXIT)


def require_extra(module: str, extra: str, what: str) -> None:
    """One line naming the extra to install when an optional dependency is missing."""
    if importlib.util.find_spec(module) is None:
        raise UserError(f"{what} needs the '{extra}' extra: pip install 'scalesweep[{extra}]'")
