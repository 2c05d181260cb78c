"""Evaluation runs -> intervals and verdicts per dataset version and horizon, stored for the views.

`compute_verdicts` reads the frozen protocols and the runs, the baselines' test predictions and
the test labels (rebuilt from the dataset, and checked against the runs' test positions), and calls
`verdict.summarise_horizon`. A configuration enters once all its seeds are stored; a horizon whose
studies were evaluated under different protocols is refused (their intervals would not be comparable).
`store_verdicts` replaces the rows of `evaluation_results`, `evaluation_baselines` and
`scaling_verdicts` for the horizons computed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from coordinator.errors import UserError
from coordinator.evaluation import baselines as bl
from coordinator.evaluation.protocol import EvaluationProtocol, wide_note_for
from coordinator.evaluation.verdict import BaselineScores, ConfigRuns, HorizonVerdict, summarise_horizon
from coordinator.store.tables import (
    evaluation_baselines,
    evaluation_protocols,
    evaluation_results,
    evaluation_runs,
    scaling_verdicts,
    study_specs,
)
from coordinator.studies.samples import load_study_samples
from coordinator.studies.spec import StudySpec


@dataclass(frozen=True)
class DatasetVerdict:
    dataset_name: str
    dataset_version: int
    horizon: int
    protocol: EvaluationProtocol
    verdict: HorizonVerdict
    missing_runs: int  # runs of the protocol not stored yet
    total_runs: int


def compute_verdicts(engine: sa.Engine, dataset_name: str, dataset_version: int | None = None) -> list[DatasetVerdict]:
    """One verdict per horizon of the dataset's evaluated studies (none if nothing is evaluated)."""
    p, s = evaluation_protocols, study_specs
    query = (sa.select(p.c.study_name, p.c.protocol, p.c.protocol_sha256, p.c.configurations, s.c.spec, s.c.dataset_version,
                       s.c.budget, s.c.budget_params, s.c.horizon)
             .join(s, s.c.study_name == p.c.study_name).where(s.c.dataset_name == dataset_name))
    if dataset_version is not None:
        query = query.where(s.c.dataset_version == dataset_version)
    with engine.connect() as conn:
        studies = conn.execute(query).mappings().all()
        runs = conn.execute(sa.select(evaluation_runs).where(evaluation_runs.c.study_name.in_([r["study_name"] for r in studies]))).mappings().all()
    groups: dict[tuple[int, int], list[Any]] = defaultdict(list)
    for row in studies:
        groups[(row["dataset_version"], row["horizon"])].append(row)
    runs_by: dict[tuple[str, int], list[Any]] = defaultdict(list)
    for r in runs:
        runs_by[(r["study_name"], r["rank"])].append(r)

    verdicts = []
    for (version, horizon), rows in sorted(groups.items()):
        shas = {r["protocol_sha256"] for r in rows}
        if len(shas) > 1:
            raise UserError(f"{dataset_name}:{version} H={horizon}: studies evaluated under {len(shas)} different protocols "
                            f"({', '.join(sorted(r['study_name'] for r in rows))}); their intervals are not comparable")
        protocol = EvaluationProtocol.from_dict(rows[0]["protocol"])
        spec = StudySpec.from_dict(rows[0]["spec"])
        positions, labels = split_test_labels(engine, spec)
        configs, total, missing = [], 0, 0
        for row in rows:
            study_spec = StudySpec.from_dict(row["spec"])
            for c in row["configurations"]:
                total += protocol.n_seeds
                done = sorted((r for r in runs_by[(row["study_name"], c["rank"])] if r["protocol_sha256"] == row["protocol_sha256"]),
                              key=lambda r: r["seed"])
                missing += protocol.n_seeds - len(done)
                if len(done) < protocol.n_seeds:
                    continue
                for r in done:
                    if list(r["test_positions"]) != positions.tolist():
                        raise UserError(f"evaluation run {row['study_name']} rank {c['rank']} seed {r['seed']} was scored on other test days")
                configs.append(ConfigRuns(
                    study_name=row["study_name"], budget=row["budget"], budget_params=row["budget_params"], rank=c["rank"],
                    trial_number=c["trial_number"], n_params=int(done[0]["n_params"]), direction=study_spec.objective.direction,
                    val_objective=[float(r["objective_value"]) for r in done],
                    test_predictions=[np.asarray(r["test_predictions"], dtype=np.float64) for r in done],
                    under_trained=sum(r["best_epoch"] == r["epochs_run"] for r in done),
                ))
        baselines = baseline_scores(engine, spec)
        note = wide_note_for(protocol)
        if missing:
            note = "; ".join(x for x in (note, f"{missing} of {total} evaluation runs are not finished yet: partial answer") if x)
        verdict = summarise_horizon(horizon, labels, configs, baselines, protocol.bootstrap, note=note)
        verdicts.append(DatasetVerdict(dataset_name, version, horizon, protocol, verdict, missing, total))
    return verdicts


