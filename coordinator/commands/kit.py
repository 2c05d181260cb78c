"""What every command module shares: the CLI grammar, the resolved database URL, one-line errors.

Command modules (data, cluster, studies, reports, local...) import from here, never from
`coordinator.cli`, which only assembles them: no module imports the CLI back.

Global options (`--database-url`, `--version`) are accepted before or after the sub-command:
`GlobalOptionsGroup` moves them to the front before click parses, so `coordinator db init
--database-url URL` and `coordinator --database-url URL db init` mean the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from typer.core import TyperGroup

from coordinator.store import engines

# Options of the root command that take a value, and those that do not.
GLOBAL_VALUE_OPTIONS = ("--database-url",)
GLOBAL_FLAGS = ("--version",)


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
    return engines.resolve_url((root_ctx.obj or {}).get("database_url"))


def open_engine(ctx: typer.Context) -> sa.Engine:
    """A connected engine on this invocation's database; unreachable is a one-line UserError."""
    return engines.connect(database_url(ctx))


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


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    """'1 worker', '2 workers'."""
    return f"{count} {noun if count == 1 else (plural_noun or noun + 's')}"


def progress_bar() -> Any:
    """A rich progress display with ETA on stderr (stdout stays clean for tables, csv and json);
    it disappears when done, so only results remain on screen. Only on a terminal."""
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
