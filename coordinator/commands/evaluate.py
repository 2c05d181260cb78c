"""`coordinator evaluate`: the final evaluation of finished studies.

For each selected study (globs, one dataset unless named): freeze the protocol, the study's top-k
configurations and its walk-forward folds (`plan.record_protocol`), submit one evaluation run per
(configuration, seed, fold), show progress, and once a dataset version's runs are stored compute and
store the intervals and the scaling verdict (`summary`), then print the answer. Idempotent: a second call submits nothing new
and recomputes the verdicts from what is stored. `--dry-run` writes nothing: it prints the runs per
study, the device time projected from the study's own trials, and with `--target-width` the folds
or seeds an interval that narrow would need (`evaluation.projection`).
"""

from __future__ import annotations

import time
from typing import Annotated, Optional

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table

from coordinator.commands.kit import database_url, progress_bar
from coordinator.errors import UserError
from coordinator.evaluation.plan import StudyEvaluation, payloads, record_protocol
from coordinator.evaluation.projection import project_runs, project_widths
from coordinator.evaluation.protocol import EvaluationProtocol, make_protocol
from coordinator.evaluation.summary import compute_verdicts, store_verdicts
from coordinator.lifecycle.claims import StudyEntry, load_studies
from coordinator.lifecycle.ledger import EVALUATION, enqueue_items
from coordinator.reports.answer import print_answer
from coordinator.store import engines, roles
from coordinator.store.tables import evaluation_protocols
from coordinator.studies.datasets import select_dataset_rows
from coordinator.studies.globs import split_globs

console = Console(stderr=True)
# Each run trains a model: thousands are already days of work; the caps keep a typo from planning 10^18.
MAX_K = 100
MAX_SEEDS = 1000
MAX_FOLDS = 100


def select_studies(engine: sa.Engine, studies: str | None, dataset: str | None) -> list[StudyEntry]:
    """Studies matching the globs, of one dataset (refused when several and none named)."""
    globs = split_globs(studies)
    entries = load_studies(engine, ",".join(globs) if globs else None)
    if not entries:
        raise UserError(f"no study matching '{studies}'" if studies else "no study yet: run `coordinator create-studies`")
    rows = [{"entry": e, "dataset_name": e.spec.dataset.name, "dataset_version": e.spec.dataset.version} for e in entries]
    chosen = [r["entry"] for r in select_dataset_rows(rows, dataset)]
    if not chosen:
        raise UserError(f"no selected study uses dataset '{dataset}'")
    return chosen


def finished(engine: sa.Engine, names: list[str]) -> dict[str, bool]:
    """study -> whether its search met its target with nothing running (only those are evaluated)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT study_name, remaining, running FROM study_progress WHERE study_name = ANY(:n)"),
                            {"n": names}).all()
    return {name: remaining == 0 and running == 0 for name, remaining, running in rows}


def choose_protocol(engine: sa.Engine, entries: list[StudyEntry], preset: str | None, k: int | None, seeds: int | None,
                    folds: int | None = None) -> EvaluationProtocol:
    """The protocol asked for; with no --preset/--k/--seeds/--folds, the one already recorded for these
    studies (`coordinator local` evaluates with the smoke protocol), else the default one."""
    if preset is not None or k is not None or seeds is not None or folds is not None:
        return make_protocol(preset or "default", k=k, n_seeds=seeds, folds=folds)
    recorded = recorded_protocols(engine, [e.name for e in entries])
    if len(recorded) == 1:
        protocol = next(iter(recorded.values()))
        console.print(f"protocol: the one recorded for these studies ({protocol.describe()})")
        return protocol
    return make_protocol("default")


def recorded_protocols(engine: sa.Engine, names: list[str]) -> dict[str, EvaluationProtocol]:
    """sha256 -> protocol, of the protocols frozen for these studies."""
    t = evaluation_protocols
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.protocol_sha256, t.c.protocol).where(t.c.study_name.in_(names))).all()
    return {sha: EvaluationProtocol.from_dict(data) for sha, data in rows}


def prepare(engine: sa.Engine, entries: list[StudyEntry], protocol: EvaluationProtocol) -> list[StudyEvaluation]:
    """Freeze protocol and configurations of every finished study; unfinished ones are skipped, said."""
    done = finished(engine, [e.name for e in entries])
    evaluations = []
    for entry in entries:
        if not done.get(entry.name):
            console.print(f"[yellow]skipped[/] {entry.name}: its search has not finished (evaluate after it)")
            continue
        evaluations.append(record_protocol(engine, entry, protocol))
    return evaluations


def summarise(engine: sa.Engine, evaluations: list[StudyEvaluation], out: Console) -> None:
    """Compute, store and print the verdicts of the datasets these evaluations belong to."""
    store_answers(engine, evaluations)
    horizons = {e.entry.spec.horizon for e in evaluations}  # `--studies '*-h1'` answers H=1 only
    for name, version in sorted({(e.entry.spec.dataset.name, e.entry.spec.dataset.version) for e in evaluations}):
        print_answer(engine, name, version, out, horizons)


def progress_line(engine: sa.Engine, evaluations: list[StudyEvaluation]) -> tuple[int, int]:
    """(finished, total) evaluation items of these studies, from the ledger's slot rule."""
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT COALESCE(sum(finished), 0), COALESCE(sum(slots), 0) FROM work_counts "
                                   "WHERE kind = :kind AND study_name = ANY(:names)"),
                           {"kind": EVALUATION, "names": [e.entry.name for e in evaluations]}).one()
    return int(row[0]), int(row[1])


