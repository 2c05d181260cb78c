"""One evaluation run: re-train a study's configuration with a fresh seed, score it once on test.

The recipe is exactly the trial's (`worker.train.train` on the study's samples: train split,
early stopping on validation, the study's objective); the only difference is `score_test=True`,
which keeps the best epoch's weights and scores the test split with them once, after training.
This module and that flag are the only code that reads test-split rows for a transformer.

`evaluate_run` does one run and stores its row in `evaluation_runs` (an upsert keyed by study,
configuration rank and seed, so a retried attempt replaces, never duplicates). Runs are work items
of kind "evaluation" (`coordinator.evaluation.plan.payloads`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from coordinator.evaluation.tables import evaluation_protocols, evaluation_runs
from coordinator.metrics import binary_metrics
from coordinator.records import study_specs
from coordinator.search_space import SearchSpace, TrialConfig, suggest
from coordinator.study_spec import StudySpec


class EvaluationRefused(Exception):
    """The run cannot be done as specified (protocol changed, dataset hash differs): no retry helps."""


def load_spec(engine: sa.Engine, study_name: str) -> StudySpec:
    with engine.connect() as conn:
        spec = conn.execute(sa.select(study_specs.c.spec).where(study_specs.c.study_name == study_name)).scalar()
    if spec is None:
        raise EvaluationRefused(f"no study {study_name}")
    return StudySpec.from_dict(spec)


def study_samples(engine: sa.Engine, spec: StudySpec, cache: dict[tuple, Any] | None = None) -> Any:
    """The study's samples (the same the trials used), its dataset hash checked against the spec."""
    from coordinator.data.registry import load_dataset
    from coordinator.data.samples import make_samples
    from coordinator.data.splits import Splits

    ref = spec.dataset
    key = (ref.name, ref.version, spec.horizon, spec.label.threshold, spec.context, json.dumps(spec.splits, sort_keys=True))
    if cache is not None and key in cache:
        return cache[key]
    dataset = load_dataset(engine, ref.name, ref.version)
    if dataset.sha256 != ref.sha256:
        raise EvaluationRefused(f"dataset {ref} has sha256 {dataset.sha256[:12]}… but the study was created on {ref.sha256[:12]}…")
    samples = make_samples(dataset, spec.horizon, Splits.from_dict(spec.splits), context=spec.context, threshold=spec.label.threshold)
    if cache is not None:
        cache[key] = samples
    return samples


def config_for(spec: StudySpec, params: dict[str, Any], trial_number: int, seed: int) -> TrialConfig:
    """The configuration of a search trial (its sampled params through the same `suggest`), with `seed`."""
    import optuna

    config = suggest(optuna.trial.FixedTrial(params, number=trial_number), SearchSpace.from_dict(spec.search_space))
    return replace(config, seed=seed)


