"""`coordinator status`, `coordinator leaderboard` and `coordinator report`: the read model for people."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Optional

import sqlalchemy as sa
import typer

from coordinator.commands.kit import OutputFormat, open_engine, path_option
from coordinator.errors import UserError
from coordinator.reports.front import StudyFront, front_table, study_fronts
from coordinator.reports.html import write_report
from coordinator.reports.queries import leaderboard, study_progress, view_columns
from coordinator.reports.columns import terminal_console
from coordinator.reports.terminal import TEST_AUC_COLUMNS, leaderboard_csv, leaderboard_json, leaderboard_table, status_summary, status_table
from coordinator.studies.datasets import select_dataset_rows

StudiesGlob = Annotated[
    Optional[str], typer.Option("--studies", help="Only studies matching these globs, comma-separated: '*-h1,*-h5'.")
]


DatasetOption = Annotated[
    Optional[str],
    typer.Option("--dataset", help="NAME[:VERSION], or all; required when the studies use several datasets."),
]


FormatOption = Annotated[OutputFormat, typer.Option("--format", help="table for people; csv or json for programs.")]


def status_command(ctx: typer.Context, studies: StudiesGlob = None, dataset: DatasetOption = None, format: FormatOption = OutputFormat.table) -> None:
    """Progress per study: target, complete, pruned, failed, running, best, ETA."""
    rows, columns = read_view(ctx, "study_progress", study_progress, studies, dataset)
    if echo_for_programs(rows, columns, format):
        return
    if not rows:
        typer.echo("no studies yet: create them with `coordinator create-studies`")
        return
    out = terminal_console()
    out.print(status_table(rows))
    out.print(status_summary(rows))


def leaderboard_command(ctx: typer.Context, format: FormatOption = OutputFormat.table, studies: StudiesGlob = None, dataset: DatasetOption = None) -> None:
    """The best COMPLETE trial of every study (by the study's own direction)."""
    rows, columns = read_view(ctx, "leaderboard", leaderboard, studies, dataset, tuple(TEST_AUC_COLUMNS))
    if echo_for_programs(rows, columns, format):
        return
    if rows:
        terminal_console().print(leaderboard_table(rows))
        for shown in read_fronts(ctx, {r["study_name"] for r in rows}):  # multi-objective studies: the whole front
            terminal_console().print(front_table(shown))
    else:
        typer.echo("no COMPLETE trial yet")


def read_view(
    ctx: typer.Context, view: str, read: Callable[[sa.Engine, str | None], list[dict[str, Any]]], studies: str | None, dataset: str | None,
    extra_columns: tuple[str, ...] = (),
) -> tuple[list[dict[str, Any]], list[str]]:
    """The view's rows for the chosen studies and dataset, and its columns: everything is read and
    checked before the first line is printed. The dataset is chosen among the selected studies,
    finished or not, so a request that spans datasets is refused before and after the first result."""
    engine = open_engine(ctx)
    try:
        chosen = {r["study_name"] for r in select_dataset_rows(study_progress(engine, studies), dataset)}
        rows = [r for r in read(engine, studies) if r["study_name"] in chosen]
        return rows, view_columns(engine, view) + list(extra_columns)
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


def read_fronts(ctx: typer.Context, names: set[str]) -> list[StudyFront]:
    engine = open_engine(ctx)
    try:
        return study_fronts(engine, names)
    finally:
        engine.dispose()


def report_command(
    ctx: typer.Context,
    out_text: Annotated[str, typer.Option("--out", help="Folder for index.html and the PNG figures.")] = "report",
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="NAME[:VERSION]: the one dataset the report shows; required when studies use several.")] = None,
) -> None:
    """An HTML page with PNG figures: validation AUC vs parameter count per horizon, best architectures."""
    out = path_option(out_text, "--out")
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