def split_test_labels(engine: sa.Engine, spec: StudySpec) -> tuple[np.ndarray, np.ndarray]:
    """(positions, labels) of the study's test split, rebuilt from its dataset version."""
    samples = load_study_samples(engine, spec)
    positions = samples.index["test"]
    return positions, samples.labels[positions].astype(np.float64)


def baseline_scores(engine: sa.Engine, spec: StudySpec) -> list[BaselineScores]:
    """The baselines' test predictions on the same test days; computed and stored if missing."""
    usable, _ = bl.ensure_baselines(engine, spec)
    return [BaselineScores(r["model"], float(r["val_auc"]), np.asarray(r["metrics"]["test_predictions"], dtype=np.float64)) for r in usable]


def store_verdicts(engine: sa.Engine, verdicts: list[DatasetVerdict]) -> None:
    """Replace the summary rows of the computed horizons, in one transaction."""
    with engine.begin() as conn:
        for dv in verdicts:
            v = dv.verdict
            sha = dv.protocol.sha256()
            studies = sorted({c.runs.study_name for c in v.configs})
            conn.execute(evaluation_results.delete().where(evaluation_results.c.study_name.in_(studies)))
            best = v.best_baseline
            for c in v.configs:
                d = c.vs_best_baseline
                conn.execute(evaluation_results.insert().values(
                    study_name=c.runs.study_name, rank=c.runs.rank, protocol_sha256=sha, trial_number=c.runs.trial_number,
                    n_params=c.runs.n_params, n_seeds=len(c.runs.test_predictions), chosen=c.chosen,
                    val_objective_mean=float(np.mean(c.runs.val_objective)),
                    test_auc=c.test_auc.value, test_auc_sd=finite(c.test_auc_sd), test_auc_low=c.test_auc.low, test_auc_high=c.test_auc.high,
                    test_pr_auc=c.test_pr_auc.value, test_pr_auc_low=c.test_pr_auc.low, test_pr_auc_high=c.test_pr_auc.high,
                    best_baseline=best.model if best else None, vs_best_baseline=d.value if d else None,
                    vs_best_baseline_low=d.low if d else None, vs_best_baseline_high=d.high if d else None,
                    under_trained_runs=c.runs.under_trained, block_length=v.block_length, replicates=v.replicates,
                ))
            key = (dv.dataset_name, dv.dataset_version, dv.horizon)
            for table in (evaluation_baselines, scaling_verdicts):
                conn.execute(table.delete().where(table.c.dataset_name == key[0], table.c.dataset_version == key[1], table.c.horizon == key[2]))
            for b in v.baselines:
                conn.execute(evaluation_baselines.insert().values(
                    dataset_name=key[0], dataset_version=key[1], horizon=key[2], model=b.model, best=b.best, val_auc=b.val_auc,
                    test_auc=b.test_auc.value, test_auc_low=b.test_auc.low, test_auc_high=b.test_auc.high,
                    test_pr_auc=b.test_pr_auc.value, test_pr_auc_low=b.test_pr_auc.low, test_pr_auc_high=b.test_pr_auc.high,
                    block_length=v.block_length, replicates=v.replicates,
                ))
            a, s = v.answer, v.slope
            d = a.vs_best_baseline if a else None
            conn.execute(scaling_verdicts.insert().values(
                dataset_name=key[0], dataset_version=key[1], horizon=key[2], protocol_sha256=sha,
                n_studies=len({c.runs.study_name for c in v.configs if c.chosen}),
                slope_per_decade=s.value if s else None, slope_low=s.low if s else None, slope_high=s.high if s else None,
                answer_study=a.runs.study_name if a else None, answer_test_auc=a.test_auc.value if a else None,
                best_baseline=best.model if best else None, vs_best_baseline=d.value if d else None,
                vs_best_baseline_low=d.low if d else None, vs_best_baseline_high=d.high if d else None,
                n_test=v.n_test, block_length=v.block_length, replicates=v.replicates, method=dv.protocol.bootstrap.method,
                sentence=v.sentence, notes=v.notes,
            ))


def finite(x: float) -> float | None:
    return x if x is not None and np.isfinite(x) else None
