"""`coordinator cluster slurm`: the worker fleet as a Slurm job array.

    coordinator cluster slurm --workers 8 --gpus-per-worker 1 --partition gpu --time 12:00:00
    coordinator cluster slurm --workers 8 --submit          # write it, then `sbatch` it

Slurm schedules; the project only writes the batch script (templates/slurm_workers.sbatch): one array
task per worker, the database URL from the environment (never written to the file), GPUs bound by
Slurm's `--gres` and only recorded by the worker, `--requeue` for preemption, one log per task.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Annotated, Optional

import typer

from coordinator.errors import UserError
from coordinator.store import urls

TEMPLATE = "slurm_workers.sbatch"
TIME_LIMIT = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$|^\d+$")  # Slurm's forms: M, H:M:S, D-H, D-H:M:S ...
NAME = re.compile(r"^[A-Za-z0-9._-]+$")


class SbatchTemplate(Template):
    """`@@name` placeholders: bash's own `${...}` and a lone `@` stay as written."""

    delimiter = "@@"


@dataclass(frozen=True)
class SlurmJob:
    workers: int
    log_dir: Path
    gpus_per_worker: int = 0
    cpus_per_worker: int = 1
    partition: str | None = None
    time_limit: str | None = None
    job_name: str = "scalesweep"
    studies: str = "*"
    worker_command: tuple[str, ...] = ("worker",)
    worker_args: tuple[str, ...] = ()

    def check(self) -> None:
        """Bad values become one line before anything is written."""
        if self.workers < 1:
            raise UserError(f"--workers must be at least 1, got {self.workers}")
        if self.gpus_per_worker < 0 or self.cpus_per_worker < 1:
            raise UserError("--gpus-per-worker must be >= 0 and --cpus-per-worker >= 1")
        if self.time_limit is not None and not TIME_LIMIT.match(self.time_limit):
            raise UserError(f"--time {self.time_limit!r} is not a Slurm time limit (MM, HH:MM:SS, D-HH:MM:SS)")
        for flag, value in (("--partition", self.partition), ("--job-name", self.job_name)):
            if value is not None and not NAME.match(value):
                raise UserError(f"{flag} {value!r}: use letters, digits, '.', '_' and '-' only")


def render(job: SlurmJob) -> str:
    """The batch script for `job`."""
    job.check()
    directives = []
    if job.partition:
        directives.append(f"#SBATCH --partition={job.partition}")
    if job.time_limit:
        directives.append(f"#SBATCH --time={job.time_limit}")
    if job.gpus_per_worker:
        directives.append(f"#SBATCH --gres=gpu:{job.gpus_per_worker}")
    text = resources.files("coordinator.cluster.templates").joinpath(TEMPLATE).read_text()
    return SbatchTemplate(text).substitute(
        job_name=job.job_name,
        last_index=job.workers - 1,
        log_dir=str(job.log_dir.absolute()),
        cpus_per_task=job.cpus_per_worker,
        extra_directives="\n".join(directives),
        worker_command=shlex.join(job.worker_command),
        studies=shlex.quote(job.studies),
        device="cuda" if job.gpus_per_worker else "cpu",
        worker_args="".join(f" {shlex.quote(a)}" for a in job.worker_args),
    )


def default_worker_command() -> tuple[str, ...]:
    """The `worker` of this installation (the same path on every node of a shared file system)."""
    beside = Path(sys.executable).parent / "worker"
    if beside.is_file():
        return (str(beside),)
    return (sys.executable, "-m", "worker.cli")


def check_database_url_in_env() -> None:
    """`sbatch` hands the submitting environment to the job: the URL must be there, and sound."""
    raw = os.environ.get(urls.ENV_URL)
    if not raw:
        raise UserError(f"${urls.ENV_URL} is not set: export it (password in the URL, $PGPASSWORD or ~/.pgpass) before --submit")
    urls.normalise_url(raw)


def submit(script: Path) -> str:
    """`sbatch SCRIPT`; returns the job id."""
    if shutil.which("sbatch") is None:
        raise UserError("Slurm's `sbatch` is not on PATH: run this on a login node, or drop --submit and copy the script there")
    result = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise UserError(f"sbatch failed: {lines[-1] if lines else f'exit code {result.returncode}'}")
    return result.stdout.strip().split(";")[0]


def slurm_command(
    workers: Annotated[int, typer.Option("--workers", "-n", min=1, help="Array tasks, one worker each.")],
    gpus_per_worker: Annotated[int, typer.Option("--gpus-per-worker", min=0, help="GPUs per task (--gres=gpu:N); 0: CPU workers.")] = 0,
    cpus_per_worker: Annotated[int, typer.Option("--cpus-per-worker", min=1, help="CPUs per task.")] = 1,
    partition: Annotated[Optional[str], typer.Option("--partition", "-p", help="Slurm partition (default: the cluster's).")] = None,
    time_limit: Annotated[Optional[str], typer.Option("--time", "-t", help="Time limit per task, e.g. 12:00:00.")] = None,
    studies: Annotated[str, typer.Option("--studies", help="Only studies whose name matches this glob.")] = "*",
    job_name: Annotated[str, typer.Option("--job-name", help="Slurm job name (and log file prefix).")] = "scalesweep",
    log_dir: Annotated[Path, typer.Option("--log-dir", help="One log per array task here (created now; Slurm does not).")] = Path("slurm-logs"),
    worker: Annotated[Optional[str], typer.Option("--worker-command", help="How nodes start a worker (default: this installation's).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the batch script.")] = Path("scalesweep-workers.sbatch"),
    submit_now: Annotated[bool, typer.Option("--submit", help="Submit it with sbatch (needs $HPO_DATABASE_URL).")] = False,
) -> None:
    """Write (and with --submit, submit) an sbatch job array of workers."""
    job = SlurmJob(
        workers=workers,
        log_dir=log_dir,
        gpus_per_worker=gpus_per_worker,
        cpus_per_worker=cpus_per_worker,
        partition=partition,
        time_limit=time_limit,
        job_name=job_name,
        studies=studies,
        worker_command=tuple(shlex.split(worker)) if worker else default_worker_command(),
    )
    script = render(job)
    if submit_now:
        check_database_url_in_env()
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        out.write_text(script)
    except OSError as exc:
        raise UserError(f"cannot write {out} / {log_dir}: {exc.strerror}") from None
    out.chmod(0o755)
    typer.echo(f"wrote {out}: {workers} worker(s), logs in {log_dir.absolute()}/{job_name}-<job>_<task>.log")
    if submit_now:
        job_id = submit(out)
        typer.echo(f"submitted job array {job_id}: `squeue -j {job_id}` to watch, `scancel {job_id}` to stop")
    else:
        typer.echo(f"submit with: sbatch {out}   (with {urls.ENV_URL} exported)")