def evaluate_run(
    engine: sa.Engine,
    payload: dict[str, Any],
    *,
    device: str = "cpu",
    should_stop: Callable[[], bool] | None = None,
    worker: str | None = None,
    item_id: int | None = None,
    attempt_id: int | None = None,
    samples_cache: dict[tuple, Any] | None = None,
) -> dict[str, Any]:
    """Train and score one (study, rank, seed) run and store its row; returns the row."""
    from worker.train import train

    started = time.monotonic()
    study = payload["study_name"]
    with engine.connect() as conn:
        stored = conn.execute(sa.select(evaluation_protocols.c.protocol_sha256).where(evaluation_protocols.c.study_name == study)).scalar()
    if stored != payload["protocol_sha256"]:
        raise EvaluationRefused(f"study {study} is evaluated under protocol {str(stored)[:12]}…, this run belongs to {payload['protocol_sha256'][:12]}…")
    spec = load_spec(engine, study)
    samples = study_samples(engine, spec, samples_cache)
    config = config_for(spec, payload["params"], payload["trial_number"], int(payload["seed"]))
    result = train(config, samples, device=device, objective=spec.objective.metric, should_stop=should_stop, score_test=True)
    assert result.test_predictions is not None
    positions = samples.index["test"]
    test = binary_metrics(samples.labels[positions], result.test_predictions, prefix="test_", pred_prefix="test_")
    row = {
        "study_name": study,
        "rank": int(payload["rank"]),
        "seed": int(payload["seed"]),
        "protocol_sha256": payload["protocol_sha256"],
        "trial_number": int(payload["trial_number"]),
        "n_params": result.n_params,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "max_epochs": config.max_epochs,
        "objective_value": result.objective_value,
        "val_auc": result.metrics["val_auc"],
        "val_loss": result.metrics["val_loss"],
        "test_auc": test["test_auc"],
        "test_pr_auc": test["test_pr_auc"],
        "test_loss": test["test_loss"],
        "test_positions": positions.tolist(),
        "test_predictions": np.asarray(result.test_predictions, dtype=np.float64).tolist(),
        "epochs": [e.to_dict() for e in result.epochs],
        "metrics": {**result.metrics, **test, **result.values_used, "architecture": asdict(config.architecture)},
        "duration_s": time.monotonic() - started,
        "device": result.device,
        "worker": worker,
        "item_id": item_id,
        "attempt_id": attempt_id,
    }
    statement = insert(evaluation_runs).values(**row)
    keys = ("study_name", "rank", "seed")
    with engine.begin() as conn:
        conn.execute(statement.on_conflict_do_update(
            index_elements=list(keys),
            set_={k: statement.excluded[k] for k in row if k not in keys} | {"recorded_at": sa.func.now()},
        ))
    return row


def pending_payloads(engine: sa.Engine, study_names: list[str]) -> list[dict[str, Any]]:
    """Every run of these studies' frozen protocols not stored yet, in a fixed order."""
    from coordinator.evaluation.protocol import EvaluationProtocol

    with engine.connect() as conn:
        protocols = conn.execute(sa.select(evaluation_protocols).where(evaluation_protocols.c.study_name.in_(study_names))
                                 .order_by(evaluation_protocols.c.study_name)).mappings().all()
        stored = {(r.study_name, r.rank, r.seed) for r in conn.execute(
            sa.select(evaluation_runs.c.study_name, evaluation_runs.c.rank, evaluation_runs.c.seed).where(evaluation_runs.c.study_name.in_(study_names)))}
    out = []
    for p in protocols:
        protocol = EvaluationProtocol.from_dict(p["protocol"])
        for c in p["configurations"]:
            for seed in protocol.seeds:
                if (p["study_name"], c["rank"], seed) not in stored:
                    out.append({"slot": f"rank{c['rank']}-seed{seed}", "study_name": p["study_name"], "rank": c["rank"], "seed": seed,
                                "trial_number": c["trial_number"], "params": c["params"], "protocol_sha256": p["protocol_sha256"]})
    return out


def run_shard(url: str, study_names: list[str], shard: int, shards: int, device: str = "cpu", worker: str | None = None) -> int:
    """Run this process's share (every shards-th pending run, from `shard`) sequentially; returns runs done.

    The single-machine path of `coordinator local` (disjoint shards, so no two processes train the
    same run); a fleet pulls the same runs as work items instead.
    """
    from coordinator import db

    engine = db.make_engine(url)
    cache: dict[tuple, Any] = {}
    done = 0
    try:
        for i, payload in enumerate(pending_payloads(engine, study_names)):
            if i % shards == shard:
                evaluate_run(engine, payload, device=device, worker=worker, samples_cache=cache)
                done += 1
    finally:
        engine.dispose()
    return done


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m worker.evaluate", description="Run pending evaluation runs of these studies.")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--studies", required=True, help="comma-separated study names")
    parser.add_argument("--shard", default="0/1", help="I/N: run every N-th pending run starting at I")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--worker-id", default=None)
    args = parser.parse_args(argv)
    shard, shards = (int(x) for x in args.shard.split("/"))
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    done = run_shard(args.database_url, [s for s in args.studies.split(",") if s], shard, shards, args.device, args.worker_id)
    print(f"{done} evaluation run(s) done", flush=True)


if __name__ == "__main__":
    main()
