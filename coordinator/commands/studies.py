"""`coordinator create-studies`, `search-space`, `reap` and `study extend|cancel`.

Everything is checked before anything is written (coordinator.studies.planning); then each new
study is registered (coordinator.lifecycle.registration) and the missing baselines computed.
Running it again with the same spec changes nothing; a different spec under an existing name is
refused: a study's spec is immutable, so make a new study (other seed, dataset version...) instead.
"""

from __future__ import annotations

from typing import Annotated, Optional

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table

from coordinator.commands.kit import database_url, progress_bar
from coordinator.errors import UserError
from coordinator.evaluation import baselines
from coordinator.lifecycle import amendments, claims, optuna_adapter, reaper
from coordinator.lifecycle.registration import create_studies
from coordinator.lifecycle.settings import ENV_HEARTBEAT, Liveness, env_int
from coordinator.store import engines, roles
from coordinator.studies.globs import split_globs
from coordinator.studies.planning import MatrixRequest, PlannedStudy, plan_studies
from coordinator.studies.presets import (
    MAX_TRIALS,
    WARM_START_TOP,
    ObjectiveName,
    PresetName,
    PrunerName,
    preset_named,
    preset_search_space,
)
from coordinator.studies.search_space import CPU_BUDGETS, DEFAULT_BUDGETS, budget_label, feasible_architectures, parse_budget


def compute_missing_baselines(engine: sa.Engine, plans: list[PlannedStudy]) -> list[str]:
    """Baselines (logistic regression, gradient boosting) for each dataset version and horizon, once."""
    done = []
    keyed = {(p.spec.dataset.name, p.spec.dataset.version, p.spec.horizon): p.spec for p in plans}
    with progress_bar() as bar:
        task = bar.add_task("baselines", total=len(keyed))
        for spec in keyed.values():
            if baselines.ensure_baselines(engine, spec)[1]:
                done.append(f"{spec.dataset.name}:{spec.dataset.version} h{spec.horizon}")
            bar.advance(task)
    return done


def print_plan(plans: list[PlannedStudy]) -> None:
    first = plans[0].spec
    table = Table(title=f"studies on dataset {first.dataset} (sha256 {first.dataset.sha256[:12]}…)")
    for column in ("study", "budget", "H", "archs", "enqueued", "target", "val n", "val pos", "status"):
        table.add_column(column, justify="left" if column in ("study", "status") else "right", no_wrap=True)
    for p in plans:
        s = p.spec
        table.add_row(
            s.name,
            s.budget.label,
            str(s.horizon),
            str(p.n_feasible),
            str(len(p.fixed_params)),
            str(s.target_trials),
            str(p.samples["val"]),
            f"{p.val_positive_rate:.1%}",
            p.status,
        )
    Console(width=max(Console().width, 120)).print(table)
    splits = ", ".join(f"{name} {start}..{end}" for name, (start, end) in first.splits.items())
    warm = f"the {len(first.warm_start.trials)} best of '{first.warm_start.source}' and " if first.warm_start else ""
    objectives = ", ".join(f"{o.metric} ({o.direction})" for o in first.objectives)
    typer.echo(
        f"archs: feasible architectures in the budget ±{first.budget.tolerance:.0%}; enqueued: {warm}extreme architectures "
        f"run first.\nobjective {objectives}, sampler {first.sampler.kind} "
        f"seed {first.sampler.seed}, pruner {first.pruner.kind}; splits: {splits}"
    )


def split_csv(text: str | None, option: str = "--budgets") -> tuple[str, ...] | None:
    """'2M, 20M' -> ('2M', '20M'); None when not given; a given list with nothing in it is refused
    (never a silent fall-back to the preset's values)."""
    if text is None:
        return None
    parts = tuple(part.strip() for part in text.split(",") if part.strip())
    if not parts:
        raise UserError(f"bad {option} '{text}': expected a comma-separated list")
    return parts


def parse_horizons(text: str | None) -> tuple[int, ...] | None:
    parts = split_csv(text, "--horizons")
    if parts is None:
        return None
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise UserError(f"bad --horizons '{text}': expected integers such as 1,3,5") from None


