"""`coordinator evaluate`: the final evaluation of finished studies.

For each selected study (globs, one dataset unless named): freeze the protocol and the study's top-k
configurations (`plan.record_protocol`), submit one evaluation run per (configuration, seed), show
progress, and once a dataset version's runs are stored compute and store the intervals and the
scaling verdict (`summary`), then print the answer. Idempotent: a second call submits nothing new
and recomputes the verdicts from what is stored.
"""

from __future__ import annotations

import time
from typing import Annotated, Optional

import sqlalchemy as sa
import typer
from rich.console import Console

from coordinator.commands.kit import database_url, progress_bar
from coordinator.errors import UserError
from coordinator.evaluation.plan import StudyEvaluation, payloads, record_protocol
from coordinator.evaluation.protocol import EvaluationProtocol, make_protocol
from coordinator.evaluation.summary import compute_verdicts, store_verdicts
from coordinator.lifecycle.claims import StudyEntry, load_studies
from coordinator.lifecycle.ledger import EVALUATION, enqueue_items
from coordinator.reports.answer import print_answer
from coordinator.store import engines
from coordinator.studies.datasets import select_dataset_rows
from coordinator.studies.globs import split_globs

console = Console(stderr=True)


def select_studies(engine: sa.Engine, studies: str | None, dataset: str | None) -> list[StudyEntry]:
    """Studies matching the globs, of one dataset (refused when several and none named)."""
    globs = split_globs(studies)
    entries = load_studies(engine, ",".join(globs) if globs else None)
    if not entries:
        raise UserError(f"no study matching '{studies}'" if studies else "no study yet: run `coordinator create-studies`")
    rows = [{"entry": e, "dataset_name": e.spec.dataset.name, "dataset_version": e.spec.dataset.version} for e in entries]
    chosen = [r["entry"] for r in select_dataset_rows(rows, dataset, explicit_studies=False)]
    if not chosen:
        raise UserError(f"no selected study uses dataset '{dataset}'")
    return chosen


def finished(engine: sa.Engine, names: list[str]) -> dict[str, bool]:
    """study -> whether its search met its target with nothing running (only those are evaluated)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT study_name, remaining, running FROM study_progress WHERE study_name = ANY(:n)"),
                            {"n": names}).all()
    return {name: remaining == 0 and running == 0 for name, remaining, running in rows}


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
    for name, version in sorted({(e.entry.spec.dataset.name, e.entry.spec.dataset.version) for e in evaluations}):
        print_answer(engine, name, version, out)


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
    k: Annotated[Optional[int], typer.Option("--k", min=1, help="Top-k configurations per study (default 3; smoke 1).")] = None,
    seeds: Annotated[Optional[int], typer.Option("--seeds", min=1, help="Fresh seeds per configuration (default 5; smoke 3).")] = None,
    preset: Annotated[str, typer.Option("--preset", help="default (k 3, 5 seeds) or smoke (k 1, 3 seeds: wide intervals).")] = "default",
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Show progress until every run is stored, then print the answer.")] = False,
) -> None:
    """Re-train each finished study's top-k configurations with fresh seeds, score them once on the
    test split, and print test AUC with intervals, baselines and the scaling verdict per horizon."""
    url = database_url(ctx)
    protocol = make_protocol(preset, k=k, n_seeds=seeds)
    engine = engines.connect(url)
    try:
        evaluations = prepare(engine, select_studies(engine, studies, dataset), protocol)
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
