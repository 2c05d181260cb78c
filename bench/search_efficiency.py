"""Search efficiency of the pruners, side by side in one run on this CPU.

    .venv/bin/python bench/search_efficiency.py [--seeds 5] [--trials 16] [--epochs 12] [--out DIR]

For each pruner (none, median, asha, hyperband) and each of `--seeds` sampler seeds, one search of
`--trials` trials at a CPU-sized budget (100K parameters, depth at most 4, horizon 1) on real SPY from
$SCALESWEEP_DATA (else the seeded synthetic series, said loudly), with the schedule stretched to
`--epochs` epochs so that stopping a trial early saves something. Each search is what a worker does
for a study, in this process: the claim's sampler (a TPE sampler seeded per slot, as
`claim_seed` derives it), the study's enqueued extreme architectures first, `suggest`, the real
trainer `worker.train.train`, the product's pruner (`PrunerSpec.make`) fed by the product's epoch
reports (`optuna_adapter.EpochReports`), and `tell`.

Compute is the process CPU time of the training itself (model build, epochs and their validation),
measured per epoch with `time.process_time()` on one torch thread: robust to the other jobs sharing
the machine, unlike wall time. A trial stopped at epoch k is charged its first k epochs.

Training on CPU is deterministic for a fixed configuration and seed (the trial number), so a
configuration another search of the same seed already trained to its end is not trained again:
its recorded per-epoch values and CPU times are replayed through the same pruner (the searches of one
seed share their enqueued and random start-up trials). The charged compute is still what that trial
cost when it ran; only the wall time of this benchmark shrinks.

Reported per pruner, over the seeds: the best validation AUC reached (mean, sd), the compute spent,
the compute to come within 0.005 AUC of the same seed's unpruned best (and how many seeds got
there), the best reached within 40% of the unpruned compute, and a projection of the default matrix
(2M..2B x 3 horizons x 50 trials, reference schedule of 30 epochs) to H100 hours with the per-epoch
times measured by bench/gpu.py (README), scaled by each pruner's measured share of epochs. Writes
search_efficiency.json and search_efficiency.md under --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from coordinator.data.location import real_data_dir  # noqa: E402
from coordinator.data.registry import Dataset, compute_dataset_frame, dataset_from_file  # noqa: E402
from coordinator.data.samples import Samples, make_samples  # noqa: E402
from coordinator.data.splits import default_splits  # noqa: E402
from coordinator.data.synth import synthetic_series  # noqa: E402
from coordinator.lifecycle import optuna_adapter  # noqa: E402
from coordinator.studies.presets import PRESETS, preset_search_space  # noqa: E402
from coordinator.studies.search_space import SearchSpace, extreme_params, suggest  # noqa: E402
from coordinator.studies.spec import PRUNERS, claim_seed, pruner_spec, tpe_sampler  # noqa: E402
from worker.train import TrialFailed, train  # noqa: E402

BUDGET = 100_000
MAX_LAYERS = 4  # a 48-layer 100K model costs ten 2-layer ones per epoch: the CPU cannot afford them here
BATCH_SIZES = (128, 256)
TRAIN_WINDOWS = 1200  # the last windows of the training split (SPY has 5,185): so that the run fits 25 minutes
HORIZON = 1
TOLERANCE_AUC = 0.005
COMPUTE_SHARE = 0.40  # the goal: the unpruned quality within this share of its compute
# bench/gpu.py on one H100 (README, "Training on one GPU"): seconds per epoch at batch 256, the mean
# of the widest and the deepest shape of each budget.
H100_S_PER_EPOCH = {"2M": (0.17 + 2.3) / 2, "20M": (0.13 + 7.0) / 2, "200M": (0.49 + 8.8) / 2, "2B": (5.95 + 12.0) / 2}
MATRIX_TRIALS, MATRIX_HORIZONS, REFERENCE_EPOCHS = 50, 3, 30


@dataclass
class Curve:
    """One configuration's training as far as it went: per-epoch objective and CPU seconds."""

    values: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    ended: str | None = None  # None: stopped by a pruner (may go further); else COMPLETE | PRUNED | FAIL by itself
    reason: str = ""


@dataclass
class TrialRun:
    number: int
    state: str
    value: float | None  # COMPLETE: the best epoch's objective
    epochs: int
    cpu_s: float
    replayed: bool