def create_studies_command(
    ctx: typer.Context,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="NAME[:VERSION]; required when several datasets are registered.")] = None,
    budgets: Annotated[Optional[str], typer.Option("--budgets", help="Comma-separated parameter budgets, e.g. 2M,20M,200M,2B.")] = None,
    horizons: Annotated[Optional[str], typer.Option("--horizons", help="Comma-separated horizons in trading days, e.g. 1,3,5.")] = None,
    trials: Annotated[Optional[int], typer.Option("--trials", help=f"Target trial count per study (1..{MAX_TRIALS:,}).")] = None,
    objective: Annotated[ObjectiveName, typer.Option("--objective", help="val_auc (maximised) or val_loss (minimised).")] = ObjectiveName.val_auc,
    seed: Annotated[int, typer.Option("--seed", help="Sampler seed (recorded in the spec).")] = 1,
    preset: Annotated[PresetName, typer.Option("--preset", help="default (2M..2B, 50 trials) or smoke (100K/300K on CPU, 3 trials).")] = PresetName.default,
    pruner: Annotated[Optional[PrunerName], typer.Option("--pruner", help="Epochs are the resource. Default: the preset's (default: asha, smoke: median; none with --objectives).")] = None,
    suffix: Annotated[Optional[str], typer.Option("--suffix", help="Appended to the study names (a second matrix beside the first).")] = None,
    objectives: Annotated[Optional[str], typer.Option("--objectives", help="Several objectives, e.g. val_auc,n_params (or s_per_epoch): a Pareto front; pruner none.")] = None,
    warm_start_from: Annotated[Optional[str], typer.Option("--warm-start-from", help="Globs of earlier studies: their best feasible configurations run first.")] = None,
    top: Annotated[Optional[int], typer.Option("--top", help=f"With --warm-start-from: configurations per study (default {WARM_START_TOP}).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan, write nothing.")] = False,
    with_baselines: Annotated[bool, typer.Option("--baselines/--no-baselines", help="Compute missing baselines per horizon.")] = True,
    keep_checkpoints: Annotated[bool, typer.Option("--keep-checkpoints", help="Store every COMPLETE trial's best-epoch weights as a "
                                                   "checkpoint ($SCALESWEEP_ARTIFACTS); recorded in the spec.")] = False,
) -> None:
    """Create the study matrix (budgets x horizons) in PostgreSQL; idempotent, specs are immutable."""
    url = database_url(ctx)
    request = MatrixRequest(
        dataset=dataset,
        budgets=split_csv(budgets),
        horizons=parse_horizons(horizons),
        trials=trials,
        objective=objective.value,
        objectives=split_csv(objectives, "--objectives"),
        seed=seed,
        preset=preset.value,
        pruner=None if pruner is None else pruner.value,
        suffix=suffix,
        warm_start_from=warm_start_from,
        warm_start_top=top,
        keep_checkpoints=keep_checkpoints,
    )
    run_create_studies(url, request, dry_run=dry_run, with_baselines=with_baselines)


def run_create_studies(url: str, request: MatrixRequest, *, dry_run: bool = False, with_baselines: bool = True) -> list[PlannedStudy]:
    engine = engines.connect(url)
    try:
        plans = plan_studies(engine, request)
        print_plan(plans)
        if dry_run:
            typer.echo("dry run: nothing written")
            return plans
        created = create_studies(url, plans)
        unchanged = sum(p.status == "unchanged" for p in plans)
        typer.echo(f"{len(created)} studies created, {unchanged} unchanged, {len(plans) - len(created) - unchanged} created meanwhile by another run")
        if with_baselines:
            for what in compute_missing_baselines(engine, plans):
                typer.echo(f"baselines computed for {what}")
        return plans
    finally:
        engine.dispose()


