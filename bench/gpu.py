"""The trainer on one GPU: every budget's widest and deepest shape, where a step's time goes, GPU
sharing by real workers, out-of-memory recovery, and the default matrix's GPU-hours. One script, one go.

    python bench/gpu.py --out DIR                   # a GPU host: about 6-8 minutes on an H100
    python bench/gpu.py --device cpu --quick --out DIR    # CPU smoke run (CI): seconds

It writes DIR/gpu.json and DIR/gpu.md and prints the Markdown. Parts (each in the JSON):

1. shapes: for each budget the widest and the deepest feasible architecture (RevIN on, head dim
   nearest 64), trained by `worker.train.train` for 2 epochs on the SPY a25 h1 training split, once
   with the code path of before ("before": PyTorch's default AdamW and clip, i.e. foreach on CUDA and
   a loop over tensors on CPU, eager steps) and once as now ("after": fused AdamW on CUDA, foreach on
   CPU, step mode chosen by the trainer). s/epoch is the second epoch's wall time
   (training + validation, as a trial sees it); samples/s the training samples per second of
   training time. FLOP per training sample = 6 x the multiply-adds of one forward pass per token x
   11 patches, where the multiply-adds per token are the weight matrices' (qkv, attention output,
   FFN, patch embedding, head) plus the attention scores and their weighting (2 x patches x d_model
   per layer). MFU = achieved FLOP/s over the card's dense bf16 peak (PEAK_BF16_TFLOPS, by device
   name). Beside it, the hardware peer: a bf16 matmul of the layer's own shape (batch x patches by
   d_model by d_ff), timed on the same card in the same run.
2. breakdown: one step of the 2B widest shape (CPU quick: the smallest budget's widest) split into
   forward, backward, gradient clip, optimizer, evaluation, for PyTorch's default AdamW and clip and
   the trainer's (fused on CUDA, foreach on CPU); the backward
   again with bf16 parameters (no fp32 master weights, no per-step weight casts) to test whether the
   casts explain a backward that costs far more than twice the forward; and the top CUDA kernels of
   forward+backward from torch.profiler (which attention kernel ran, what dominated).
3. share: the reference-schedule 2M study trained by N real `worker --device cuda --gpu-share N`
   processes on one GPU, N in 1, 2, 4, 8, through the CLI only (`coordinator data import/build`,
   `coordinator create-studies`, `worker`) against `--database-url` or a private embedded PostgreSQL.
   Aggregate trials/hour, per-trial seconds and epochs run (early stopping), the step modes trials
   chose, and the lease table (device_leases) as seen while they ran. Each level stops at
   --share-seconds; trials still running then are not counted.
4. oom: the 2B deepest shape at a micro-batch too large for the card, recovered by halving (the
   values used are recorded). CPU: skipped (tests/test_train.py simulates it).
5. projection: GPU-hours of the default matrix (4 budgets x 3 horizons x 50 trials, plus one final
   evaluation run per study), per budget: trials x epochs per trial x s/epoch / share speed-up. See
   `projection` for the exact formula and what each input is.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import worker.train as train_module  # noqa: E402
from coordinator.data.registry import dataset_from_file  # noqa: E402
from coordinator.data.samples import Samples, make_samples  # noqa: E402
from coordinator.data.splits import default_splits  # noqa: E402
from coordinator.studies.architecture import Architecture  # noqa: E402
from coordinator.studies.search_space import (  # noqa: E402
    TrialConfig,
    default_search_space,
    feasible_architectures,
    parse_budget,
)
from worker.model import PatchTST  # noqa: E402
from worker.train import DeviceData, clip_gradients, make_optimizer  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CSV = REPO.parent / "shared" / "data" / "SPY.csv"
# Dense bf16 peak by device name (TFLOP/s), from the vendors' data sheets; --peak-tflops overrides.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}
GPU_HOURS_GOAL = 8.0
MATRIX_HORIZONS = 3  # the default matrix: every budget at horizons 1, 3, 5
MATRIX_TRIALS = 50  # per study
FINAL_RUNS = 1  # per study: the final evaluation of the best trial, counted as one more trial
REFERENCE_MAX_EPOCHS = 30  # the reference schedule's cap: the projection's bound when no trial ran
BATCH_MIX = (64, 128, 256)  # the sampled batch sizes: a step-bound shape pays per step, not per sample


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one run measures; --quick on CPU shrinks everything to seconds."""

    device: str
    budgets: tuple[str, ...]
    batch_size: int
    n_train: int | None  # training windows per epoch (None: the whole split)
    n_val: int | None
    breakdown_budget: str
    breakdown_steps: int
    share_levels: tuple[int, ...]
    share_budget: str
    share_preset: str
    share_trials_per_worker: int
    share_seconds: float
    share_synthetic: float | None  # seconds per trial instead of training (CPU quick: the plumbing only)
    oom_batch: int | None  # None: no real out-of-memory on this device


