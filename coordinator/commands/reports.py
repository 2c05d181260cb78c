"""`coordinator status`, `coordinator leaderboard` and `coordinator report`: the read model for people."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

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
    engine = open_engine(ctx)
    try:
        rows = select_dataset_rows(study_progress(engine, studies), dataset, explicit_studies=studies is not None)
        columns = view_columns(engine, "study_progress")
    finally:
        engine.dispose()
    # Everything is read and checked before the first line is printed.
    if format == OutputFormat.csv:
        typer.echo(leaderboard_csv(rows, columns), nl=False)
    elif format == OutputFormat.json:
        typer.echo(leaderboard_json(rows))
    elif not rows:
        typer.echo("no studies yet: create them with `coordinator create-studies`")
    else:
        out = console()
        out.print(status_table(rows))
        out.print(status_summary(rows))


def leaderboard_command(ctx: typer.Context, format: FormatOption = OutputFormat.table, studies: StudiesGlob = None, dataset: DatasetOption = None) -> None:
    """The best COMPLETE trial of every study (by the study's own direction)."""
    engine = open_engine(ctx)
    try:
        rows = select_dataset_rows(leaderboard(engine, studies), dataset, explicit_studies=studies is not None)
        columns = view_columns(engine, "leaderboard")
    finally:
        engine.dispose()
    if format == OutputFormat.csv:
        typer.echo(leaderboard_csv(rows, columns), nl=False)
    elif format == OutputFormat.json:
        typer.echo(leaderboard_json(rows))
    elif rows:
        console().print(leaderboard_table(rows))
    else:
        typer.echo("no COMPLETE trial yet")


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
