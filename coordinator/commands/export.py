"""`coordinator export`: every trial of the chosen studies (the trial_results view) as CSV or parquet.

One row per trial, the view's columns in its order; `metrics` (jsonb) becomes a JSON string so both
formats hold the same thing. Everything is read before the file is written: an error leaves no file.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
import typer

from coordinator.commands.kit import engine_for
from coordinator.errors import UserError
from coordinator.reports.queries import select_studies, study_progress, view_columns
from coordinator.store import engines
from coordinator.studies.datasets import select_dataset_rows


class ExportFormat(StrEnum):
    csv = "csv"
    parquet = "parquet"


def export_command(
    ctx: typer.Context,
    format: Annotated[ExportFormat, typer.Option("--format", help="csv or parquet.")] = ExportFormat.csv,
    out: Annotated[Optional[Path], typer.Option("--out", help="File to write; default for csv: stdout.")] = None,
    studies: Annotated[Optional[str], typer.Option("--studies", help="Only studies matching these globs, comma-separated.")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="NAME[:VERSION], or all; required when the studies use several datasets.")] = None,
) -> None:
    """Trial results (every state, every metric) for pandas, R or a spreadsheet."""
    if format == ExportFormat.parquet and out is None:
        raise UserError("--format parquet needs --out FILE")
    if out is not None and out.is_dir():
        raise UserError(f"--out {out} is a folder, not a file")
    with engine_for(ctx) as engine:
        rows = engines.read_rows(engine, "SELECT * FROM trial_results ORDER BY study_name, trial_number")
        columns = view_columns(engine, "trial_results")
        chosen_names = {r["study_name"] for r in select_studies(study_progress(engine), studies)}
    rows = select_dataset_rows([r for r in rows if r["study_name"] in chosen_names], dataset, explicit_studies=studies is not None)
    frame = pd.DataFrame(rows, columns=columns)
    if "metrics" in frame:
        frame["metrics"] = [None if m is None else json.dumps(m, sort_keys=True) for m in frame["metrics"]]
    try:
        if format == ExportFormat.parquet:
            frame.to_parquet(out, index=False)
        else:
            frame.to_csv(out if out is not None else sys.stdout, index=False)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    if out is not None:
        typer.echo(f"exported {len(frame)} trials to {out}", err=True)
