"""`coordinator create-studies`: the study matrix (budgets x horizons) on one dataset version.

Everything is checked before anything is written: the dataset version and its hash, the split
gates for every horizon (SPEC 2.4), a feasible architecture for every budget, and that no existing
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
from typing import Annotated, Any, Optional

import sqlalchemy as sa
import typer

from coordinator import db, records
from coordinator.errors import UserError
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

CONTEXT = 60  # days of history per sample (SPEC 2.5)
THRESHOLD = 0.01  # label `threshold_1pct` (SPEC 2.3)


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
    dataset: str | None = None  # NAME[:VERSION]; None: the most recently built dataset
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
    from coordinator.search_space import budget_label, extreme_params, feasible_architectures, parse_budget
    from coordinator.version import code_version

    if request.preset not in PRESETS:
        raise UserError(f"unknown preset {request.preset!r}; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[request.preset]
    if request.objective not in OBJECTIVES:
        raise UserError(f"unknown objective {request.objective!r}; choose one of {', '.join(OBJECTIVES)}")
    pruner = preset.pruner if request.pruner is None else dataclasses.replace(preset.pruner, kind=request.pruner)
    if pruner.kind not in PRUNERS:
        raise UserError(f"unknown pruner {pruner.kind!r}; choose one of {', '.join(PRUNERS)}")
    trials = preset.trials if request.trials is None else request.trials
    if trials < 1:
        raise UserError(f"--trials must be at least 1, got {trials}")
    budgets = unique(parse_budget(b) for b in (request.budgets or preset.budgets))
    horizons = unique(request.horizons or preset.horizons)
    if not budgets or not horizons:
        raise UserError("need at least one budget and one horizon")
    if request.suffix is not None and not re.fullmatch(r"[A-Za-z0-9_.]+", request.suffix):
        raise UserError(f"bad --suffix {request.suffix!r}: letters, digits, '_' and '.' only")
    if min(horizons) < 1:
        raise UserError(f"horizons must be >= 1 trading day, got {horizons}")

    name, version = parse_dataset_arg(request.dataset) if request.dataset else latest_dataset(engine)
    dataset = load_dataset(engine, name, version)
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


def search_space(budget: int, n_features: int, preset: Preset) -> Any:
    """The preset's search space for one budget; UserError when no architecture fits it."""
    from coordinator.search_space import budget_label, default_search_space, feasible_architectures

    space = default_search_space(budget, n_features, preset=preset.space, context=CONTEXT)
    if preset.max_layers is not None:
        space = dataclasses.replace(space, n_layers=tuple(n for n in space.n_layers if n <= preset.max_layers))
        if not feasible_architectures(space):
            raise UserError(f"no architecture of at most {preset.max_layers} layers fits {budget_label(budget)} ±{space.tolerance:.0%}")
    return space


def unique(values: Any) -> tuple:
    return tuple(dict.fromkeys(values))


def parse_dataset_arg(text: str) -> tuple[str, int | None]:
    """'spy-a25' -> ('spy-a25', None); 'spy-a25:2' -> ('spy-a25', 2)."""
    name, _, version = text.partition(":")
    if not name:
        raise UserError(f"bad --dataset {text!r}: expected NAME or NAME:VERSION, e.g. spy-a25:1")
    if not version:
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise UserError(f"bad --dataset {text!r}: the version must be a positive integer")
    return name, int(version)


def latest_dataset(engine: sa.Engine) -> tuple[str, int]:
    """The most recently built dataset version."""
    from coordinator.data.registry import list_datasets

    rows = list_datasets(engine)
    if not rows:
        raise UserError("no dataset registered yet: import a series and run `coordinator data build` first")
    latest = max(rows, key=lambda r: (r["created_at"], r["version"]))
    return latest["name"], latest["version"]


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
    seen = set()
    for plan in plans:
        spec = plan.spec
        key = (spec.dataset.name, spec.dataset.version, spec.horizon)
        if key in seen:
            continue
        seen.add(key)
        dataset = load_dataset(engine, spec.dataset.name, spec.dataset.version)
        if baselines.has_baselines(engine, dataset, spec.horizon):
            continue
        samples = make_samples(dataset, spec.horizon, Splits.from_dict(spec.splits), context=spec.context, threshold=spec.label.threshold)
        baselines.store_baselines(engine, dataset, spec.horizon, baselines.compute_baselines(samples))
        done.append(f"{dataset.name}:{dataset.version} h{spec.horizon}")
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