@dataclass
class Search:
    pruner: str
    seed: int
    trials: list[TrialRun] = field(default_factory=list)

    def trajectory(self) -> list[tuple[float, float]]:
        """(compute spent, best COMPLETE value so far) after each trial."""
        spent, best, points = 0.0, -math.inf, []
        for t in self.trials:
            spent += t.cpu_s
            if t.state == "COMPLETE" and t.value is not None:
                best = max(best, t.value)
            points.append((spent, best))
        return points

    @property
    def best(self) -> float:
        return self.trajectory()[-1][1]

    @property
    def cpu_s(self) -> float:
        return sum(t.cpu_s for t in self.trials)

    @property
    def epochs(self) -> int:
        return sum(t.epochs for t in self.trials)

    def compute_to(self, target: float) -> float | None:
        return next((spent for spent, best in self.trajectory() if best >= target), None)

    def best_within(self, compute: float) -> float:
        return max((best for spent, best in self.trajectory() if spent <= compute), default=-math.inf)


class Pruned(Exception):
    """The pruner stopped the trial (or the trainer pruned it: collapse, divergence)."""


def load_samples(say: Any = print) -> tuple[Samples, str]:
    csv = real_data_dir() / "SPY.csv"
    if csv.is_file():
        dataset, source = dataset_from_file(csv), f"real SPY ({csv})"
    else:
        frame, _ = compute_dataset_frame(synthetic_series(7000, 0).frame, "a25", None)
        dataset = Dataset("syn-a25", 0, "", frame, [str(c) for c in frame.columns])
        source = "SYNTHETIC series (no SPY.csv in $SCALESWEEP_DATA)"
        say(f"WARNING: {source}")
    samples = make_samples(dataset, HORIZON, default_splits(dataset.frame.index))
    index = {**samples.index, "train": samples.index["train"][-TRAIN_WINDOWS:]}
    return dataclasses.replace(samples, index=index), source