def make_plan(args: argparse.Namespace) -> Plan:
    on_cuda = args.device.startswith("cuda")
    if args.quick and not on_cuda:
        plan = Plan(args.device, ("100K",), 32, 128, 128, "100K", 3, (2,), "100K", "smoke", 2, 120.0, 0.5, None)
    elif args.quick:
        plan = Plan(args.device, ("2M", "2B"), 256, None, None, "2B", 5, (1, 4), "2M", "default", 1, 60.0, None, 4096)
    else:
        plan = Plan(args.device, ("2M", "20M", "200M", "2B"), 256, None, None, "2B", 10, (1, 2, 4, 8), "2M", "default", 2, 45.0, None, 4096)
    overrides: dict[str, Any] = {}
    if args.budgets:
        overrides["budgets"] = tuple(args.budgets.split(","))
    if args.share_levels is not None:
        overrides["share_levels"] = tuple(int(x) for x in args.share_levels.split(",") if x)
    if args.share_seconds:
        overrides["share_seconds"] = args.share_seconds
    if args.breakdown_budget:
        overrides["breakdown_budget"] = args.breakdown_budget
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    return dataclasses.replace(plan, **overrides)


# ---------------------------------------------------------------- data and shapes


def spy_samples(csv: Path) -> Samples:
    dataset = dataset_from_file(csv)
    return make_samples(dataset, 1, default_splits(dataset.frame.index))


def subset(samples: Samples, n_train: int | None, n_val: int | None) -> Samples:
    index = {**samples.index, "train": samples.index["train"][:n_train], "val": samples.index["val"][:n_val]}
    return dataclasses.replace(samples, index=index)


def extremes(budget: str, n_features: int) -> dict[str, Architecture]:
    """The widest and the deepest feasible shape (RevIN on, head dim nearest 64, closest to budget)."""
    space = default_search_space(parse_budget(budget), n_features)
    archs = [a for a in feasible_architectures(space) if a.revin]

    def usual(a: Architecture) -> bool:
        return a.n_heads == min(space.heads_for(a.d_model), key=lambda h: abs(a.d_model // h - 64))

    def gap(a: Architecture) -> int:
        return abs(a.n_params - space.budget_params)

    shapes = [a for a in archs if usual(a)]
    return {
        "widest": min(shapes, key=lambda a: (-a.d_model, gap(a))),
        "deepest": min(shapes, key=lambda a: (-a.n_layers, gap(a))),
    }


def macs_per_token(arch: Architecture) -> int:
    """Multiply-adds of one forward pass per patch token (the documented FLOP count's basis)."""
    d, p = arch.d_model, arch.n_patches
    per_layer = 4 * d * d + 2 * d * arch.d_ff + 2 * p * d  # qkv + out proj, FFN, scores and weighting
    return arch.n_layers * per_layer + arch.patch_len * arch.n_features * d + d  # + patch embedding, head (P*d per sample)


def flops_per_sample(arch: Architecture) -> float:
    return 6.0 * macs_per_token(arch) * arch.n_patches


def peak_tflops(device_name: str, override: float | None) -> float | None:
    if override:
        return override
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name), None) if device_name.startswith("cuda") else None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeat: int) -> float:
    """Seconds per call (min over `repeat` calls after one warm-up)."""
    fn()
    best = math.inf
    for _ in range(repeat):
        sync(device)
        tick = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - tick)
    return best