def evaluate_command(
    ctx: typer.Context,
    studies: Annotated[Optional[str], typer.Option("--studies", help="Studies matching these globs, comma-separated; default: all.")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="NAME[:VERSION]; required when the studies use several datasets.")] = None,
    k: Annotated[Optional[int], typer.Option("--k", min=1, max=MAX_K, help="Top-k configurations per study (default 3; smoke 1).")] = None,
    seeds: Annotated[Optional[int], typer.Option("--seeds", min=1, max=MAX_SEEDS, help="Fresh seeds per configuration (default 5; smoke 2).")] = None,
    folds: Annotated[Optional[int], typer.Option("--folds", min=1, max=MAX_FOLDS, help="Walk-forward test folds (default 5; smoke 3).")] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help="default (k 3, 5 seeds, 5 folds) or smoke (k 1, 2 seeds, 3 folds: wide intervals); "
                                                  "without it and --k/--seeds/--folds: the protocol already recorded for these studies, else default.")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Show progress until every run is stored, then print the answer.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Change nothing: print runs per study, projected device time, folds/seeds for --target-width.")] = False,
    target_width: Annotated[Optional[float], typer.Option("--target-width", min=0.0001, help="With --dry-run: the slope interval width to plan for (AUC per decade).")] = None,
) -> None:
    """Re-train each finished study's top-k configurations with fresh seeds before each walk-forward
    test fold, score each fold once, and print the pooled test AUC with intervals, the baselines, the
    model comparison and the scaling verdict with its power per horizon."""
    url = database_url(ctx)
    if preset is not None:
        make_protocol(preset, k=k, n_seeds=seeds, folds=folds)  # an unknown preset: refused before anything is read
    engine = engines.connect(url)
    try:
        if not dry_run:  # the read-only role is told so in one line, before it reads a table it may not
            roles.require_writer(engine, "submit evaluation runs")
        entries = select_studies(engine, studies, dataset)
        protocol = choose_protocol(engine, entries, preset, k, seeds, folds)
        if dry_run:
            print_dry_run(engine, entries, protocol, target_width, Console())
            return
        evaluations = prepare(engine, entries, protocol)
        if not evaluations:
            raise UserError("no finished study to evaluate")
        submitted = submit(engine, evaluations)
        console.print(f"protocol {protocol.sha256()[:12]}: {protocol.describe()}")
        console.print(f"{len(evaluations)} studies, {sum(e.n_runs for e in evaluations)} evaluation runs ({submitted} newly submitted)")
        if wait:
            wait_for_runs(engine, evaluations)
        done, total = progress_line(engine, evaluations)
        if done < total:
            console.print(f"{done} of {total} evaluation runs finished: workers on these studies claim the rest "
                          "(`worker --studies ...`); run `coordinator evaluate` again (or with --wait) for the answer")
        summarise(engine, evaluations, Console())
    finally:
        engine.dispose()


