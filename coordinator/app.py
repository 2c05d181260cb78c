"""What every command module shares: the CLI grammar, the resolved database URL, one-line errors.

Command modules (data, cluster, studies, reports, local...) import from here, never from
`coordinator.cli`, which only assembles them: no module imports the CLI back.

Global options (`--database-url`, `--version`) are accepted before or after the sub-command:
`GlobalOptionsGroup` moves them to the front before click parses, so `coordinator db init
--database-url URL` and `coordinator --database-url URL db init` mean the same.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn

import sqlalchemy as sa
import typer
from typer.core import TyperGroup

from coordinator import db
from coordinator.errors import UserError

# Options of the root command that take a value, and those that do not.
GLOBAL_VALUE_OPTIONS = ("--database-url",)
GLOBAL_FLAGS = ("--version",)
INTERRUPTED_EXIT = 130  # the shell's code for "stopped by Ctrl-C"


def hoist_global_options(args: list[str]) -> list[str]:
    """Move global options found anywhere before a `--` to the front, keeping their order."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        name = arg.split("=", 1)[0]
        if name in GLOBAL_VALUE_OPTIONS:
            if "=" in arg:
                front.append(arg)
            else:
                front.extend(args[i : i + 2])
                i += 1
        elif arg in GLOBAL_FLAGS:
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


class GlobalOptionsGroup(TyperGroup):
    """The root group: global options may follow the sub-command."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        return super().parse_args(ctx, hoist_global_options(list(args)))


def database_url(ctx: typer.Context) -> str:
    """The resolved URL for this invocation (starts the embedded server when needed)."""
    root_ctx = ctx.find_root()
    return db.resolve_url((root_ctx.obj or {}).get("database_url"))


def open_engine(ctx: typer.Context) -> sa.Engine:
    """A connected engine on this invocation's database; unreachable is a one-line UserError."""
    return db.connect(database_url(ctx))


@contextmanager
def engine_for(ctx: typer.Context) -> Iterator[sa.Engine]:
    engine = open_engine(ctx)
    try:
        yield engine
    finally:
        engine.dispose()


class OutputFormat(StrEnum):
    """How listing commands print: a table for people, csv or json for programs."""

    table = "table"
    csv = "csv"
    json = "json"


class Device(StrEnum):
    """Where a worker trains: auto takes a leased GPU when one is visible, else the CPU."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def path_option(text: str, flag: str) -> Path:
    """A path from the command line; an empty one (an unset shell variable) is refused, never read as '.'."""
    if not text.strip():
        raise UserError(f"{flag} is empty: give a path")
    return Path(text)


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    """'1 worker', '2 workers'."""
    return f"{count} {noun if count == 1 else (plural_noun or noun + 's')}"


def split_globs(text: str | None) -> list[str] | None:
    """'*-h1, *-h5' -> ['*-h1', '*-h5']; None for no filter. An empty list is refused."""
    if text is None:
        return None
    globs = [g.strip() for g in text.split(",") if g.strip()]
    if not globs:
        raise UserError(f"bad --studies '{text}': expected one or more comma-separated globs, e.g. '*-h1,*-h5'")
    return globs


class CtrlC:
    """Remembers a Ctrl-C (SIGINT) while still raising KeyboardInterrupt where the program is.

    Typer turns a KeyboardInterrupt into a plain exit code 130 that a caller cannot tell from a
    command's own exit, and code in between may catch it; the remembered flag still says
    "interrupted". A SIGINT the parent chose to ignore (nohup, `&`) stays ignored.
    """

    def __init__(self) -> None:
        self.seen = False

    def install(self) -> None:
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, self.handle)

    def handle(self, signum: int, frame: object) -> None:
        self.seen = True
        raise KeyboardInterrupt


def run_app(typer_app: typer.Typer, prog_name: str, argv: list[str] | None = None) -> None:
    """Run a Typer app with one-line user errors; shared by the `coordinator` and `worker` entry points."""
    command = typer.main.get_command(typer_app)
    ctrl_c = CtrlC()
    ctrl_c.install()
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


def interrupted() -> NoReturn:
    """Ctrl-C: one line, the shell's exit code for SIGINT, never a traceback."""
    print("interrupted", file=sys.stderr)
    sys.exit(INTERRUPTED_EXIT)


def progress_bar() -> Any:
    """A rich progress display with ETA on stderr (stdout stays clean for tables, csv and json);
    it disappears when done, so only results remain on screen. Only on a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = Console(stderr=True)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,  # logs and pipes get the results, not animation frames
    )


def require_extra(module: str, extra: str, what: str) -> None:
    """One line naming the extra to install when an optional dependency is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UserError(f"{what} needs the '{extra}' extra: pip install 'scalesweep[{extra}]'")