def matmul_tflops(arch: Architecture, batch: int, device: torch.device) -> float:
    """The hardware peer: a matmul of the FFN's own shape (tokens x d_model @ d_model x d_ff)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tokens = batch * arch.n_patches
    a = torch.randn(tokens, arch.d_model, device=device, dtype=dtype)
    b = torch.randn(arch.d_model, arch.d_ff, device=device, dtype=dtype)
    seconds = timed(lambda: a @ b, device, repeat=10)
    return 2.0 * tokens * arch.d_model * arch.d_ff / seconds / 1e12


def bench_config(arch: Architecture, batch: int, epochs: int = 2) -> TrialConfig:
    return TrialConfig(
        architecture=arch,
        learning_rate=3e-4,
        weight_decay=0.01,
        dropout=0.1,
        warmup_frac=0.1,
        max_epochs=epochs,
        patience=epochs,
        batch_size=batch,
        seed=0,
    )


VARIANTS = {
    "before": {"step_mode": "eager", "optimizer": "default"},
    "after": {"step_mode": "auto", "optimizer": None},
}


def bench_shapes(samples: Samples, plan: Plan, peak: float | None) -> list[dict[str, Any]]:
    """Part 1: widest and deepest of each budget, before and after, same card, same run."""
    dev = torch.device(plan.device)
    data = subset(samples, plan.n_train, plan.n_val)
    n_features = len(samples.input_columns)
    rows = []
    for budget in plan.budgets:
        for kind, arch in extremes(budget, n_features).items():
            peer = matmul_tflops(arch, plan.batch_size, dev)
            for variant, options in VARIANTS.items():
                started = time.perf_counter()
                result = train_module.train(bench_config(arch, plan.batch_size), data, train_module.TrainOptions(device=plan.device, **options))
                tflops = flops_per_sample(arch) * result.samples_per_s / 1e12
                used = result.values_used
                row = {
                    "budget": budget,
                    "shape": kind,
                    "d_model": arch.d_model,
                    "n_layers": arch.n_layers,
                    "n_heads": arch.n_heads,
                    "d_ff": arch.d_ff,
                    "params": result.n_params,
                    "batch": plan.batch_size,
                    "variant": variant,
                    "optimizer": used["optimizer"],
                    "step_mode": used["step_mode"],
                    "step_ms_eager": used["step_ms_eager"],
                    "step_ms_graph": used["step_ms_graph"],
                    "graph_error": used.get("graph_error"),
                    "micro_batch": used["micro_batch"],
                    "s_per_epoch": result.epochs[-1].seconds,
                    "samples_per_s": result.samples_per_s,
                    "tflops": tflops,
                    "mfu": tflops / peak if peak else None,
                    "matmul_tflops": peer,
                    "of_matmul": tflops / peer,
                    "peak_gb": result.peak_memory_mb / 1024,
                    "wall_s": time.perf_counter() - started,
                }
                rows.append(row)
                print(
                    f"  {budget:>5} {kind:<7} d{arch.d_model} L{arch.n_layers} {variant:<6} {row['step_mode']:<10} "
                    f"{row['s_per_epoch']:7.2f} s/epoch {row['samples_per_s']:9.0f} samples/s {tflops:8.3f} TFLOP/s",
                    flush=True,
                )
                del result
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------- step breakdown


def bench_breakdown(samples: Samples, plan: Plan) -> dict[str, Any]:
    """Part 2: one step of the breakdown shape, phase by phase, PyTorch's default vs the trainer's AdamW and clip."""
    dev = torch.device(plan.device)
    on_cuda = dev.type == "cuda"
    arch = extremes(plan.breakdown_budget, len(samples.input_columns))["widest"]
    data = DeviceData(subset(samples, plan.n_train, plan.n_val), dev)
    batch = data.index["train"][: plan.batch_size]
    eval_batch = data.index["val"][: plan.batch_size * train_module.EVAL_BATCH_FACTOR]
    autocast = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=on_cuda, cache_enabled=False)
    torch.manual_seed(0)
    with dev:
        model = PatchTST(arch, dropout=0.1)
    out: dict[str, Any] = {"budget": plan.breakdown_budget, "d_model": arch.d_model, "n_layers": arch.n_layers,
                           "n_heads": arch.n_heads, "params": arch.n_params, "batch": plan.batch_size, "phases_ms": {}}

    def loss_of(m: torch.nn.Module) -> torch.Tensor:
        with autocast:
            logits = m(data.windows(batch))
        return F.binary_cross_entropy_with_logits(logits.float(), data.labels[batch])

    implementations = ["default", "fused"] if on_cuda else ["default", "foreach"]
    for implementation in implementations:
        optimizer = make_optimizer(model, 1e-4, 0.01, implementation=implementation)
        loss_of(model).backward()
        optimizer.step()  # allocates the state
        phases = {name: [] for name in ("forward", "backward", "clip", "optimizer", "evaluation")}
        for _ in range(plan.breakdown_steps):
            optimizer.zero_grad(set_to_none=True)
            sync(dev)
            t0 = time.perf_counter()
            loss = loss_of(model)
            sync(dev)
            t1 = time.perf_counter()
            loss.backward()
            sync(dev)
            t2 = time.perf_counter()
            clip_gradients(model, 1.0, None if implementation == "default" else True)
            sync(dev)
            t3 = time.perf_counter()
            optimizer.step()
            sync(dev)
            t4 = time.perf_counter()
            model.eval()
            with torch.no_grad(), autocast:
                model(data.windows(eval_batch))
            model.train()
            sync(dev)
            t5 = time.perf_counter()
            for name, seconds in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
                phases[name].append(seconds)
        out["phases_ms"][implementation] = {name: 1000 * float(np.median(v)) for name, v in phases.items()}
        del optimizer
    model.zero_grad(set_to_none=True)
    if on_cuda:
        out["top_kernels"] = top_kernels(lambda: loss_of(model).backward())
        model.zero_grad(set_to_none=True)
        # The same forward and backward with bf16 parameters: no fp32 master weights, no casts.
        model.to(torch.bfloat16)
        fwd = timed(lambda: loss_of(model), dev, repeat=plan.breakdown_steps)
        both = timed(lambda: loss_of(model).backward(), dev, repeat=plan.breakdown_steps)
        out["bf16_params_ms"] = {"forward": 1000 * fwd, "backward": 1000 * (both - fwd)}
    return out


def top_kernels(step: Callable[[], None], n: int = 12) -> list[dict[str, Any]]:
    """The CUDA kernels that took the most time in two forward+backward passes."""
    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(2):
            step()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if getattr(e, "device_time_total", 0) > 0]
    events.sort(key=lambda e: e.device_time_total, reverse=True)
    return [{"kernel": e.key[:120], "ms_per_step": e.device_time_total / 2 / 1000, "calls_per_step": e.count / 2} for e in events[:n]]


# ---------------------------------------------------------------- real workers sharing one GPU


class Service:
    """The CLI against one database: `--database-url` given, or a private embedded PostgreSQL."""

    def __init__(self, url: str | None, workdir: Path) -> None:
        self.workdir = workdir
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.env["SCALESWEEP_HOME"] = str(workdir / "home")
        self.env.pop("HPO_DATABASE_URL", None)
        self.embedded = url is None
        self.url = url or self.cli("coordinator", "db", "url").strip().splitlines()[-1]

    def cli(self, program: str, *args: str) -> str:
        command = [sys.executable, "-m", f"{program}.cli"]
        if program == "coordinator" and args[:2] != ("db", "url"):
            command += ["--database-url", self.url]
        done = subprocess.run([*command, *args], capture_output=True, text=True, env=self.env, cwd=REPO, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"{program} {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
        return done.stdout

    def sql(self, query: str) -> list[tuple]:
        import sqlalchemy as sa

        engine = sa.create_engine(self.url.replace("postgresql://", "postgresql+psycopg://", 1))
        try:
            with engine.connect() as conn:
                return [tuple(row) for row in conn.execute(sa.text(query))]
        finally:
            engine.dispose()

    def stop(self) -> None:
        """Stop the embedded server this run started (its postmaster PID is in the data folder)."""
        pid_file = self.workdir / "home" / "pg" / "postmaster.pid"
        if self.embedded and pid_file.exists():
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)


def bench_share(csv: Path, plan: Plan, database_url: str | None, on_level: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Part 3: N real workers on one device at --gpu-share N, one fresh study per N."""
    workdir = Path(tempfile.mkdtemp(prefix="scalesweep-gpu-bench-"))
    service = Service(database_url, workdir)
    levels: list[dict[str, Any]] = []
    try:
        service.cli("coordinator", "db", "init")
        service.cli("coordinator", "data", "import", "SPY", str(csv))
        built = service.cli("coordinator", "data", "build", "--symbol", "SPY")
        run_tag = datetime.datetime.now(datetime.UTC).strftime("%H%M%S")
        for n in plan.share_levels:
            levels.append(share_level(service, plan, n, f"gpubench{run_tag}n{n}"))
            on_level({"levels": levels, "embedded_db": service.embedded})
            print(f"  share {n}: {levels[-1]['trials_per_hour']:.0f} trials/hour ({levels[-1]['finished']} finished)", flush=True)
    finally:
        service.stop()
    return {"levels": levels, "dataset": built.strip().splitlines()[-1:] or [""], "embedded_db": service.embedded}