def bench_space(n_features: int, epochs: int) -> SearchSpace:
    """The smoke preset's 100K space, depth capped, batches that keep an epoch short, `epochs` epochs."""
    preset = dataclasses.replace(PRESETS["smoke"], max_layers=MAX_LAYERS)
    space = preset_search_space(BUDGET, n_features, preset)
    return dataclasses.replace(space, max_epochs=epochs, patience=max(3, epochs // 4), batch_sizes=BATCH_SIZES)


def train_curve(config: Any, samples: Samples, reports: optuna_adapter.EpochReports) -> Curve:
    """Train for real, feeding the pruner each epoch; the curve records what ran and its CPU time."""
    curve = Curve()
    last = time.process_time()

    def on_epoch(epoch: Any) -> None:
        nonlocal last
        curve.values.append(epoch.val_auc)
        curve.cpu_s.append(time.process_time() - last)
        if reports.epoch(epoch.val_auc, epoch.epoch):
            raise Pruned(f"epoch {epoch.epoch}")
        last = time.process_time()  # the pruner's own time is not training

    try:
        result = train(config, samples, objective="val_auc", on_epoch=on_epoch)
    except Pruned:
        return curve
    except optuna.TrialPruned as exc:  # the trainer's own verdict (collapse, divergence)
        curve.ended, curve.reason = "PRUNED", str(exc)
        return curve
    except TrialFailed as exc:
        curve.ended, curve.reason = "FAIL", str(exc)
        return curve
    curve.ended = "COMPLETE"
    curve.cpu_s[-1] += time.process_time() - last  # what followed the last epoch's report
    assert result.epochs_run == len(curve.values)
    return curve


def replay(curve: Curve, reports: optuna_adapter.EpochReports) -> int | None:
    """Feed a recorded curve to the pruner; the epoch it prunes at, or None if it lets it run to the end."""
    for epoch, value in enumerate(curve.values, start=1):
        if reports.epoch(value, epoch):
            return epoch
    return None


def run_trial(study: optuna.Study, trial: optuna.Trial, space: SearchSpace, samples: Samples, cache: dict[str, Curve]) -> TrialRun:
    config = suggest(trial, space)
    key = json.dumps({"params": trial.params, "seed": config.seed}, sort_keys=True)
    cached = cache.get(key)
    reports = optuna_adapter.EpochReports(trial, "maximize", config.max_epochs)
    if cached is not None and cached.ended is not None:  # trained to its own end before: replay it
        stopped = replay(cached, reports)
        if stopped is not None:
            return TrialRun(trial.number, "PRUNED", None, stopped, sum(cached.cpu_s[:stopped]), True)
        return finish(trial.number, cached, True)
    curve = train_curve(config, samples, reports)
    if curve.ended is not None:
        cache[key] = curve
        return finish(trial.number, curve, False)
    return TrialRun(trial.number, "PRUNED", None, len(curve.values), sum(curve.cpu_s), False)


def finish(number: int, curve: Curve, replayed: bool) -> TrialRun:
    value = max(curve.values) if curve.ended == "COMPLETE" else None
    return TrialRun(number, curve.ended or "PRUNED", value, len(curve.values), sum(curve.cpu_s), replayed)


def run_search(kind: str, seed: int, args: argparse.Namespace, space: SearchSpace, samples: Samples, cache: dict[str, Curve]) -> Search:
    pruner = pruner_spec(kind, space.max_epochs)
    name = f"bench-s{seed}"  # one name per seed: the searches of a seed draw the same start-up trials
    study = optuna.create_study(study_name=f"{name}-{kind}", direction="maximize", pruner=pruner.make())
    extremes = extreme_params(space)[: args.trials]
    search = Search(kind, seed)
    for slot in range(1, args.trials + 1):
        study.sampler = tpe_sampler(claim_seed(seed, name, slot, 1))
        trial = optuna_adapter.ask(study, extremes[slot - 1] if slot <= len(extremes) else None)
        run = run_trial(study, trial, space, samples, cache)
        optuna_adapter.tell(study, trial, run.state, run.value)
        search.trials.append(run)
    return search


def summarise(searches: list[Search]) -> list[dict[str, Any]]:
    none = {s.seed: s for s in searches if s.pruner == "none"}
    rows = []
    for kind in PRUNERS:
        mine = [s for s in searches if s.pruner == kind]
        if not mine:
            continue
        to_target = [s.compute_to(none[s.seed].best - TOLERANCE_AUC) for s in mine]
        shares = [c / none[s.seed].cpu_s for s, c in zip(mine, to_target, strict=True) if c is not None]
        trials = [t for s in mine for t in s.trials]
        rows.append(
            {
                "pruner": kind,
                "best_mean": statistics.mean(s.best for s in mine),
                "best_sd": statistics.stdev(s.best for s in mine) if len(mine) > 1 else 0.0,
                "cpu_s_mean": statistics.mean(s.cpu_s for s in mine),
                "cpu_share": statistics.mean(s.cpu_s / none[s.seed].cpu_s for s in mine),
                "epochs_share": sum(s.epochs for s in mine) / sum(none[s.seed].epochs for s in mine),
                "epochs_per_trial": sum(t.epochs for t in trials) / len(trials),
                "pruned": sum(t.state == "PRUNED" for t in trials),
                "trials": len(trials),
                "reached": len(shares),
                "seeds": len(mine),
                "to_target_share_median": statistics.median(shares) if shares else None,
                "to_target_share_max": max(shares) if shares else None,
                "best_at_40pct_mean": statistics.mean(s.best_within(COMPUTE_SHARE * none[s.seed].cpu_s) for s in mine),
            }
        )
    return rows


def projection(rows: list[dict[str, Any]], max_epochs: int) -> list[dict[str, Any]]:
    """The default matrix's search in H100 hours, scaled by each pruner's measured share of epochs."""
    unpruned = next(r for r in rows if r["pruner"] == "none")
    # Epochs per unpruned trial on the reference schedule: the bench's share of its schedule, applied to 30.
    epochs_per_trial = unpruned["epochs_per_trial"] / max_epochs * REFERENCE_EPOCHS
    hours = {b: MATRIX_HORIZONS * MATRIX_TRIALS * epochs_per_trial * s / 3600 for b, s in H100_S_PER_EPOCH.items()}
    total = sum(hours.values())
    out = []
    for r in rows:
        share_to_target = r["to_target_share_median"]
        out.append(
            {
                "pruner": r["pruner"],
                "epochs_share": r["epochs_share"],
                "search_hours": total * r["epochs_share"],
                "hours_2B": hours["2B"] * r["epochs_share"],
                "to_target_hours": None if share_to_target is None else total * share_to_target,
            }
        )
    return out


def markdown(rows: list[dict[str, Any]], projected: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    def num(v: float | None, fmt: str) -> str:
        return "not reached" if v is None else format(v, fmt)

    lines = [
        f"Search efficiency: {meta['seeds']} sampler seeds x {meta['trials']} trials per search, {meta['budget']} budget "
        f"(depth <= {MAX_LAYERS}), {meta['epochs']} epochs max (patience {meta['patience']}), horizon {HORIZON}, "
        f"{meta['data']}, last {TRAIN_WINDOWS} training windows, {meta['val']} validation windows; "
        f"CPU: {meta['cpu']}, 1 torch thread; wall {meta['wall_s'] / 60:.1f} min.",
        "",
        "| pruner | best val AUC (mean ± sd) | CPU-s per search | share of unpruned CPU | epochs/trial | pruned trials "
        "| seeds within 0.005 of unpruned best | CPU share to get there (median / max) | best within 40% of unpruned CPU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['pruner']} | {r['best_mean']:.4f} ± {r['best_sd']:.4f} | {r['cpu_s_mean']:.0f} | {r['cpu_share']:.0%} "
            f"| {r['epochs_per_trial']:.1f} | {r['pruned']}/{r['trials']} | {r['reached']}/{r['seeds']} "
            f"| {num(r['to_target_share_median'], '.0%')} / {num(r['to_target_share_max'], '.0%')} | {r['best_at_40pct_mean']:.4f} |"
        )
    lines += [
        "",
        "Projected default search (2M..2B x 3 horizons x 50 trials, reference schedule 30 epochs), H100 hours from "
        "bench/gpu.py's s/epoch (mean of widest and deepest, batch 256) times each pruner's measured share of epochs:",
        "",
        "| pruner | share of epochs | search H100-hours | of which 2B | H100-hours to within 0.005 AUC (median share) |",
        "|---|---|---|---|---|",
    ]
    for p in projected:
        lines.append(
            f"| {p['pruner']} | {p['epochs_share']:.0%} | {p['search_hours']:.1f} | {p['hours_2B']:.1f} | {num(p['to_target_hours'], '.1f')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=16, help="trials per search (a study's target)")
    parser.add_argument("--epochs", type=int, default=12, help="max epochs per trial (the pruners' resource)")
    parser.add_argument("--pruners", default=",".join(PRUNERS), help="comma-separated; none always runs first")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args()
    kinds = ["none"] + [k for k in args.pruners.split(",") if k and k != "none"]
    unknown = [k for k in kinds if k not in PRUNERS]
    if unknown or args.seeds < 1 or args.trials < 1 or args.epochs < 2:
        parser.error(f"unknown pruner(s) {unknown}; choose from {', '.join(PRUNERS)}" if unknown else "seeds, trials >= 1, epochs >= 2")
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    samples, source = load_samples()
    space = bench_space(len(samples.input_columns), args.epochs)
    started = time.time()
    searches: list[Search] = []
    for seed in range(1, args.seeds + 1):
        cache: dict[str, Curve] = {}  # per seed: only searches of one seed share configurations
        for kind in kinds:
            search = run_search(kind, seed, args, space, samples, cache)
            searches.append(search)
            replayed = sum(t.replayed for t in search.trials)
            print(
                f"[{(time.time() - started) / 60:5.1f} min] seed {seed} {kind:9s} best {search.best:.4f} "
                f"CPU {search.cpu_s:6.0f} s, {search.epochs} epochs, {sum(t.state == 'PRUNED' for t in search.trials)} pruned, "
                f"{replayed} replayed",
                flush=True,
            )
    rows = summarise(searches)
    projected = projection(rows, args.epochs)
    meta = {
        "seeds": args.seeds, "trials": args.trials, "epochs": args.epochs, "patience": space.patience, "budget": "100K",
        "data": source, "val": len(samples.index["val"]), "cpu": cpu_name(), "wall_s": time.time() - started,
        "pruners": {k: dataclasses.asdict(pruner_spec(k, args.epochs)) for k in kinds},
    }
    table = markdown(rows, projected, meta)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "search_efficiency.md").write_text(table)
    detail = {"meta": meta, "summary": rows, "projection": projected, "searches": [dataclasses.asdict(s) for s in searches]}
    (args.out / "search_efficiency.json").write_text(json.dumps(detail, indent=1, default=str))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
