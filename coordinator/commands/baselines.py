"""`coordinator baselines`: fit, store and print the baselines of a dataset version per horizon."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from coordinator.commands.kit import OutputFormat, engine_for, progress_bar
from coordinator.commands.studies import parse_horizons
from coordinator.data.registry import load_dataset
from coordinator.data.samples import make_samples
from coordinator.data.splits import default_splits
from coordinator.errors import UserError
from coordinator.evaluation.baselines import fit_baselines
from coordinator.studies.datasets import resolve_dataset
from coordinator.studies.presets import MAX_HORIZON

BASELINE_COLUMNS = ("model", "n_train", "n_val", "n_test", "val_auc", "val_pr_auc", "val_loss", "test_auc")


def baselines_command(
    ctx: typer.Context,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="NAME[:VERSION]; required when several datasets are registered.")] = None,
    horizons: Annotated[str, typer.Option("--horizons", help="comma-separated horizons in trading days")] = "1,3,5",
    format: Annotated[OutputFormat, typer.Option("--format", help="table for people; csv or json for programs.")] = OutputFormat.table,
) -> None:
    """Fit logistic regression and gradient boosting per horizon on the default splits; store and print them."""
    wanted = parse_horizons(horizons) or ()
    bad = [h for h in wanted if not 1 <= h <= MAX_HORIZON]
    if bad:
        raise UserError(f"bad --horizons '{horizons}': horizons must be between 1 and {MAX_HORIZON} trading days")
    with engine_for(ctx) as engine:
        ref = resolve_dataset(engine, dataset)
        data = load_dataset(engine, ref.name, ref.version)
        splits = default_splits(data.frame.index)
        # Every gate runs before anything is written: bad input changes nothing.
        samples = {h: make_samples(data, h, splits) for h in unique_ints(wanted)}
        rows = []
        with progress_bar() as bar:
            task = bar.add_task(f"baselines on {ref}", total=len(samples))
            for h, these in samples.items():
                results = fit_baselines(engine, data, h, these)
                rows += [{"dataset": str(ref), "horizon": h, **{k: r[k] for k in BASELINE_COLUMNS}} for r in results]
                bar.advance(task)
    if format == OutputFormat.json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if format == OutputFormat.csv:
        typer.echo(",".join(["dataset", "horizon", *BASELINE_COLUMNS]))
        for r in rows:
            typer.echo(",".join(str(r[k]) for k in ["dataset", "horizon", *BASELINE_COLUMNS]))
        return
    split_text = ", ".join(f"{name} {start}..{end}" for name, (start, end) in splits.to_dict().items())
    typer.echo(f"dataset {ref}  splits: {split_text}")
    typer.echo(f"{'H':>2} {'model':<20} {'n_train':>7} {'n_val':>5} {'n_test':>6} {'val_auc':>7} {'val_pr_auc':>10} {'val_loss':>8} {'test_auc':>8}")
    for r in rows:
        typer.echo(
            f"{r['horizon']:>2} {r['model']:<20} {r['n_train']:>7} {r['n_val']:>5} {r['n_test']:>6} "
            f"{r['val_auc']:>7.4f} {r['val_pr_auc']:>10.4f} {r['val_loss']:>8.4f} {r['test_auc']:>8.4f}"
        )


def unique_ints(values: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(values))
