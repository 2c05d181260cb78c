"""`coordinator local --workers N [--preset smoke]`: the whole service on one machine, one command.

1. the database: `--database-url` / $HPO_DATABASE_URL, else the embedded PostgreSQL; `db init`;
2. a dataset: the latest one built; else SPY imported from ../shared/data/SPY.csv and built; else a
   seeded synthetic series (said loudly: its results mean nothing about markets);
3. the studies of the preset (`create-studies`, idempotent: a second run resumes the same studies);
4. N `worker` processes (logs under $SCALESWEEP_HOME/logs/) with a live progress table;
5. the leaderboard and the report.
Exits non-zero if any worker failed. Ctrl-C stops the workers cleanly (their trials are re-enqueued).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from coordinator import db
from coordinator.errors import UserError
from coordinator.studies import MatrixRequest, run_create_studies

SPY_CANDIDATES = (Path("../shared/data/SPY.csv"), Path(__file__).resolve().parents[2] / "shared" / "data" / "SPY.csv")
SYNTHETIC_SYMBOL = "SYNTH"
SYNTHETIC_DAYS = 4000  # ~16 years of business days: enough validation samples for the split gates

# Progress and messages go to stderr; wide tables are not squeezed to 80 columns when it is a file.
console = Console(stderr=True) if Console(stderr=True).is_terminal else Console(stderr=True, width=160)


def local_command(
    ctx: typer.Context,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes to start.")] = 2,
    preset: Annotated[str, typer.Option("--preset", help="default (2M..2B x H1,3,5, 50 trials) or smoke (CPU-sized, minutes).")] = "default",
    device: Annotated[str, typer.Option("--device", help="Worker device: cpu, cuda or auto.")] = "auto",
    report_dir: Annotated[Path, typer.Option("--report-dir", help="Where to write the HTML report.")] = Path("report"),
) -> None:
    """Run the study matrix on this machine: database, dataset, studies, N workers, live progress, results."""
    from coordinator.cli import database_url

    started = time.monotonic()
    url = database_url(ctx)
    console.print(f"[bold]database[/] {db.describe(url)}")
    for step in db.init_db(url):
        console.print(f"  ok  {step}")
    engine = db.connect(url)
    try:
        dataset = ensure_dataset(engine)
        plans = run_create_studies(url, MatrixRequest(dataset=dataset, preset=preset))
        names = [p.spec.name for p in plans]
        code = run_workers(url, names, workers, device, engine)
        show_results(engine, names, report_dir)
        counts = final_counts(engine, names)
    finally:
        engine.dispose()
    console.print(
        f"[bold]done in {time.monotonic() - started:.0f} s[/]: {counts['complete']} complete, {counts['pruned']} pruned, "
        f"{counts['failed']} failed ({counts['retried']} lost and re-run) across {len(names)} studies"
    )
    if code != 0:
        raise UserError(f"{code} worker(s) exited with an error; see their logs in {logs_dir()}")


def ensure_dataset(engine: sa.Engine) -> str:
    """NAME:VERSION of the dataset to use: the latest built, else SPY, else synthetic."""
    from coordinator.data import registry, series
    from coordinator.studies import latest_dataset

    try:
        name, version = latest_dataset(engine)
        console.print(f"[bold]dataset[/] {name}:{version} (the latest built)")
        return f"{name}:{version}"
    except UserError:
        pass
    spy = next((p for p in SPY_CANDIDATES if p.is_file()), None)
    if spy is not None:
        console.print(f"[bold]dataset[/] none yet: importing SPY from {spy} and building it")
        bars = series.read_bars(spy)
        registry.register_series(engine, "SPY", bars, source=str(spy.resolve()))
        dataset, _ = registry.build_dataset(engine, "SPY")
    else:
        from coordinator.data.synth import synthetic_bars

        console.print(
            "[bold red]WARNING: no dataset and no ../shared/data/SPY.csv: using a SYNTHETIC market series. "
            "Results on it say nothing about real markets.[/]"
        )
        bars = series.validate_bars(synthetic_bars(SYNTHETIC_DAYS, seed=0).rename_axis("date").reset_index())
        registry.register_series(engine, SYNTHETIC_SYMBOL, bars, source=f"synth seed=0 days={SYNTHETIC_DAYS}")
        dataset, _ = registry.build_dataset(engine, SYNTHETIC_SYMBOL)
    return f"{dataset.name}:{dataset.version}"


def logs_dir() -> Path:
    return db.home_dir() / "logs"


def run_workers(url: str, names: list[str], n: int, device: str, engine: sa.Engine) -> int:
    """Start n workers on exactly these studies, show progress until they exit; returns how many failed."""
    logs_dir().mkdir(parents=True, exist_ok=True)
    # N workers on one machine share its cores: one BLAS/OpenMP pool each, sized to its share.
    env = {**os.environ}
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    procs = []
    for i in range(1, n + 1):
        log_path = logs_dir() / f"worker-{i}.log"
        command = [sys.executable, "-m", "worker.cli", "--database-url", url, "--studies", ",".join(names),
                   "--device", device, "--worker-id", f"local-{i}"]
        procs.append((subprocess.Popen(command, stdout=log_path.open("w"), stderr=subprocess.STDOUT, env=env), log_path))
    console.print(f"[bold]{n} workers[/] started; logs in {logs_dir()}")
    try:
        with Live(progress_table(engine, names), console=console, refresh_per_second=1) as live:
            while any(p.poll() is None for p, _ in procs):
                time.sleep(1.0)
                live.update(progress_table(engine, names))
        if not console.is_terminal:
            console.line()  # the last frame ends without a newline when stderr is a file
    except KeyboardInterrupt:
        console.print("stopping the workers (their running trials are re-enqueued)...")
        for p, _ in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p, _ in procs:
            p.wait()
        raise typer.Exit(130) from None
    failed = [(p, path) for p, path in procs if p.returncode != 0]
    for p, path in failed:
        tail = path.read_text().strip().splitlines()[-1:] or ["(empty log)"]
        console.print(f"[red]worker exited {p.returncode}[/] ({path}): {tail[0]}")
    return len(failed)


def progress_table(engine: sa.Engine, names: list[str]) -> Table:
    """C2's `coordinator status` table, restricted to these studies."""
    from coordinator import reports

    try:
        rows = [r for r in reports.study_progress(engine) if r["study_name"] in names]
    except sa.exc.OperationalError:
        rows = []  # the database is restarting; the workers ride it out and so does this display
    return reports.status_table(rows)


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


def show_results(engine: sa.Engine, names: list[str], report_dir: Path) -> None:
    """The leaderboard of these studies, then the HTML report (of every study in the database)."""
    from coordinator import reports

    board = [r for r in reports.leaderboard(engine) if r["study_name"] in names]
    table = reports.leaderboard_table(board)
    table.columns[0].no_wrap = True  # the study name is the key: never truncate it
    Console(width=max(Console().width, 160)).print(table)
    console.print(f"[bold]report[/] {reports.write_report(engine, report_dir).resolve()}")