def share_level(service: Service, plan: Plan, n: int, suffix: str) -> dict[str, Any]:
    target = n * plan.share_trials_per_worker
    service.cli(
        "coordinator", "create-studies", "--budgets", plan.share_budget, "--horizons", "1", "--trials", str(target),
        "--preset", plan.share_preset, "--suffix", suffix, "--no-baselines",
    )
    studies = f"*{suffix}*"
    device = "cuda" if plan.device.startswith("cuda") else "cpu"
    env = {**service.env, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // n))}
    logs = [service.workdir / f"worker-{suffix}-{i}.log" for i in range(n)]
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "--database-url", service.url, "--studies", studies, "--device", device,
             "--gpu-share", str(n), "--worker-id", f"bench-{suffix}-{i}",
             *(["--synthetic", str(plan.share_synthetic)] if plan.share_synthetic is not None else [])],
            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=REPO,
        )
        for i, log in enumerate(logs)
    ]
    leases: set[tuple] = set()
    deadline = started + plan.share_seconds
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(1.0)
        leases |= set(service.sql(f"SELECT device_name, slot, worker FROM device_leases WHERE worker LIKE 'bench-{suffix}-%'"))
    elapsed = time.monotonic() - started
    for p in procs:  # past the deadline: stop them (their running trials are failed and not counted)
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    rows = service.sql(
        "SELECT r.state, r.duration_s, r.epochs_run, r.worker, r.metrics->>'step_mode' FROM trial_records r "
        f"JOIN study_specs s USING (study_name) WHERE s.study_name LIKE '%{suffix}%' AND r.state IN ('COMPLETE', 'PRUNED')"
    )
    durations = [float(r[1]) for r in rows if r[1] is not None]
    epochs = [int(r[2]) for r in rows if r[2] is not None]
    return {
        "workers": n,
        "synthetic_trial_s": plan.share_synthetic,
        "target_trials": target,
        "finished": len(rows),
        "elapsed_s": elapsed,
        "stopped_at_deadline": elapsed >= plan.share_seconds,
        "trials_per_hour": 3600 * len(rows) / elapsed,
        "trial_s": {"min": min(durations, default=None), "median": float(np.median(durations)) if durations else None,
                    "max": max(durations, default=None)},
        "epochs_run": epochs,
        "step_modes": sorted({r[4] for r in rows if r[4]}),
        "leases": sorted([list(lease) for lease in leases], key=lambda x: (str(x[0]), x[1])),
        "worker_exit_codes": [p.returncode for p in procs],
        "log_tail": [log.read_text().strip().splitlines()[-1:] for log in logs if log.exists()],
    }


