"""`worker`: pull and run trials from the shared database until every selected study meets its target.

Exit codes: 0 done (or stopped by SIGTERM/SIGINT, or --max-trials reached), 1 repeated unexpected
trial errors, 2 a user error (bad flag, unreachable database at start, no study), 3 the database
stayed unreachable longer than the reconnect budget ($SCALESWEEP_DB_RETRY_S, default 300 s).
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from coordinator.errors import run_app
from coordinator.lifecycle.settings import Device, Liveness
from coordinator.store import engines, urls
from worker import leases
from worker.loop import Worker, WorkerOptions, configure_logging, default_worker_id

app = typer.Typer(name="worker", pretty_exceptions_enable=False, add_completion=False)


@app.command()
def work(
    database_url: Annotated[Optional[str], typer.Option("--database-url", help=f"SQLAlchemy URL; default ${urls.ENV_URL}, else the embedded PostgreSQL.")] = None,
    studies: Annotated[Optional[str], typer.Option("--studies", help="Only studies whose name matches this glob, e.g. '*-h1'.")] = None,
    max_trials: Annotated[Optional[int], typer.Option("--max-trials", min=1, help="Stop after this many trials.")] = None,
    device: Annotated[Device, typer.Option("--device", help="auto: a leased GPU when one is visible, else the CPU.")] = Device.auto,
    worker_id: Annotated[Optional[str], typer.Option("--worker-id", help="Name stored on every trial; default HOST-PID.")] = None,
    synthetic: Annotated[Optional[float], typer.Option("--synthetic", min=0.0, help="Sleep this many seconds instead of training (tests, benchmarks).")] = None,
    synthetic_stall: Annotated[bool, typer.Option("--synthetic-stall", hidden=True, help="Synthetic trials never advance their step counter (tests the stall detector).")] = False,
    heartbeat_interval: Annotated[Optional[int], typer.Option("--heartbeat-interval", min=1, help="Seconds between heartbeats; default $SCALESWEEP_HEARTBEAT_S or 5.")] = None,
    grace_period: Annotated[Optional[int], typer.Option("--grace-period", min=2, help="Seconds without heartbeat before a trial is failed and retried; default $SCALESWEEP_GRACE_S or 60.")] = None,
    max_retry: Annotated[Optional[int], typer.Option("--max-retry", min=0, help="Retries of a lost trial; default $SCALESWEEP_MAX_RETRY or 2.")] = None,
    gpu_share: Annotated[Optional[int], typer.Option("--gpu-share", min=1, help="Workers per GPU; default $SCALESWEEP_GPU_SHARE or 1.")] = None,
) -> None:
    """Pull trials from PostgreSQL, train them, report them; exit 0 when every target is met."""
    name = worker_id or default_worker_id()
    configure_logging(name)
    options = WorkerOptions(
        url=engines.resolve_url(database_url),
        studies=studies,
        max_trials=max_trials,
        device=device.value,
        worker_id=name,
        synthetic=synthetic,
        synthetic_stall=synthetic_stall,
        liveness=Liveness.from_env(heartbeat_interval, grace_period, max_retry),
        gpu_share=leases.gpu_share(gpu_share),
    )
    raise typer.Exit(Worker(options).run())


def main(argv: list[str] | None = None) -> None:
    run_app(app, "worker", argv)


if __name__ == "__main__":
    main()
