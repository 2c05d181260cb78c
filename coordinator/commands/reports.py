"""`coordinator status`, `coordinator leaderboard` and `coordinator report`: the read model for people."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import sqlalchemy as sa
import typer
from rich.console import Console

from coordinator.commands.kit import OutputFormat, open_engine
from coordinator.errors import UserError
from coordinator.reports.html import write_report
from coordinator.reports.queries import leaderboard, study_progress, view_columns
from coordinator.reports.terminal import leaderboard_csv, leaderboard_json, leaderboard_table, status_summary, status_table
from coordinator.studies.datasets import select_dataset_rows

StudiesGlob = Annotated[
    Optional[str], typer.Option("--studies", help="Only studies matching these globs, comma-separated: '*-h1,*-h5'.")
]


DatasetOption = Annotated[
    Optional[str],
    typer.Option("--dataset", help="NAME[:VERSION], or all; required when the studies use several datasets."),
]


FormatOption = Annotated[OutputFormat, typer.Option("--format", help="table for people; csv or json for programs.")]


def console() -> Console:
    """Rich console; when piped (no terminal to measure) wide enough that tables are not squashed."""
    terminal = Console()
    return terminal if terminal.is_terminal else Console(width=220)


def status_command(ctx: typer.Context, studies: StudiesGlob = None, dataset: DatasetOption = None, format: FormatOption = OutputFormat.table) -> None:
    """Progress per study: target, complete, pruned, failed, running, best, ETA."""
    rows, columns = read_view(ctx, "study_progress", study_progress, studies, dataset)
    if echo_for_programs(rows, columns, format):
        return
    if not rows:
        typer.echo("no studies yet: create them with `coordinator create-studies`")
        return
    out = console()
    out.print(status_table(rows))
    out.print(status_summary(rows))


def leaderboard_command(ctx: typer.Context, format: FormatOption = OutputFormat.table, studies: StudiesGlob = None, dataset: DatasetOption = None) -> None:
    """The best COMPLETE trial of every study (by the study's own direction)."""
    rows, columns = read_view(ctx, "leaderboard", leaderboard, studies, dataset)
    if echo_for_programs(rows, columns, format):
        return
    if rows:
        console().print(leaderboard_table(rows))
    else:
        typer.echo("no COMPLETE trial yet")


def read_view(
    ctx: typer.Context, view: str, read: Callable[[sa.Engine, str | None], list[dict[str, Any]]], studies: str | None, dataset: str | None
) -> tuple[list[dict[str, Any]], list[str]]:
    """The view's rows for the chosen studies and dataset, and its columns: everything is read and
    checked before the first line is printed."""
    engine = open_engine(ctx)
    try:
        rows = select_dataset_rows(read(engine, studies), dataset, explicit_studies=studies is not None)
        return rows, view_columns(engine, view)
    finally:
        engine.dispose()


def echo_for_programs(rows: list[dict[str, Any]], columns: list[str], format: OutputFormat) -> bool:
    """Print csv or json and say so; False for the table format, which each command prints its own way."""
    if format == OutputFormat.csv:
        typer.echo(leaderboard_csv(rows, columns), nl=False)
        return True
    if format == OutputFormat.json:
        typer.echo(leaderboard_json(rows))
        return True
    return False


def report_command(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Folder for index.html and the PNG figures.")] = Path("report"),
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="NAME[:VERSION]: the one dataset the report shows; required when studies use several.")] = None,
) -> None:
    """An HTML page with PNG figures: validation AUC vs parameter count per horizon, best architectures."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    engine = open_engine(ctx)
    try:
        index = write_report(engine, out, dataset)
    except OSError as exc:
        raise UserError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    finally:
        engine.dispose()
    typer.echo(f"report: {index}")