# ---------------------------------------------------------------- out of memory


def bench_oom(samples: Samples, plan: Plan) -> dict[str, Any]:
    """Part 4: the 2B deepest shape (the most activation memory per sample) at a batch of 4096,
    whose activations alone exceed an H100's or H200's memory, recovered by halving."""
    if plan.oom_batch is None:
        return {"skipped": "no real out-of-memory on CPU; tests/test_train.py simulates one and checks the halving"}
    arch = extremes("2B", len(samples.input_columns))["deepest"]
    data = subset(samples, plan.oom_batch, 256)
    started = time.perf_counter()
    result = train_module.train(bench_config(arch, plan.oom_batch, epochs=1), data, train_module.TrainOptions(device=plan.device))
    used = result.values_used
    torch.cuda.empty_cache()
    return {
        "d_model": arch.d_model, "n_layers": arch.n_layers, "batch": plan.oom_batch, "micro_batch": used["micro_batch"],
        "grad_accum": used["grad_accum"], "halvings": int(math.log2(plan.oom_batch // used["micro_batch"])),
        "step_mode": used["step_mode"], "peak_gb": result.peak_memory_mb / 1024, "seconds": time.perf_counter() - started,
    }


# ---------------------------------------------------------------- matrix projection


def projection(shapes: list[dict[str, Any]], share: dict[str, Any] | None, plan: Plan) -> dict[str, Any]:
    """GPU-hours of the default matrix, per budget, from this run's measurements:

        trials = horizons (3) x (trials per study (50) + final evaluation runs (1))
        hours  = trials x epochs per trial x s/epoch / share speed-up / 3600

    s/epoch: the mean of the widest and deepest shapes' "after" epochs (training + validation) at
    batch 256. The sampled batch sizes are 64, 128 and 256: a shape bound by its steps pays per step,
    so the bound `hours_batch_mix` multiplies by mean(256 / b) = 2.33. Epochs per trial: the mean
    epochs the 2M share trials ran under early stopping (reference schedule), applied to every
    budget; without share results, the schedule's cap (30). Share speed-up: trials/hour at the best
    share level over one worker, measured at 2M; other budgets are not shared (speed-up 1).
    """
    real_levels = [lv for lv in (share or {}).get("levels", []) if lv["synthetic_trial_s"] is None]
    epochs_seen = [e for level in real_levels for e in level["epochs_run"]]
    epochs = float(np.mean(epochs_seen)) if epochs_seen else float(REFERENCE_MAX_EPOCHS)
    speedup = 1.0
    levels = real_levels
    base = next((lv["trials_per_hour"] for lv in levels if lv["workers"] == 1 and lv["trials_per_hour"] > 0), None)
    best_level = max(levels, key=lambda lv: lv["trials_per_hour"], default=None)
    if base and best_level:
        speedup = max(1.0, best_level["trials_per_hour"] / base)
    mix = float(np.mean([max(BATCH_MIX) / b for b in BATCH_MIX]))
    trials = MATRIX_HORIZONS * (MATRIX_TRIALS + FINAL_RUNS)
    rows = []
    for budget in plan.budgets:
        after = [r for r in shapes if r["budget"] == budget and r["variant"] == "after"]
        if not after:
            continue
        s_epoch = float(np.mean([r["s_per_epoch"] for r in after]))
        by_shape = {r["shape"]: r["samples_per_s"] for r in after}
        # The goal: every budget's deepest shape within 3x of its widest in samples/s.
        wide_over_deep = by_shape["widest"] / by_shape["deepest"] if len(by_shape) == 2 else None
        shared = speedup if budget == plan.share_budget else 1.0
        hours = trials * epochs * s_epoch / shared / 3600
        rows.append({"budget": budget, "trials": trials, "epochs_per_trial": epochs, "s_per_epoch": s_epoch,
                     "share_speedup": shared, "gpu_hours": hours, "gpu_hours_batch_mix": hours * mix,
                     "widest_over_deepest_samples_per_s": wide_over_deep})
    total = sum(r["gpu_hours"] for r in rows)
    return {
        "rows": rows,
        "total_gpu_hours": total,
        "total_gpu_hours_batch_mix": sum(r["gpu_hours_batch_mix"] for r in rows),
        "goal_gpu_hours": GPU_HOURS_GOAL,
        "epochs_source": f"{plan.share_budget} share trials (early stopping)" if epochs_seen else f"schedule cap {REFERENCE_MAX_EPOCHS} (no trained share results)",
        "formula": projection.__doc__,
    }


# ---------------------------------------------------------------- report


def fmt(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        f"# bench/gpu.py on {env['device_name']} ({env['date']}, torch {env['torch']}, peak {fmt(env['peak_tflops'], '.0f')} TFLOP/s)",
        "",
        "## Widest and deepest shape per budget (before: PyTorch's default AdamW and clip, eager; after: the current trainer)",
        "",
        "| budget | shape | params | batch | variant | step mode | ms/step eager / graph | s/epoch | samples/s | TFLOP/s | MFU "
        "| layer matmul TFLOP/s | of matmul | peak GB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["shapes"]:
        lines.append(
            f"| {r['budget']} | {r['shape']} d{r['d_model']} L{r['n_layers']} h{r['n_heads']} | {r['params'] / 1e6:.2f}M | {r['batch']} "
            f"| {r['variant']} | {r['step_mode']} | {fmt(r['step_ms_eager'], '.1f')} / {fmt(r['step_ms_graph'], '.1f')} "
            f"| {r['s_per_epoch']:.2f} | {r['samples_per_s']:,.0f} | {r['tflops']:.3g} | {'-' if r['mfu'] is None else format(100 * r['mfu'], '.1f') + '%'} "
            f"| {r['matmul_tflops']:.3g} | {100 * r['of_matmul']:.1f}% | {r['peak_gb']:.2f} |"
        )
    b = result.get("breakdown")
    if b:
        lines += ["", f"## One step of {b['budget']} widest (d{b['d_model']} L{b['n_layers']}, batch {b['batch']}), median ms", "",
                  "| optimizer | forward | backward | clip | optimizer | evaluation |", "|---|---|---|---|---|---|"]
        for impl, ph in b["phases_ms"].items():
            lines.append(f"| {impl} | {ph['forward']:.2f} | {ph['backward']:.2f} | {ph['clip']:.2f} | {ph['optimizer']:.2f} | {ph['evaluation']:.2f} |")
        if "bf16_params_ms" in b:
            bf = b["bf16_params_ms"]
            lines.append(f"\nbf16 parameters (no fp32 master weights): forward {bf['forward']:.2f} ms, backward {bf['backward']:.2f} ms")
        if b.get("top_kernels"):
            lines += ["", "| top CUDA kernels (forward+backward) | ms/step | calls/step |", "|---|---|---|"]
            lines += [f"| `{k['kernel']}` | {k['ms_per_step']:.2f} | {k['calls_per_step']:.0f} |" for k in b["top_kernels"]]
    s = result.get("share")
    if s and s.get("levels"):
        synthetic = s["levels"][0]["synthetic_trial_s"]
        what = f"synthetic {synthetic:g} s trials: the CLI, leases and counting only" if synthetic is not None else "trained trials"
        lines += ["", f"## Real workers sharing one device ({what}; `worker --gpu-share N`)", "",
                  "| workers | finished | elapsed s | trials/hour | trial s min/median/max | epochs run | step modes | leases (device, slot) |",
                  "|---|---|---|---|---|---|---|---|"]
        for lv in s["levels"]:
            t = lv["trial_s"]
            leases = ", ".join(f"{d} #{slot}" for d, slot, _ in lv["leases"]) or "none (CPU)"
            lines.append(
                f"| {lv['workers']} | {lv['finished']}/{lv['target_trials']} | {lv['elapsed_s']:.0f} | {lv['trials_per_hour']:.0f} "
                f"| {fmt(t['min'], '.0f')}/{fmt(t['median'], '.0f')}/{fmt(t['max'], '.0f')} | {lv['epochs_run']} | {', '.join(lv['step_modes'])} | {leases} |"
            )
    if s and s.get("error"):
        lines += ["", f"Share run stopped: {s['error']}"]
    o = result.get("oom")
    if o:
        lines += ["", "## Out of memory recovered by halving", ""]
    if o and ("skipped" in o or "error" in o):
        lines.append(f"not measured: {o.get('skipped') or o.get('error')}")
    elif o:
        lines.append(f"2B deepest d{o['d_model']} L{o['n_layers']}, batch {o['batch']}: {o['halvings']} halvings to micro-batch "
                     f"{o['micro_batch']} x {o['grad_accum']} accumulated, peak {o['peak_gb']:.1f} GB, {o['seconds']:.1f} s")
    p = result.get("projection")
    if p:
        lines += ["", f"## Default matrix projection (epochs per trial: {p['epochs_source']})", "",
                  "| budget | trials | epochs/trial | s/epoch | share speed-up | GPU-hours | with batch mix | widest/deepest samples/s |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in p["rows"]:
            lines.append(f"| {r['budget']} | {r['trials']} | {r['epochs_per_trial']:.1f} | {r['s_per_epoch']:.2f} | {r['share_speedup']:.2f} "
                         f"| {r['gpu_hours']:.2f} | {r['gpu_hours_batch_mix']:.2f} | {fmt(r['widest_over_deepest_samples_per_s'], '.1f')}x |")
        lines.append(f"| total | | | | | {p['total_gpu_hours']:.2f} | {p['total_gpu_hours_batch_mix']:.2f} (goal {p['goal_gpu_hours']:g}) | goal ≤ 3x |")
    lines += ["", f"Whole run: {result['wall_s']:.0f} s."]
    return "\n".join(lines) + "\n"


def guarded(name: str, fn: Callable[[], Any], errors: dict[str, str]) -> Any:
    """One part failing must not lose the others' measurements (device time is scarce)."""
    try:
        return fn()
    except Exception as exc:  # recorded in the JSON with its type; the run goes on
        errors[name] = f"{type(exc).__name__}: {exc}"[:1000]
        print(f"  {name} failed: {errors[name]}", flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu.json and gpu.md")
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda when available)")
    parser.add_argument("--quick", action="store_true", help="a few seconds (CPU) or about two minutes (GPU)")
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="the SPY daily bars")
    parser.add_argument("--budgets", default=None, help="comma-separated budgets for the shape table")
    parser.add_argument("--breakdown-budget", default=None, help="budget whose widest shape the step breakdown times")
    parser.add_argument("--batch-size", type=int, default=None, help="batch of the shapes and the breakdown")
    parser.add_argument("--parts", default="shapes,breakdown,share,oom", help="which parts to run")
    parser.add_argument("--share-levels", default=None, help="workers per device to try, e.g. 1,2,4,8")
    parser.add_argument("--share-seconds", type=float, default=None, help="time limit of each share level")
    parser.add_argument("--database-url", default=None, help="PostgreSQL for the share part; default a private embedded one")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: by device name)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads on CPU")
    args = parser.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = make_plan(args)
    parts = set(args.parts.split(","))
    started = time.perf_counter()
    # The bench measures speed, not learning: a shape whose 2 epochs leave constant predictions
    # must still report its timings, so the trainer's collapse check is off in this process.
    train_module.COLLAPSE_STD = 0.0
    dev = torch.device(args.device)
    device_name = train_module.device_name(dev)
    peak = peak_tflops(device_name, args.peak_tflops)
    samples = spy_samples(args.csv)
    print(f"{device_name}, torch {torch.__version__}, SPY a25 h1 {len(samples.index['train'])} train windows; plan {plan}", flush=True)
    errors: dict[str, str] = {}
    result: dict[str, Any] = {
        "environment": {
            "device_name": device_name,
            "torch": torch.__version__,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "peak_tflops": peak,
            "cpu_threads": torch.get_num_threads(),
            "plan": dataclasses.asdict(plan),
        },
        "flop_count": "6 x multiply-adds per token x 11 patches per training sample; see the module doc",
    }
    args.out.mkdir(parents=True, exist_ok=True)

    def save() -> str:
        """Write what is measured so far: a run stopped by a time limit keeps its finished parts."""
        result["projection"] = projection(result["shapes"], result.get("share"), plan)
        result["errors"] = errors
        result["wall_s"] = time.perf_counter() - started
        (args.out / "gpu.json").write_text(json.dumps(result, indent=2, default=str))
        report = markdown(result)
        (args.out / "gpu.md").write_text(report)
        return report

    result["shapes"] = []
    if "shapes" in parts:
        result["shapes"] = guarded("shapes", lambda: bench_shapes(samples, plan, peak), errors) or []
        save()
    if "breakdown" in parts:
        result["breakdown"] = guarded("breakdown", lambda: bench_breakdown(samples, plan), errors)
        save()
    if "oom" in parts:
        result["oom"] = guarded("oom", lambda: bench_oom(samples, plan), errors) or {"error": errors.get("oom")}
        save()
    if "share" in parts and plan.share_levels:
        def level_done(partial: dict[str, Any]) -> None:
            result["share"] = partial
            save()

        share = guarded("share", lambda: bench_share(args.csv, plan, args.database_url, level_done), errors)
        result["share"] = share or {**result.get("share", {}), "error": errors.get("share")}
    report = save()
    print(report)
    if errors:
        print(f"parts that failed: {', '.join(errors)} (see gpu.json 'errors')", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
