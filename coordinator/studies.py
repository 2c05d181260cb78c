"""`coordinator create-studies`: the study matrix (budgets x horizons) on one dataset version.

Everything is checked before anything is written: the dataset version and its hash, the split
gates for every horizon, a feasible architecture for every budget, and that no existing
study of the same name has a different spec. Then each study is created in Optuna, its spec stored
in `study_specs` (and as the Optuna study's user attribute `spec`, for optuna-dashboard), and its
extreme architectures enqueued as its first trials (never more than its target).

Running it again with the same spec changes nothing; a different spec under an existing name is
refused: a study's spec is immutable, so make a new study (other seed, dataset version...) instead.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Optional

import sqlalchemy as sa
import typer

from coordinator import db, records
from coordinator.app import database_url, progress_bar, split_globs
from coordinator.datasets import resolve_dataset
from coordinator.errors import UserError
from coordinator.search_space import (
    CPU_BUDGETS,
    DEFAULT_BUDGETS,
    budget_label,
    default_search_space,
    extreme_params,
    feasible_architectures,
    parse_budget,
)
from coordinator.study_spec import (
    OBJECTIVES,
    PRUNERS,
    BudgetSpec,
    DatasetRef,
    LabelSpec,
    LimitsSpec,
    ObjectiveSpec,
    PrunerSpec,
    SamplerSpec,
    StudySpec,
    study_name,
)

CONTEXT = 60  # days of history per sample
THRESHOLD = 0.01  # label `threshold_1pct`


@dataclass(frozen=True)
class Preset:
    budgets: tuple[str, ...]
    horizons: tuple[int, ...]
    trials: int
    space: str  # coordinator.search_space preset: grid and training schedule
    pruner: PrunerSpec
    max_layers: int | None = None  # cap on depth (CPU: a 48-layer 100K model trains for minutes)


PRESETS: dict[str, Preset] = {
    # The real matrix: 4 budgets x 3 horizons = 12 studies of 50 trials.
    "default": Preset(("2M", "20M", "200M", "2B"), (1, 3, 5), 50, "reference", PrunerSpec("median")),
    # Sub-million budgets, 3-epoch schedule, 3 trials each: the whole service end to end on 2 CPU cores.
    "smoke": Preset(("100K", "300K"), (1, 5), 3, "cpu-small", PrunerSpec("median"), max_layers=8),
}


class PresetName(StrEnum):
    """The one preset vocabulary (create-studies, local, search-space)."""

    default = "default"
    smoke = "smoke"


class ObjectiveName(StrEnum):
    val_auc = "val_auc"
    val_loss = "val_loss"


class PrunerName(StrEnum):
    median = "median"
    none = "none"


# Ranges checked before anything is written (the columns are 32-bit; seeds are numpy's 32-bit).
MAX_TRIALS = 1_000_000
MAX_HORIZON = 250  # a trading year
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class PlannedStudy:
    spec: StudySpec
    n_feasible: int  # grid architectures within the budget's tolerance
    extremes: list[dict[str, int]]  # architecture params enqueued as the first trials
    samples: dict[str, int]  # split -> number of samples at this horizon
    val_positive_rate: float
    status: str = "new"  # new | unchanged


@dataclass(frozen=True)
class MatrixRequest:
    dataset: str | None = None  # NAME[:VERSION]; None: the only registered dataset (refused when several)
    budgets: tuple[str, ...] | None = None  # None: the preset's
    horizons: tuple[int, ...] | None = None
    trials: int | None = None
    objective: str = "val_auc"
    seed: int = 1
    preset: str = "default"
    pruner: str | None = None
    suffix: str | None = None  # appended to every study name, for a second matrix beside the first
    limits: LimitsSpec = LimitsSpec()  # stall timeout and wall-clock limit of every attempt


def plan_studies(engine: sa.Engine, request: MatrixRequest) -> list[PlannedStudy]:
    """Build every study's spec and run every gate; writes nothing. Raises UserError on a gate."""
    from coordinator.data.registry import load_dataset
    from coordinator.data.samples import make_samples
    from coordinator.data.splits import default_splits
    from coordinator.version import code_version

    if request.preset not in PRESETS:
        raise UserError(f"unknown preset '{request.preset}'; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[request.preset]
    if request.objective not in OBJECTIVES:
        raise UserError(f"unknown objective '{request.objective}'; choose one of {', '.join(OBJECTIVES)}")
    pruner = preset.pruner if request.pruner is None else dataclasses.replace(preset.pruner, kind=request.pruner)
    if pruner.kind not in PRUNERS:
        raise UserError(f"unknown pruner '{pruner.kind}'; choose one of {', '.join(PRUNERS)}")
    trials = preset.trials if request.trials is None else request.trials
    if not 1 <= trials <= MAX_TRIALS:
        raise UserError(f"--trials must be between 1 and {MAX_TRIALS:,}, got {trials:,}")
    if not 0 <= request.seed <= MAX_SEED:
        raise UserError(f"--seed must be between 0 and {MAX_SEED}, got {request.seed}")
    budgets = unique(parse_budget(b) for b in (preset.budgets if request.budgets is None else request.budgets))
    horizons = unique(preset.horizons if request.horizons is None else request.horizons)
    if not budgets or not horizons:
        raise UserError("need at least one budget and one horizon")
    if request.suffix is not None and not re.fullmatch(r"[A-Za-z0-9_.]+", request.suffix):
        raise UserError(f"bad --suffix '{request.suffix}': letters, digits, '_' and '.' only")
    bad = [h for h in horizons if not 1 <= h <= MAX_HORIZON]
    if bad:
        raise UserError(f"horizons must be between 1 and {MAX_HORIZON} trading days, got {', '.join(map(str, bad))}")

    ref = resolve_dataset(engine, request.dataset)
    dataset = load_dataset(engine, ref.name, ref.version)
    splits = default_splits(dataset.frame.index)
    samples = {h: make_samples(dataset, h, splits, context=CONTEXT, threshold=THRESHOLD) for h in horizons}
    spaces = {b: search_space(b, len(dataset.input_columns), preset) for b in budgets}

    plans = []
    for budget in budgets:
        space = spaces[budget]
        label = budget_label(budget)
        for horizon in horizons:
            spec = StudySpec(
                name=study_name(dataset.name, THRESHOLD, label, horizon) + (f"-{request.suffix}" if request.suffix else ""),
                dataset=DatasetRef(dataset.name, dataset.version, dataset.sha256),
                label=LabelSpec("threshold", THRESHOLD, horizon),
                splits=splits.to_dict(),
                context=CONTEXT,
                budget=BudgetSpec(label, budget, space.tolerance),
                search_space=space.to_dict(),
                objective=ObjectiveSpec(request.objective, OBJECTIVES[request.objective]),
                sampler=SamplerSpec("tpe", request.seed),
                pruner=pruner,
                target_trials=trials,
                code_version=code_version(),
                limits=request.limits,
            )
            s = samples[horizon]
            plans.append(
                PlannedStudy(
                    spec=spec,
                    n_feasible=len(feasible_architectures(space)),
                    extremes=extreme_params(space)[:trials],
                    samples={split: len(positions) for split, positions in s.index.items()},
                    val_positive_rate=s.positive_rate("val"),
                )
            )
    return check_existing(engine, plans)


def preset_named(name: str) -> Preset:
    """The create-studies preset called `name` (default or smoke); UserError for anything else."""
    if name not in PRESETS:
        raise UserError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def search_space(budget: int, n_features: int, preset: Preset) -> Any:
    return preset_search_space(budget, n_features, preset)


def preset_search_space(budget: int, n_features: int, preset: Preset, tolerance: float | None = None) -> Any:
    """The preset's search space for one budget (its schedule and depth cap); UserError when no
    architecture fits it."""
    extra = {} if tolerance is None else {"tolerance": tolerance}
    space = default_search_space(budget, n_features, preset=preset.space, context=CONTEXT, **extra)
    if preset.max_layers is not None:
        space = dataclasses.replace(space, n_layers=tuple(n for n in space.n_layers if n <= preset.max_layers))
        if not feasible_architectures(space):
            raise UserError(f"no architecture of at most {preset.max_layers} layers fits {budget_label(budget)} ±{space.tolerance:.0%}")
    return space


def unique(values: Any) -> tuple:
    return tuple(dict.fromkeys(values))


def check_existing(engine: sa.Engine, plans: list[PlannedStudy]) -> list[PlannedStudy]:
    """Mark studies that already exist with the same spec; refuse any that exist with another spec."""
    t = records.study_specs
    with engine.connect() as conn:
        stored = {
            row.study_name: row
            for row in conn.execute(
                sa.select(t.c.study_name, t.c.spec, t.c.spec_sha256).where(t.c.study_name.in_([p.spec.name for p in plans]))
            )
        }
    checked = []
    for plan in plans:
        row = stored.get(plan.spec.name)
        if row is None:
            checked.append(plan)
            continue
        if row.spec_sha256 != plan.spec.sha256():
            changed = plan.spec.differences(StudySpec.from_dict(row.spec))
            raise UserError(
                f"study {plan.spec.name} already exists with a different spec (differs in: {', '.join(changed)}); "
                "a study's spec is immutable: keep the original flags, or add --suffix TAG to create new studies beside it"
            )
        checked.append(dataclasses.replace(plan, status="unchanged"))
    return checked


def create_studies(url: str, plans: list[PlannedStudy]) -> list[PlannedStudy]:
    """Create the planned studies that are new. Safe against concurrent runs and half-done runs.

    Each study is one transaction: its Optuna study (for sampling), its `study_specs` row and its
    ledger items (one `search` slot per target trial, the extreme architectures first).
    """
    from coordinator.lifecycle import ledger, optuna_adapter

    storage = optuna_adapter.open_storage(url)
    engine = storage.engine
    created = []
    try:
        for plan in plans:
            if plan.status != "new":
                continue
            with engine.begin() as conn:
                # One create-studies at a time; re-check under the lock (another run may have won).
                # A table lock stronger than ACCESS SHARE needs write privileges: readers cannot hold it.
                conn.execute(sa.text("LOCK TABLE study_specs IN SHARE ROW EXCLUSIVE MODE"))
                if check_existing_locked(conn, plan):
                    continue
                spec = plan.spec
                study = optuna_adapter.create_study(storage, spec)
                foreign = optuna_adapter.started_trials(study)
                if foreign:
                    raise UserError(
                        f"Optuna study {spec.name} already has {foreign} trials but no scalesweep spec; "
                        "it was not made by create-studies: delete it or use another dataset name"
                    )
                study_id = conn.execute(sa.text("SELECT study_id FROM studies WHERE study_name = :n"), {"n": spec.name}).scalar_one()
                conn.execute(
                    records.study_specs.insert().values(
                        study_name=spec.name,
                        study_id=study_id,
                        budget=spec.budget.label,
                        budget_params=spec.budget.params,
                        horizon=spec.horizon,
                        dataset_name=spec.dataset.name,
                        dataset_version=spec.dataset.version,
                        dataset_sha256=spec.dataset.sha256,
                        objective=spec.objective.metric,
                        direction=spec.objective.direction,
                        target_trials=spec.target_trials,
                        spec=spec.to_dict(),
                        spec_sha256=spec.sha256(),
                        code_version=spec.code_version,
                    )
                )
                ledger.register_search(conn, spec.name, spec.target_trials, plan.extremes)
            created.append(plan)
    finally:
        storage.engine.dispose()
    return created


def check_existing_locked(conn: sa.Connection, plan: PlannedStudy) -> bool:
    """True if the study exists with this spec; UserError if with another."""
    t = records.study_specs
    sha = conn.execute(sa.select(t.c.spec_sha256).where(t.c.study_name == plan.spec.name)).scalar()
    if sha is None:
        return False
    if sha != plan.spec.sha256():
        raise UserError(f"study {plan.spec.name} was just created by another run with a different spec")
    return True


def compute_missing_baselines(engine: sa.Engine, plans: list[PlannedStudy]) -> list[str]:
    """Baselines (logistic regression, gradient boosting) for each dataset version and horizon, once."""
    try:
        from coordinator import baselines
    except ImportError:  # the baselines module is optional for the service
        return []
    from coordinator.data.registry import load_dataset
    from coordinator.data.samples import make_samples
    from coordinator.data.splits import Splits

    done = []
    keyed = {(p.spec.dataset.name, p.spec.dataset.version, p.spec.horizon): p.spec for p in plans}
    with progress_bar() as bar:
        task = bar.add_task("baselines", total=len(keyed))
        for spec in keyed.values():
            dataset = load_dataset(engine, spec.dataset.name, spec.dataset.version)
            if not baselines.has_baselines(engine, dataset, spec.horizon):
                samples = make_samples(dataset, spec.horizon, Splits.from_dict(spec.splits), context=spec.context, threshold=spec.label.threshold)
                baselines.store_baselines(engine, dataset, spec.horizon, baselines.compute_baselines(samples))
                done.append(f"{dataset.name}:{dataset.version} h{spec.horizon}")
            bar.advance(task)
    return done


def print_plan(plans: list[PlannedStudy]) -> None:
    from rich.console import Console
    from rich.table import Table

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
            str(len(p.extremes)),
            str(s.target_trials),
            str(p.samples["val"]),
            f"{p.val_positive_rate:.1%}",
            p.status,
        )
    Console(width=max(Console().width, 120)).print(table)
    splits = ", ".join(f"{name} {start}..{end}" for name, (start, end) in first.splits.items())
    typer.echo(
        f"archs: feasible architectures in the budget ±{first.budget.tolerance:.0%}; enqueued: extreme architectures "
        f"run first.\nobjective {first.objective.metric} ({first.objective.direction}), sampler {first.sampler.kind} "
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
    pruner: Annotated[Optional[PrunerName], typer.Option("--pruner", help="Default: the preset's.")] = None,
    suffix: Annotated[Optional[str], typer.Option("--suffix", help="Appended to the study names (a second matrix beside the first).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan, write nothing.")] = False,
    with_baselines: Annotated[bool, typer.Option("--baselines/--no-baselines", help="Compute missing baselines per horizon.")] = True,
) -> None:
    """Create the study matrix (budgets x horizons) in PostgreSQL; idempotent, specs are immutable."""
    url = database_url(ctx)
    request = MatrixRequest(
        dataset=dataset,
        budgets=split_csv(budgets),
        horizons=parse_horizons(horizons),
        trials=trials,
        objective=objective.value,
        seed=seed,
        preset=preset.value,
        pruner=None if pruner is None else pruner.value,
        suffix=suffix,
    )
    run_create_studies(url, request, dry_run=dry_run, with_baselines=with_baselines)


def run_create_studies(url: str, request: MatrixRequest, *, dry_run: bool = False, with_baselines: bool = True) -> list[PlannedStudy]:
    engine = db.connect(url)
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
    from coordinator.lifecycle import claims, optuna_adapter, reaper
    from coordinator.lifecycle.settings import ENV_HEARTBEAT, Liveness, env_int

    if grace_period is not None:
        # The workers beat every $SCALESWEEP_HEARTBEAT_S (default 5 s): a grace period not longer
        # than that would fail healthy attempts.
        heartbeat = heartbeat_interval or env_int(ENV_HEARTBEAT, Liveness.heartbeat_interval)
        liveness = Liveness.checked(heartbeat, grace_period, Liveness.from_env().max_retry)
    else:
        liveness = Liveness.from_env(heartbeat_interval=heartbeat_interval)
    split_globs(studies)  # an empty list of globs is refused before anything runs
    url = database_url(ctx)
    engine = db.connect(url)
    try:
        db.require_writer(engine, "reap attempts")
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
