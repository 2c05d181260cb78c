"""`coordinator cluster slurm` and the Slurm side of the worker, without a Slurm cluster.

The batch script is run here by bash with the environment Slurm gives an array task, against the
real test database; `sbatch` is a stand-in that records its arguments. The real Slurm run (daemons,
job array, scancel, requeue) is `make e2e-slurm`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from coordinator.cli import main
from coordinator.cluster.slurm import SlurmJob, render
from coordinator.errors import UserError
from tests.service_helpers import create, make_dataset, rows
from worker import leases

REPO = Path(__file__).resolve().parents[2]


def directives(script: str) -> dict[str, str]:
    found = {}
    for line in script.splitlines():
        m = re.match(r"^#SBATCH --([a-z-]+)(?:=(.*))?$", line)
        if m:
            found[m.group(1)] = m.group(2) or ""
    return found


def test_script_directives(tmp_path: Path) -> None:
    cpu = directives(render(SlurmJob(workers=5, log_dir=tmp_path / "logs")))
    assert cpu["array"] == "0-4"
    assert "requeue" in cpu, "preempted tasks come back"
    assert cpu["open-mode"] == "append", "a requeued task appends to its own log"
    assert cpu["output"] == f"{tmp_path}/logs/%x-%A_%a.log", "one log per array task"
    assert "gres" not in cpu and "partition" not in cpu and "time" not in cpu

    gpu = directives(render(SlurmJob(workers=2, log_dir=tmp_path, gpus_per_worker=2, partition="gpu", time_limit="1-12:00:00")))
    assert gpu["gres"] == "gpu:2" and gpu["partition"] == "gpu" and gpu["time"] == "1-12:00:00"


def test_script_holds_no_database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPO_DATABASE_URL", "postgresql://u:s3cret-pw@db.example:5432/hpo")
    script = render(SlurmJob(workers=1, log_dir=tmp_path))
    assert "s3cret-pw" not in script and "db.example" not in script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0, "valid bash"


@pytest.mark.parametrize(
    ("job", "message"),
    [
        (dict(workers=0), "--workers must be at least 1"),
        (dict(workers=1, time_limit="tomorrow"), "is not a Slurm time limit"),
        (dict(workers=1, partition="gpu; rm -rf /"), "--partition"),
    ],
)
def test_bad_options_are_one_line(tmp_path: Path, job: dict, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        render(SlurmJob(log_dir=tmp_path, **job))


def run_task(script: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The script as Slurm runs an array task: bash, with the task's SLURM_* variables."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return subprocess.run(["bash", str(script)], env={**base, **env}, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_array_task_runs_a_worker_named_after_it(initialised_db: str, engine: sa.Engine, tmp_path: Path) -> None:
    create(initialised_db, dataset=make_dataset(initialised_db), preset="smoke", budgets=("100K",), horizons=(1,), trials=2)
    script = tmp_path / "workers.sbatch"
    worker = f"{sys.executable} -m worker.cli"
    job = SlurmJob(workers=3, log_dir=tmp_path, worker_command=tuple(worker.split()), worker_args=("--synthetic", "0", "--max-trials", "1"))
    script.write_text(render(job))
    task = {"SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "2", "SLURM_CPUS_PER_TASK": "1"}

    done = run_task(script, {**task, "HPO_DATABASE_URL": initialised_db})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "slurm-77_2 on" in done.stdout and "restart 0" in done.stdout
    requeued = run_task(script, {**task, "SLURM_RESTART_COUNT": "1", "HPO_DATABASE_URL": initialised_db})
    assert requeued.returncode == 0, requeued.stderr[-2000:]
    found = rows(engine, "SELECT worker, state FROM trial_results ORDER BY worker")
    assert found == [{"worker": "slurm-77_2", "state": "COMPLETE"}, {"worker": "slurm-77_2-requeue1", "state": "COMPLETE"}]

    missing = run_task(script, task)
    assert missing.returncode == 2 and "HPO_DATABASE_URL is not set" in missing.stderr


FAKE_SBATCH = """#!/bin/sh
printf '%s\\n' "$*" >> "$FAKE_SBATCH_LOG"
echo "4242;cluster"
"""


def run_cli(*argv: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    return exit_info.value.code


def test_cli_writes_and_submits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SBATCH_LOG", str(tmp_path / "sbatch.log"))
    out, logs = tmp_path / "w.sbatch", tmp_path / "logs"

    monkeypatch.delenv("HPO_DATABASE_URL", raising=False)
    assert run_cli("cluster", "slurm", "--workers", "4", "--out", str(out), "--log-dir", str(logs), "--submit") == 2
    assert "HPO_DATABASE_URL is not set" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "sbatch.log").exists(), "nothing written or submitted"

    monkeypatch.setenv("HPO_DATABASE_URL", "postgresql://u@db.example:5432/hpo?sslmode=verify-full")
    assert run_cli("cluster", "slurm", "--workers", "4", "--gpus-per-worker", "1", "--out", str(out), "--log-dir", str(logs), "--submit") == 0
    assert "submitted job array 4242" in capsys.readouterr().out
    assert (tmp_path / "sbatch.log").read_text().split() == ["--parsable", str(out)]
    assert logs.is_dir() and os.access(out, os.X_OK)
    assert directives(out.read_text())["gres"] == "gpu:1"


def fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listing: list[str]) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\n" + "".join(f"echo '{line}'\n" for line in listing))
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


FOUR_GPUS = [f"{i}, GPU-uuid-{i}, NVIDIA H100" for i in range(4)]


@pytest.mark.parametrize(
    ("listing", "visible", "keys"),
    [
        (FOUR_GPUS, "2", ["GPU-uuid-2"]),  # Slurm without device confinement: the node's own index
        (FOUR_GPUS, "GPU-uuid-3,GPU-uuid-1", ["GPU-uuid-3", "GPU-uuid-1"]),
        (["0, GPU-uuid-5, NVIDIA H100"], "0", ["GPU-uuid-5"]),  # confined: nvidia-smi sees only ours
        ([], "1", ["HOST:1"]),  # no nvidia-smi answer: Slurm's word, named by host
        (FOUR_GPUS, "", []),
    ],
)
def test_scheduler_gpus_follow_cuda_visible_devices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listing: list[str], visible: str, keys: list[str]
) -> None:
    fake_nvidia_smi(tmp_path, monkeypatch, listing)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    import socket

    gpus = leases.scheduler_gpus()
    assert [g.key for g in gpus] == [k.replace("HOST", socket.gethostname()) for k in keys]
    assert [g.visible_id for g in gpus] == [v for v in visible.split(",") if v]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == visible, "left as the scheduler set it"


def test_bound_by_scheduler_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(leases.ENV_GPU_BINDING, raising=False)
    assert not leases.bound_by_scheduler()
    monkeypatch.setenv(leases.ENV_GPU_BINDING, "scheduler")
    assert leases.bound_by_scheduler()
    monkeypatch.setenv(leases.ENV_GPU_BINDING, "slurm")
    with pytest.raises(UserError, match="must be 'lease' or 'scheduler'"):
        leases.bound_by_scheduler()


def test_recorded_binding_never_waits(engine: sa.Engine) -> None:
    gpu = leases.Gpu(key="GPU-uuid-0", index=0, name="NVIDIA H100", visible_id="0")
    held = leases.acquire(engine, [gpu], "leaser", share=1, ttl_s=60)
    assert held is not None and leases.acquire(engine, [gpu], "other", share=1, ttl_s=60) is None
    recorded = [leases.record(engine, gpu, f"slurm-1_{i}", ttl_s=60) for i in range(3)]
    assert [r.slot for r in recorded] == [1, 2, 3], "recorded beside the lease, no waiting"
    found = rows(engine, "SELECT worker FROM device_leases WHERE device = 'GPU-uuid-0' ORDER BY slot")
    assert [r["worker"] for r in found] == ["leaser", "slurm-1_0", "slurm-1_1", "slurm-1_2"]