def print_dry_run(engine: sa.Engine, entries: list[StudyEntry], protocol: EvaluationProtocol, target_width: float | None,
                  out: Console) -> None:
    """The dry run's tables: runs and projected device time per study; folds/seeds for a target width."""
    if not out.is_terminal and out.width < 170:
        out = Console(file=out.file, width=170)  # a log file: never squeeze the table
    out.print(f"protocol {protocol.sha256()[:12]} (dry run, nothing written): {protocol.describe()}")
    table = Table(title="evaluation runs per study and projected device time", title_justify="left")
    for name in ("study", "budget", "H", "runs", "trials measured", "median trial", "fold training x", "device time"):
        table.add_column(name, justify="left" if name == "study" else "right")
    projections = project_runs(engine, entries, protocol)
    for p in projections:
        table.add_row(p.study_name, p.budget, str(p.horizon), str(p.runs), str(p.trials_measured),
                      "-" if p.median_trial_s is None else f"{p.median_trial_s:,.1f} s", f"{p.fold_scale:.2f}",
                      "not measured" if p.device_s is None else f"{p.device_s / 3600:,.2f} h")
    out.print(table)
    known = [p.device_s for p in projections if p.device_s is not None]
    out.print(f"{sum(p.runs for p in projections)} runs; projected device time {sum(known) / 3600:,.2f} h over "
              f"{len(known)} of {len(projections)} studies with measured trials (runs x median trial x fold training length)")
    if target_width is None:
        return
    widths = project_widths(engine, sorted({e.spec.dataset.name for e in entries}), target_width)
    if not widths:
        out.print("no evaluated answer yet: --target-width projects from a stored interval (evaluate first)")
    for w in widths:
        p = w.projection
        days = ("more test days alone cannot reach it" if p.folds is None
                else f"{p.folds} folds of today's length ({p.test_days} test days) at today's seeds")
        seeds = "more seeds alone cannot" if p.seeds is None else f"{p.seeds} seeds at today's test days"
        out.print(f"{w.dataset} H = {w.horizon}: {w.measure} interval {w.width:.3f} wide; {target_width:.3f} needs "
                  f"{days}, or {seeds} ({p.assumption})")


def wait_for_runs(engine: sa.Engine, evaluations: list[StudyEvaluation], poll_s: float = 2.0) -> None:
    with progress_bar() as bar:
        done, total = progress_line(engine, evaluations)
        task = bar.add_task("evaluation runs", total=total, completed=done)
        while done < total:
            time.sleep(poll_s)
            done, total = progress_line(engine, evaluations)
            bar.update(task, completed=done)


def submit(engine: sa.Engine, evaluations: list[StudyEvaluation]) -> int:
    """Enqueue every study's evaluation runs as ledger items of kind "evaluation"; returns how many
    are new (slots are the payloads' fixed order, so enqueueing again adds nothing)."""
    with engine.begin() as conn:
        return sum(enqueue_items(conn, EVALUATION, e.entry.name, payloads(e)) for e in evaluations)


def start_local(url: str, engine: sa.Engine, names: list[str], preset: str, out: Console) -> list[StudyEvaluation]:
    """`coordinator local`'s evaluation step: freeze protocols and enqueue the runs of these studies
    (the same local workers then claim them); the smoke preset's protocol for the smoke matrix."""
    protocol = make_protocol("smoke" if preset == "smoke" else "default")
    entries = [e for e in select_studies(engine, ",".join(names), "all") if e.name in names]
    evaluations = prepare(engine, entries, protocol)
    added = submit(engine, evaluations)
    out.print(f"[bold]evaluation[/] {protocol.describe()}: {sum(e.n_runs for e in evaluations)} runs ({added} new)")
    return evaluations


def store_answers(engine: sa.Engine, evaluations: list[StudyEvaluation]) -> None:
    """Compute and store the verdicts of the datasets these evaluations belong to."""
    for name, version in sorted({(e.entry.spec.dataset.name, e.entry.spec.dataset.version) for e in evaluations}):
        store_verdicts(engine, compute_verdicts(engine, name, version))