def split_csv(text: str | None) -> tuple[str, ...] | None:
    return tuple(part.strip() for part in text.split(",") if part.strip()) if text else None


def parse_horizons(text: str | None) -> tuple[int, ...] | None:
    parts = split_csv(text)
    if parts is None:
        return None
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise UserError(f"bad --horizons {text!r}: expected integers such as 1,3,5") from None


def create_studies_command(
    ctx: typer.Context,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="NAME[:VERSION]; default: the latest built dataset.")] = None,
    budgets: Annotated[Optional[str], typer.Option("--budgets", help="Comma-separated parameter budgets, e.g. 2M,20M,200M,2B.")] = None,
    horizons: Annotated[Optional[str], typer.Option("--horizons", help="Comma-separated horizons in trading days, e.g. 1,3,5.")] = None,
    trials: Annotated[Optional[int], typer.Option("--trials", help="Target trial count per study.")] = None,
    objective: Annotated[str, typer.Option("--objective", help="val_auc (maximised) or val_loss (minimised).")] = "val_auc",
    seed: Annotated[int, typer.Option("--seed", help="Sampler seed (recorded in the spec).")] = 1,
    preset: Annotated[str, typer.Option("--preset", help="default (2M..2B, 50 trials) or smoke (100K/300K on CPU, 3 trials).")] = "default",
    pruner: Annotated[Optional[str], typer.Option("--pruner", help="median or none; default: the preset's.")] = None,
    suffix: Annotated[Optional[str], typer.Option("--suffix", help="Appended to the study names (a second matrix beside the first).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan, write nothing.")] = False,
    with_baselines: Annotated[bool, typer.Option("--baselines/--no-baselines", help="Compute missing baselines per horizon.")] = True,
) -> None:
    """Create the study matrix (budgets x horizons) in PostgreSQL; idempotent, specs are immutable."""
    from coordinator.cli import database_url

    url = database_url(ctx)
    request = MatrixRequest(
        dataset=dataset,
        budgets=split_csv(budgets),
        horizons=parse_horizons(horizons),
        trials=trials,
        objective=objective,
        seed=seed,
        preset=preset,
        pruner=pruner,
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
    from coordinator.cli import database_url
    from coordinator.lifecycle import claims, optuna_adapter, reaper
    from coordinator.lifecycle.settings import ENV_HEARTBEAT, Liveness, env_int

    if grace_period is not None:
        # The workers beat every $SCALESWEEP_HEARTBEAT_S (default 5 s): a grace period not longer
        # than that would fail healthy attempts.
        heartbeat = heartbeat_interval or env_int(ENV_HEARTBEAT, Liveness.heartbeat_interval)
        liveness = Liveness.checked(heartbeat, grace_period, Liveness.from_env().max_retry)
    else:
        liveness = Liveness.from_env(heartbeat_interval=heartbeat_interval)
    url = database_url(ctx)
    db.connect(url).dispose()
    storage = optuna_adapter.open_storage(url)
    try:
        entries = claims.load_studies(storage.engine, studies)
        if not entries:
            raise UserError(f"no study matches {studies!r}" if studies else "no study yet: run `coordinator create-studies`")
        reaped = reaper.reap(storage.engine, storage, entries, liveness)
    finally:
        storage.engine.dispose()
    typer.echo(f"reaped {reaped} attempt(s) in {len(entries)} studies (grace period {liveness.grace_period} s)")
