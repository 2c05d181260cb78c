"""GPU leases: each worker owns one GPU (or one of `share` slots on it), recorded in PostgreSQL.

`docker compose --scale worker=N` gives every replica the same GPU reservation, so the replicas
must agree among themselves who uses which device. A lease is a row (device, slot) with the worker's
id and an expiry that the worker's heartbeat pushes forward; a worker that dies stops refreshing, its
lease expires after the grace period and the next worker may take it. The worker then sets
CUDA_VISIBLE_DEVICES to its device before CUDA is initialised, so it only ever sees that GPU.

Devices are identified by their UUID (from nvidia-smi), which is the same in every container on a
machine and unique across machines. Pure SQL, no torch: the tests drive it with fake devices.
"""

from __future__ import annotations

import datetime
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from coordinator.errors import UserError
from coordinator.store.tables import device_leases

ENV_GPU_SHARE = "SCALESWEEP_GPU_SHARE"
# "scheduler": a batch system (Slurm's --gres) chose this process's GPUs and set CUDA_VISIBLE_DEVICES;
# the worker then uses them as given and only records them (see `scheduler_gpus`, `record`).
ENV_GPU_BINDING = "SCALESWEEP_GPU_BINDING"
RECORD_SLOTS = 1024  # a recorded binding never waits: some slot is always free
LEASE_LOCK_NAMESPACE = 0x5CA2  # advisory lock key serialising lease changes

# The table is declared with the ledger's (coordinator/lifecycle/ledger.py): the control plane owns the schema.


@dataclass(frozen=True)
class Gpu:
    key: str  # what the lease is on (UUID)
    index: int
    name: str
    visible_id: str  # what to put in CUDA_VISIBLE_DEVICES


@dataclass(frozen=True)
class Lease:
    gpu: Gpu
    slot: int
    worker: str

    def describe(self) -> str:
        return f"cuda:{self.gpu.index} {self.gpu.name} (lease slot {self.slot})"


def acquire(engine: sa.Engine, gpus: list[Gpu], worker: str, *, share: int, ttl_s: int) -> Lease | None:
    """Lease the least-shared free (device, slot) among `gpus`; None when all are taken.

    Expired leases count as free. One advisory lock serialises acquisitions, so two workers never
    take the same slot even when they start at the same instant.
    """
    if share < 1:
        raise UserError(f"GPU share must be at least 1, got {share}")
    t = device_leases
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:ns, 0)"), {"ns": LEASE_LOCK_NAMESPACE})
        active = conn.execute(
            sa.select(t.c.device, t.c.slot).where(t.c.device.in_([g.key for g in gpus]), t.c.expires_at > sa.func.now())
        ).all()
        taken = {(row.device, row.slot) for row in active}
        by_load = sorted(gpus, key=lambda g: (sum(1 for d, _ in taken if d == g.key), g.index))
        for gpu in by_load:
            free = [s for s in range(share) if (gpu.key, s) not in taken]
            if not free:
                continue
            values = {
                "device": gpu.key,
                "slot": free[0],
                "worker": worker,
                "host": socket.gethostname(),
                "device_index": gpu.index,
                "device_name": gpu.name,
                "leased_at": sa.func.now(),
                "expires_at": sa.func.now() + datetime.timedelta(seconds=ttl_s),
            }
            stmt = insert(t).values(**values)
            stmt = stmt.on_conflict_do_update(index_elements=["device", "slot"], set_={k: stmt.excluded[k] for k in values})
            conn.execute(stmt)
            return Lease(gpu, free[0], worker)
    return None


def bound_by_scheduler() -> bool:
    """True when $SCALESWEEP_GPU_BINDING says a batch system already chose this process's GPUs."""
    value = os.environ.get(ENV_GPU_BINDING, "lease")
    if value not in ("lease", "scheduler"):
        raise UserError(f"${ENV_GPU_BINDING} must be 'lease' or 'scheduler', got {value!r}")
    return value == "scheduler"


