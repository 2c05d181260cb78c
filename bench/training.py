"""Training throughput per parameter budget on the real SPY dataset, on CPU or CUDA.

    .venv/bin/python bench/training.py                       # CPU: 100K, 300K, 2M, 20M
    .venv/bin/python bench/training.py --device cuda         # GPU: 100K .. 2B, bf16 autocast
    .venv/bin/python bench/training.py --budgets 2M --steps 50 --batch-size 256 --compile --json out.json

For each budget: a representative architecture of its search space (GPT-like: ffn ratio 4, head
dim nearest 64, d_model / n_layers nearest 64), trained with the real trainer (`worker.train.train`)
for `--steps` optimizer steps on the SPY a25 training split (horizon 1), after a short warm-up run.
Prints the exact parameter count, training samples/s, seconds per full training epoch (the full
train split at that rate), peak memory (CUDA: max allocated; CPU: the process's peak RSS, budgets
run smallest first), and the achieved TFLOP/s and MFU (CUDA) with the usual estimate

    flops per sample = tokens * (6 * N + 12 * n_layers * d_model * tokens)      (tokens = patches)

i.e. 6N per token for the matrix multiplies (forward + backward) plus the attention scores.
The dataset is built from the CSV with the data layer's own functions (no database needed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from coordinator.data.location import real_data_dir  # noqa: E402
from coordinator.data.registry import dataset_from_file  # noqa: E402
from coordinator.data.samples import Samples, make_samples  # noqa: E402
from coordinator.data.splits import default_splits  # noqa: E402
from coordinator.studies.search_space import (  # noqa: E402
    Architecture,
    SearchSpace,
    TrialConfig,
    budget_label,
    default_search_space,
    feasible_architectures,
    parse_budget,
)
from worker.train import TrainOptions, TrialResult, train  # noqa: E402

DEFAULT_CSV = real_data_dir() / "SPY.csv"  # $SCALESWEEP_DATA, default ../shared/data
CPU_BUDGETS = "100K,300K,2M,20M"
CUDA_BUDGETS = "100K,300K,2M,20M,200M,2B"
VAL_SAMPLES = 256  # validation windows evaluated per run: enough for a finite AUC, cheap for 2B
# Dense bf16 peak by device name (TFLOP/s), for MFU; override with --peak-tflops.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}


def spy_samples(csv: Path, horizon: int) -> Samples:
    dataset = dataset_from_file(csv)
    return make_samples(dataset, horizon, default_splits(dataset.frame.index))


def representative(space: SearchSpace) -> Architecture:
    """A GPT-like shape: ffn ratio 4 (if feasible), head dim nearest 64, d_model / n_layers nearest 64."""
    archs = feasible_architectures(space)
    ratio4 = [a for a in archs if a.d_ff == 4 * a.d_model] or archs

    def head_dim_gap(a: Architecture) -> int:
        return abs(a.d_model // a.n_heads - 64)

    usual = [a for a in ratio4 if head_dim_gap(a) == min(head_dim_gap(b) for b in ratio4 if b.d_model == a.d_model)]
    return min(usual, key=lambda a: (abs(math.log(a.d_model / a.n_layers / 64)), abs(a.n_params - space.budget_params)))


def subset(samples: Samples, n_train: int) -> Samples:
    """The first n_train training windows and the first VAL_SAMPLES validation windows."""
    index = {**samples.index, "train": samples.index["train"][:n_train], "val": samples.index["val"][:VAL_SAMPLES]}
    return dataclasses.replace(samples, index=index)


def flops_per_sample(arch: Architecture) -> float:
    tokens = arch.n_patches
    return tokens * (6 * arch.n_params + 12 * arch.n_layers * arch.d_model * tokens)


def peak_tflops(device: str, override: float | None) -> float | None:
    if override:
        return override
    if not device.startswith("cuda"):
        return None
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device), None)


def bench_budget(samples: Samples, budget: int, args: argparse.Namespace) -> dict:
    arch = representative(default_search_space(budget, len(samples.input_columns)))
    config = TrialConfig(
        architecture=arch,
        learning_rate=1e-4,
        weight_decay=0.01,
        dropout=0.1,
        warmup_frac=0.1,
        max_epochs=1,
        patience=1,
        batch_size=args.batch_size,
        seed=0,
    )
    # Warm-up (allocator, kernels, torch.compile), then the timed run on `steps` batches.
    options = TrainOptions(device=args.device, compile=args.compile, optimizer=args.optimizer, step_mode=args.step_mode)
    train(config, subset(samples, 2 * args.batch_size), options)
    result: TrialResult = train(config, subset(samples, args.steps * args.batch_size), options)
    n_train = len(samples.index["train"])
    tflops = flops_per_sample(arch) * result.samples_per_s / 1e12
    peak = peak_tflops(result.device, args.peak_tflops)
    return {
        "budget": budget_label(budget),
        "d_model": arch.d_model,
        "n_layers": arch.n_layers,
        "n_heads": arch.n_heads,
        "d_ff": arch.d_ff,
        "n_params": result.n_params,
        "batch_size": args.batch_size,
        "micro_batch": result.values_used["micro_batch"],
        "steps": args.steps,
        "samples_per_s": result.samples_per_s,
        "s_per_epoch": n_train / result.samples_per_s,
        "peak_memory_mb": result.peak_memory_mb,
        "tflops": tflops,
        "mfu": tflops / peak if peak else None,
        "device": result.device,
        "optimizer": result.values_used["optimizer"],
        "step_mode": result.values_used["step_mode"],
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    parser.add_argument("--budgets", default=None, help=f"default: {CPU_BUDGETS} on CPU, {CUDA_BUDGETS} on CUDA")
    parser.add_argument("--steps", type=int, default=None, help="timed optimizer steps per budget (default CPU 8, CUDA 40)")
    parser.add_argument("--batch-size", type=int, default=None, help="default CPU 64, CUDA 256")
    parser.add_argument("--horizon", type=int, default=1)
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads on CPU")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--optimizer", default=None, choices=["fused", "foreach", "default"],
                        help="AdamW and clip path (default: the trainer's choice for the device; 'default': PyTorch's, as before)")
    parser.add_argument("--step-mode", default="auto", choices=["auto", "eager", "cuda_graph"], help="see worker.train")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: by GPU name)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    on_cuda = args.device.startswith("cuda")
    args.budgets = args.budgets or (CUDA_BUDGETS if on_cuda else CPU_BUDGETS)
    args.steps = args.steps or (40 if on_cuda else 8)
    args.batch_size = args.batch_size or (256 if on_cuda else 64)
    if args.threads:
        torch.set_num_threads(args.threads)

    samples = spy_samples(args.csv, args.horizon)
    budgets = sorted(parse_budget(b) for b in args.budgets.split(","))
    print(
        f"SPY a25 h{args.horizon}: {len(samples.index['train'])} train windows of {samples.context} days x "
        f"{len(samples.input_columns)} features; device {args.device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads, batch {args.batch_size}, {args.steps} timed steps per budget"
    )
    header = (
        f"{'budget':>6} {'d_model':>7} {'layers':>6} {'heads':>5} {'d_ff':>5} {'params':>13} {'micro':>5} "
        f"{'samples/s':>10} {'s/epoch':>9} {'peak MB':>9} {'TFLOP/s':>8} {'MFU':>6}"
    )
    print(header)
    rows = []
    for budget in budgets:
        row = bench_budget(samples, budget, args)
        rows.append(row)
        mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "-"
        print(
            f"{row['budget']:>6} {row['d_model']:>7} {row['n_layers']:>6} {row['n_heads']:>5} {row['d_ff']:>5} "
            f"{row['n_params']:>13,} {row['micro_batch']:>5} {row['samples_per_s']:>10.1f} {row['s_per_epoch']:>9.2f} "
            f"{row['peak_memory_mb']:>9.0f} {row['tflops']:>8.4f} {mfu:>6}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
