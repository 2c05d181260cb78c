"""`coordinator local --workers N [--preset smoke] [--dataset NAME[:VERSION]]`: the whole service on
one machine, one command.

1. the database: `--database-url` / $HPO_DATABASE_URL, else the embedded PostgreSQL; `db init`;
2. a dataset, never silently another one: `--dataset` when given; else the one the existing studies
   use (a second run resumes them); else the only registered one; with several, it refuses with the
   list. With none registered: SPY (and VIX) from $SCALESWEEP_DATA (default ../shared/data), else
   from data/ (fetched earlier), else downloaded with yfinance into data/, else a seeded synthetic
   series, said loudly (its results mean nothing about markets);
3. the studies of the preset (`create-studies`, idempotent: a second run resumes the same studies);
4. N `worker` processes (logs under $SCALESWEEP_HOME/logs/) with a live progress table that fits
   80 columns;
5. the leaderboard and the report.
Exits non-zero if any worker failed. Ctrl-C stops the workers (their running trials are
re-enqueued), says "interrupted" and exits 130 without a report.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import sqlalchemy as sa
import typer
from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from coordinator.commands.evaluate import start_local, store_answers
from coordinator.commands.kit import database_url, plural
from coordinator.commands.studies import run_create_studies
from coordinator.data import registry, series
from coordinator.data.location import find_real_bars, real_data_dir
from coordinator.data.synth import synthetic_bars
from coordinator.errors import UserError
from coordinator.lifecycle.settings import Device
from coordinator.reports.answer import print_answer
from coordinator.reports.html import write_report
from coordinator.reports.queries import leaderboard, study_progress
from coordinator.reports.terminal import format_duration, format_number, leaderboard_table
from coordinator.store import embedded, engines, schema, tables, urls
from coordinator.studies.datasets import registered, resolve_dataset
from coordinator.studies.planning import MatrixRequest
from coordinator.studies.presets import PresetName

SYNTHETIC_SYMBOL = "SYNTH"
SYNTHETIC_DAYS = 4000  # ~16 years of business days: enough validation samples for the split gates
INTERRUPTED_EXIT = 130  # the shell's code for "stopped by Ctrl-C"

# Progress and messages go to stderr.
console = Console(stderr=True)


def local_command(
    ctx: typer.Context,
    workers: Annotated[int, typer.Option("--workers", min=1, max=256, help="Worker processes to start.")] = 2,
    preset: Annotated[PresetName, typer.Option("--preset", help="default (2M..2B x H1,3,5, 50 trials) or smoke (CPU-sized, minutes).")] = PresetName.default,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="NAME[:VERSION]; default: the one the existing studies use, else the only one registered.")] = None,
    device: Annotated[Device, typer.Option("--device", help="Worker device.")] = Device.auto,
    report_dir: Annotated[Path, typer.Option("--report-dir", help="Where to write the HTML report.")] = Path("report"),
    evaluate: Annotated[bool, typer.Option("--evaluate/--no-evaluate", help="After the search: re-train the best configurations with fresh seeds, score them on test, print the answer.")] = True,
) -> None:
    """Run the study matrix on this machine: database, dataset, studies, N workers, live progress, results."""
    if report_dir.exists() and not report_dir.is_dir():
        raise UserError(f"--report-dir {report_dir} is a file, not a folder")
    started = time.monotonic()
    url = database_url(ctx)
    console.print(f"[bold]database[/] {urls.describe(url)}")
    for step in schema.init_db(url):
        console.print(f"  ok  {step}")
    engine = engines.connect(url)
    try:
        chosen = choose_dataset(engine, dataset)
        plans = run_create_studies(url, MatrixRequest(dataset=chosen, preset=preset.value))
        names = [p.spec.name for p in plans]
        failed = run_workers(url, names, workers, device.value, engine)
        if evaluate and not failed:  # the same workers, again: now they claim the evaluation runs

            evaluations = start_local(url, engine, names, preset.value, console)
            failed += run_workers(url, names, workers, device.value, engine)
            store_answers(engine, evaluations)
        show_results(engine, names, report_dir, chosen)
        counts = final_counts(engine, names)
        if evaluate:
            ref = plans[0].spec.dataset
            print_answer(engine, ref.name, ref.version, Console())
    finally:
        engine.dispose()
    console.print(
        f"[bold]done in {time.monotonic() - started:.0f} s[/]: {counts['complete']} complete, {counts['pruned']} pruned, "
        f"{counts['failed']} failed ({counts['retried']} lost and re-run) across {plural(len(names), 'study', 'studies')}"
    )
    if failed:
        raise UserError(f"{plural(failed, 'worker')} exited with an error; see the logs in {logs_dir()}")


def studies_datasets(engine: sa.Engine) -> list[str]:
    """NAME:VERSION of every dataset the existing studies use."""
    t = tables.study_specs
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.dataset_name, t.c.dataset_version).distinct().order_by(t.c.dataset_name, t.c.dataset_version)).all()
    return [f"{name}:{version}" for name, version in rows]


def choose_dataset(engine: sa.Engine, given: str | None) -> str:
    """NAME:VERSION to run on; see the module docstring for the order. Never a silent switch."""
    if given is not None:
        ref = resolve_dataset(engine, given)
        console.print(f"[bold]dataset[/] {ref} (--dataset)")
        return str(ref)
    in_use = studies_datasets(engine)
    if len(in_use) == 1:
        console.print(f"[bold]dataset[/] {in_use[0]} (resuming: the existing studies use it)")
        return in_use[0]
    if len(in_use) > 1:
        raise UserError(f"the existing studies use {len(in_use)} datasets ({', '.join(in_use)}): choose one with --dataset NAME[:VERSION]")

    if registered(engine):
        ref = resolve_dataset(engine, None)  # the only one, or a refusal with the list
        console.print(f"[bold]dataset[/] {ref} (the only one registered)")
        return str(ref)
    return first_dataset(engine)


def first_dataset(engine: sa.Engine) -> str:
    """Register and build the first dataset: real SPY when it can be found or fetched, else synthetic."""
    real = find_real_bars(say=lambda text: console.print(f"[bold]data[/] {text}"))
    if real is not None:
        console.print(f"[bold]dataset[/] none yet: importing SPY from {real.origin} and building it")
        registry.register_series(engine, "SPY", series.read_bars(real.spy), source=str(real.spy))
        if real.vix is not None:
            registry.register_series(engine, "VIX", series.read_bars(real.vix, repair_ohlc=True), source=str(real.vix))
        dataset, _ = registry.build_dataset(engine, "SPY")
    else:
        console.print(
            f"[bold red]WARNING: no real data (nothing in {real_data_dir()} or data/, and no download): "
            "using a SYNTHETIC market series. Results on it say nothing about real markets. "
            "Set $SCALESWEEP_DATA to a folder with SPY.csv, or run with internet access.[/]"
        )
        bars = series.validate_bars(synthetic_bars(SYNTHETIC_DAYS, seed=0).rename_axis("date").reset_index())
        registry.register_series(engine, SYNTHETIC_SYMBOL, bars, source=f"synth seed=0 days={SYNTHETIC_DAYS}")
        dataset, _ = registry.build_dataset(engine, SYNTHETIC_SYMBOL)
    return f"{dataset.name}:{dataset.version}"


def logs_dir() -> Path:
    return embedded.home_dir() / "logs"


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM while the workers run: remembered, acted on by the display loop."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def handle(self, signum: int, frame: object) -> None:
        self.signal = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def run_workers(url: str, names: list[str], n: int, device: str, engine: sa.Engine) -> int:
    """Start n workers on exactly these studies, show progress until they exit; returns how many failed."""
    logs_dir().mkdir(parents=True, exist_ok=True)
    # N workers on one machine share its cores: one BLAS/OpenMP pool each, sized to its share.
    env = {**os.environ}
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    procs = []
    with StopRequest() as stop:
        for i in range(1, n + 1):
            log_path = logs_dir() / f"worker-{i}.log"
            command = [sys.executable, "-m", "worker.cli", "--database-url", url, "--studies", ",".join(names),
                       "--device", device, "--worker-id", f"local-{i}"]
            # Their own session: a terminal's Ctrl-C reaches only this process, which stops them in order.
            procs.append((subprocess.Popen(command, stdout=log_path.open("w"), stderr=subprocess.STDOUT, env=env,
                                           start_new_session=True), log_path))
        console.print(f"[bold]{plural(n, 'worker')}[/] started; logs in {logs_dir()}")
        with Live(progress_table(engine, names), console=console, refresh_per_second=1) as live:
            while stop.signal is None and any(p.poll() is None for p, _ in procs):
                time.sleep(0.5)
                live.update(progress_table(engine, names))
        if not console.is_terminal:
            console.line()  # the last frame ends without a newline when stderr is a file
        if stop.signal is not None:
            console.print("interrupted: stopping the workers (their running trials are re-enqueued)...")
            for p, _ in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p, _ in procs:
                p.wait()
            console.print("interrupted")
            raise typer.Exit(INTERRUPTED_EXIT)
    failed = [(p, path) for p, path in procs if p.returncode != 0]
    for p, path in failed:
        tail = path.read_text().strip().splitlines()[-1:] or ["(empty log)"]
        console.print(f"[red]worker exited {p.returncode}[/] ({path}): {tail[0]}")
    return len(failed)


def common_prefix(names: list[str]) -> str:
    """The shared leading dash-separated words of the study names ('spy-a25-thr1pct-')."""
    if len(names) < 2:
        return ""
    words = [n.split("-") for n in names]
    shared = []
    for parts in zip(*words, strict=False):
        if len(set(parts)) != 1:
            break
        shared.append(parts[0])
    shared = shared[: min(len(w) for w in words) - 1]  # keep at least one word of every name
    return "-".join(shared) + "-" if shared else ""


def progress_table(engine: sa.Engine, names: list[str]) -> Table:
    """The studies' progress in at most 80 columns: the names' common prefix goes in the title."""
    try:
        rows = [r for r in study_progress(engine) if r["study_name"] in names]
    except sa.exc.OperationalError:
        rows = []  # the database is restarting; the workers ride it out and so does this display
    return compact_status_table(rows)


def compact_status_table(rows: list[dict[str, Any]]) -> Table:
    prefix = common_prefix([r["study_name"] for r in rows])
    table = Table(title=f"studies {prefix}*" if prefix else "studies", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("study", "done/target", "ok", "pruned", "failed", "running", "best", "ETA"):
        table.add_column(name, justify="left" if name == "study" else "right", no_wrap=True, overflow="fold")
    for r in rows:
        eta = "done" if r["target_trials"] is not None and r["remaining"] == 0 and r["running"] == 0 else format_duration(r["eta_s"])
        target = r["target_trials"] if r["target_trials"] is not None else "-"
        table.add_row(
            r["study_name"][len(prefix):], f"{r['finished']}/{target}", str(r["complete"]), str(r["pruned"]),
            str(r["failed"]), str(r["running"]), format_number(r["best_objective"]), eta,
        )
    return table


def final_counts(engine: sa.Engine, names: list[str]) -> dict[str, int]:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT COALESCE(sum(complete), 0) AS complete, COALESCE(sum(pruned), 0) AS pruned, "
                "COALESCE(sum(failed), 0) AS failed, COALESCE(sum(retried), 0) AS retried "
                "FROM study_progress WHERE study_name = ANY(:names)"
            ),
            {"names": names},
        ).mappings().one()
    return {k: int(v) for k, v in row.items()}


def show_results(engine: sa.Engine, names: list[str], report_dir: Path, dataset: str | None = None) -> None:
    """The leaderboard of these studies, then the HTML report (of every study in the database)."""
    board = [r for r in leaderboard(engine) if r["study_name"] in names]
    table = leaderboard_table(board)
    table.columns[0].no_wrap = True  # the study name is the key: never truncate it
    Console(width=max(Console().width, 160)).print(table)
    console.print(f"[bold]report[/] {write_report(engine, report_dir, dataset).resolve()}")