def scheduler_gpus() -> list[Gpu]:
    """The GPUs a batch system bound this process to, as its CUDA_VISIBLE_DEVICES names them.

    Each entry is matched to nvidia-smi's list by index or UUID. Where the node confines the job's
    devices (Slurm's ConstrainDevices), nvidia-smi sees only the bound GPUs and numbers them from 0
    like CUDA does, so a list of the same length is taken in order. An entry nothing matches is still
    used, named by host and entry: the scheduler's word is final, the lease only records it.
    """
    restrict = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    wanted = [item.strip() for item in restrict.split(",") if item.strip()]
    if not wanted or wanted == ["-1"] or wanted == ["NoDevFiles"]:
        return []
    listed = nvidia_smi_gpus() or []
    by_id = {str(g.index): g for g in listed} | {g.key: g for g in listed}
    if all(w in by_id for w in wanted):
        found = [by_id[w] for w in wanted]
    elif len(listed) == len(wanted):
        found = listed
    else:
        host = socket.gethostname()
        found = [by_id.get(w) or Gpu(key=f"{host}:{w}", index=i, name="cuda", visible_id=w) for i, w in enumerate(wanted)]
    # Leave CUDA_VISIBLE_DEVICES as the scheduler set it: these are already the only GPUs CUDA sees.
    return [Gpu(key=g.key, index=g.index, name=g.name, visible_id=w) for g, w in zip(found, wanted, strict=True)]


def record(engine: sa.Engine, gpu: Gpu, worker: str, *, ttl_s: int) -> Lease:
    """A lease row for a GPU the scheduler gave us: for the record (who used which device), never a wait."""
    lease = acquire(engine, [gpu], worker, share=RECORD_SLOTS, ttl_s=ttl_s)
    assert lease is not None, "a recorded binding always finds a slot"
    return lease


def refresh(engine: sa.Engine, lease: Lease, *, ttl_s: int) -> bool:
    """Push the expiry forward; False if the lease expired and someone else took the slot."""
    t = device_leases
    with engine.begin() as conn:
        result = conn.execute(
            t.update()
            .where(t.c.device == lease.gpu.key, t.c.slot == lease.slot, t.c.worker == lease.worker)
            .values(expires_at=sa.func.now() + datetime.timedelta(seconds=ttl_s))
        )
    return result.rowcount == 1


def release(engine: sa.Engine, lease: Lease) -> None:
    t = device_leases
    with engine.begin() as conn:
        conn.execute(t.delete().where(t.c.device == lease.gpu.key, t.c.slot == lease.slot, t.c.worker == lease.worker))


def gpu_share(flag: int | None) -> int:
    """Workers per GPU: --gpu-share, else $SCALESWEEP_GPU_SHARE, else 1."""
    if flag is not None:
        return flag
    raw = os.environ.get(ENV_GPU_SHARE, "1")
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"${ENV_GPU_SHARE} must be an integer, got {raw!r}") from None


def visible_gpus() -> list[Gpu]:
    """The GPUs this process may use, without initialising CUDA (so CUDA_VISIBLE_DEVICES still applies).

    nvidia-smi lists every GPU of the machine; an existing CUDA_VISIBLE_DEVICES narrows the list.
    Without nvidia-smi, torch counts them in a child process (counting in this process would
    initialise CUDA before we can choose a device).
    """
    gpus = nvidia_smi_gpus()
    if gpus is None:
        # No nvidia-smi: without NVIDIA device nodes there is nothing to count (and no torch start-up to pay).
        gpus = torch_counted_gpus() if Path("/dev/nvidia0").exists() else []
    restrict = os.environ.get("CUDA_VISIBLE_DEVICES")
    if restrict is None:
        return gpus
    wanted = [item.strip() for item in restrict.split(",") if item.strip()]
    if not wanted or wanted == ["-1"]:
        return []
    return [g for g in gpus if str(g.index) in wanted or g.key in wanted]


def nvidia_smi_gpus() -> list[Gpu] | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,uuid,name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    gpus = []
    for line in out.strip().splitlines():
        index, uuid, name = (part.strip() for part in line.split(",", 2))
        gpus.append(Gpu(key=uuid, index=int(index), name=name, visible_id=uuid))
    return gpus


def torch_counted_gpus() -> list[Gpu]:
    try:
        out = subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        count = int(out.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return []
    host = socket.gethostname()
    return [Gpu(key=f"{host}:{i}", index=i, name="cuda", visible_id=str(i)) for i in range(count)]
