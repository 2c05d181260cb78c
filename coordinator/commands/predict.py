"""`coordinator predict`: per-day probabilities of a study's evaluated answer, for days it never saw.

Needs torch (the `worker` extra), imported only when the models run. The logic is in
coordinator/evaluation/predict.py; this module reads the flags and writes the result.
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from coordinator.commands.kit import engine_for
from coordinator.errors import require_extra
from coordinator.evaluation.predict import output_path, predict, write_predictions


def predict_command(
    ctx: typer.Context,
    study: Annotated[str, typer.Option("--study", help="The evaluated study whose answer predicts.")],
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="NAME[:VERSION] with the study's columns and feature definition "
                                                   "(e.g. a newer import with more days); default: the study's own dataset version.")] = None,
    start: Annotated[Optional[str], typer.Option("--from", help="First day to predict (YYYY-MM-DD); default: the first day after "
                                                 "everything the models saw.")] = None,
    out: Annotated[Optional[str], typer.Option("--out", help="Write to FILE.csv or FILE.parquet; default: CSV on stdout.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="One seed's model instead of the mean over every seed's model.")] = None,
) -> None:
    """Per-day probabilities from a study's evaluated configuration (the mean over its seeds' models),
    with features rebuilt as the study's dataset version defines them, for days the models never saw."""
    require_extra("torch", "worker", "`coordinator predict`")
    path = output_path(out)
    with engine_for(ctx) as engine:
        result = predict(engine, study, dataset=dataset, start=start, seed=seed)
    text = write_predictions(result.frame, path)
    if text is not None:
        sys.stdout.write(text)
    typer.echo(result.summary() + (f" -> {out}" if out else ""), err=True)