def reap_command(
    ctx: typer.Context,
    studies: Annotated[Optional[str], typer.Option("--studies", help="Only studies matching this glob (comma-separated globs allowed).")] = None,
    grace_period: Annotated[Optional[int], typer.Option("--grace-period", min=2, help="Seconds without heartbeat; default $SCALESWEEP_GRACE_S or 60.")] = None,
    heartbeat_interval: Annotated[Optional[int], typer.Option("--heartbeat-interval", min=1, help="The workers' heartbeat interval; default $SCALESWEEP_HEARTBEAT_S or 5.")] = None,
) -> None:
    """Fail attempts that are lost (no heartbeat), stalled or over their time limit, and retry them (capped)."""
    if grace_period is not None:
        # The workers beat every $SCALESWEEP_HEARTBEAT_S (default 5 s): a grace period not longer
        # than that would fail healthy attempts.
        heartbeat = heartbeat_interval or env_int(ENV_HEARTBEAT, Liveness.heartbeat_interval)
        liveness = Liveness.checked(heartbeat, grace_period, Liveness.from_env().max_retry)
    else:
        liveness = Liveness.from_env(heartbeat_interval=heartbeat_interval)
    split_globs(studies)  # an empty list of globs is refused before anything runs
    url = database_url(ctx)
    engine = engines.connect(url)
    try:
        roles.require_writer(engine, "reap attempts")
    finally:
        engine.dispose()
    storage = optuna_adapter.open_storage(url)
    try:
        entries = claims.load_studies(storage.engine, studies)
        if not entries:
            raise UserError(f"no study matches {studies!r}" if studies else "no study yet: run `coordinator create-studies`")
        reaped = reaper.reap(storage.engine, storage, entries, liveness)
    finally:
        storage.engine.dispose()
    typer.echo(f"reaped {reaped} attempt(s) in {len(entries)} studies (grace period {liveness.grace_period} s)")


def search_space_command(
    budgets: Annotated[
        str, typer.Option("--budgets", "--budget", help="comma-separated parameter budgets, e.g. 300K,2M")
    ] = ",".join(CPU_BUDGETS + DEFAULT_BUDGETS),
    n_features: Annotated[int, typer.Option("--n-features", min=1, help="model inputs per day (a25: 25, a25-vix8: 33)")] = 25,
    preset: Annotated[PresetName, typer.Option("--preset", help="the create-studies preset (smoke caps the depth)")] = PresetName.default,
    tolerance: Annotated[float, typer.Option("--tolerance", help="relative budget tolerance, between 0 and 1")] = 0.25,
) -> None:
    """Per budget: how many grid architectures lie within the tolerance, and their parameter range."""
    if not 0 < tolerance < 1:
        raise UserError(f"--tolerance must be between 0 and 1 (exclusive), got {tolerance}")
    chosen = preset_named(preset.value)
    lines = []  # everything is computed before the first line is printed
    for label in budgets.split(","):
        budget = parse_budget(label)
        space = preset_search_space(budget, n_features, chosen, tolerance=tolerance)
        archs = feasible_architectures(space)
        counts = [a.n_params for a in archs]
        shapes = {(a.d_model, a.d_ff, a.n_layers) for a in archs}
        widths = [a.d_model for a in archs]
        depths = [a.n_layers for a in archs]
        lines.append(
            f"{budget_label(budget):>7} {len(archs):>8} {len(shapes):>6} "
            f"{min(counts):>14,} {max(counts):>14,} {f'{min(widths)}-{max(widths)}':>11} {f'{min(depths)}-{max(depths)}':>9}"
        )
    typer.echo(f"{'budget':>7} {'feasible':>8} {'shapes':>6} {'min params':>14} {'max params':>14} {'d_model':>11} {'n_layers':>9}")
    for line in lines:
        typer.echo(line)
    typer.echo("feasible: (d_model, d_ff, n_layers, n_heads, RevIN) combinations; shapes: without heads and RevIN")


study_app = typer.Typer(help="Change a study after creation: extend its target, cancel it.", no_args_is_help=True)


@study_app.command("extend")
def extend_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The study's name.")],
    trials: Annotated[int, typer.Option("--trials", min=1, max=MAX_TRIALS, help=f"The new target (more than the current one, at most {MAX_TRIALS:,}).")],
) -> None:
    """Raise a study's target trial count; recorded as an amendment, the spec is unchanged."""
    before, added = amendments.extend(database_url(ctx), name, trials)
    typer.echo(f"study {name}: target {before} -> {trials} ({added} slots added)")


@study_app.command("cancel")
def cancel_command(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The study's name.")]) -> None:
    """Cancel a study's waiting trials (running ones finish); its trials stay queryable."""
    cancelled = amendments.cancel(database_url(ctx), name)
    typer.echo(f"study {name}: {cancelled} waiting trial(s) cancelled")
