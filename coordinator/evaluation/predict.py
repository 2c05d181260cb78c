"""`coordinator predict`: a study's answer as per-day probabilities for days its models never saw.

The answer is the configuration the evaluation chose for the study (`evaluation_results.chosen`),
re-trained with S seeds; each seed's best-epoch weights are a checkpoint (worker/checkpoints.py).
With walk-forward folds a configuration and seed has one run per fold: the model of the latest
fold is used, the one trained on the most data (the latest `seen_through`).

The inputs are rebuilt as the study's dataset version defines them: its stored input columns, in
order, standardised with the training statistics stored in the checkpoint, in windows of the
study's context, forward passes in the same chunks and (for a run trained on the CPU) with the same
number of CPU threads as the run's own test scoring. So on the study's own dataset version the
probabilities equal a CPU run's stored test predictions bit for bit. `--dataset` may name another
version of a dataset with the same definition (e.g. a newer import of the same symbol, with more
days); one whose input columns, tier or feature code version differ is refused.

Only days after `seen_through` (the last day whose data shaped any of the models: a training or
early-stopping label) are predicted; the label is not needed, so the newest days get probabilities.
The ensemble probability is the mean of the seeds' probabilities; each seed's is a column too.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from coordinator.data.registry import Dataset, load_dataset
from coordinator.errors import UserError
from coordinator.store import artifacts
from coordinator.store.tables import checkpoints, evaluation_results, evaluation_runs, study_specs
from coordinator.studies.architecture import Architecture
from coordinator.studies.datasets import resolve_dataset
from coordinator.studies.spec import StudySpec

DEFINITION_KEYS = ("tier", "features_version")  # what, beside the column list, defines how features are computed


@dataclass(frozen=True)
class AnswerModel:
    """One seed's model of the study's answer (its latest fold's run)."""

    rank: int
    seed: int
    trial_number: int
    n_params: int
    architecture: Architecture
    checkpoint: artifacts.Checkpoint
    scored: tuple[int, int]  # first and last position (in the study's dataset) of the days the run scored on test


def load_study_spec(engine: sa.Engine, study: str) -> StudySpec:
    with engine.connect() as conn:
        spec = conn.execute(sa.select(study_specs.c.spec).where(study_specs.c.study_name == study)).scalar()
        names = [] if spec is not None else conn.execute(sa.select(study_specs.c.study_name).order_by(study_specs.c.study_name)).scalars().all()
    if spec is None:
        known = ", ".join(names[:8]) + (" …" if len(names) > 8 else "") or "none yet"
        raise UserError(f"unknown study {study!r} (studies: {known})")
    return StudySpec.from_dict(spec)


def answer_models(engine: sa.Engine, study: str, seed: int | None = None) -> list[AnswerModel]:
    """The chosen configuration's models, one per seed (the latest fold's), each with its checkpoint."""
    r, c = evaluation_runs, checkpoints
    with engine.connect() as conn:
        rank = conn.execute(
            sa.select(evaluation_results.c.rank).where(evaluation_results.c.study_name == study, evaluation_results.c.chosen)
        ).scalar()
        if rank is None:
            raise UserError(f"study {study} has not been evaluated: run `coordinator evaluate` (and its workers) first")
        rows = conn.execute(
            sa.select(r.c.rank, r.c.seed, r.c.trial_number, r.c.n_params.label("run_n_params"),
                      r.c.metrics["architecture"].label("architecture"), r.c.test_positions[1].label("first_scored"),
                      r.c.test_positions[sa.func.cardinality(r.c.test_positions)].label("last_scored"), *c.columns)
            .join(c, c.c.sha256 == r.c.checkpoint_sha256)
            .where(r.c.study_name == study, r.c.rank == rank)
            .order_by(r.c.seed, c.c.seen_through)
        ).mappings().all()
    latest: dict[int, AnswerModel] = {}
    for row in rows:  # ordered by seen_through: the last one per seed is its latest fold
        checkpoint = artifacts.Checkpoint(**{column.name: row[column.name] for column in checkpoints.columns})
        latest[row["seed"]] = AnswerModel(row["rank"], row["seed"], row["trial_number"], row["run_n_params"],
                                          Architecture.from_dict(row["architecture"]), checkpoint, (row["first_scored"], row["last_scored"]))
    if not latest:
        raise UserError(f"study {study}: its evaluation runs stored no checkpoints (they ran before scalesweep kept them)")
    if seed is not None:
        if seed not in latest:
            raise UserError(f"study {study}: no evaluated model with seed {seed} (seeds: {', '.join(map(str, sorted(latest)))})")
        return [latest[seed]]
    return [latest[s] for s in sorted(latest)]


def prediction_dataset(own: Dataset, engine: sa.Engine, spec: StudySpec, given: str | None) -> Dataset:
    """The study's dataset version (`own`), or `given` when its columns and feature definition are the study's."""
    if given is None:
        return own
    ref = resolve_dataset(engine, given)
    other = load_dataset(engine, ref.name, ref.version)
    if other.input_columns != own.input_columns:
        missing = [c for c in own.input_columns if c not in other.input_columns]
        extra = [c for c in other.input_columns if c not in own.input_columns]
        what = f"missing {missing}, extra {extra}" if missing or extra else "the same columns in another order"
        raise UserError(f"dataset {ref} has other input columns than {spec.dataset} ({what}): the models cannot read it")
    differ = [k for k in DEFINITION_KEYS if other.meta.get(k) != own.meta.get(k)]
    if differ:
        pairs = ", ".join(f"{k} {other.meta.get(k)!r} vs {own.meta.get(k)!r}" for k in differ)
        raise UserError(f"dataset {ref} computes its features differently from {spec.dataset} ({pairs})")
    return other


def first_position(dataset: Dataset, context: int, seen_through: str, start: str | None) -> int:
    """The first day to predict: after `seen_through`, and not before --from; with a full context window."""
    dates = dataset.frame.index
    unseen = pd.Timestamp(seen_through) + pd.Timedelta(days=1)
    if start is not None:
        try:
            asked = pd.Timestamp(start)
        except (ValueError, TypeError):
            raise UserError(f"bad --from {start!r}: expected YYYY-MM-DD") from None
        if asked < unseen:
            raise UserError(f"--from {asked.date()} is a day the models learnt from: they saw data through {seen_through}; use {unseen.date()} or later")
        unseen = asked
    position = max(int(dates.searchsorted(unseen)), context - 1)
    if position >= len(dates):
        raise UserError(f"dataset {dataset.name}:{dataset.version} ends {dates[-1].date()}: no day after {unseen.date() - pd.Timedelta(days=1)} to predict")
    return position


@dataclass(frozen=True)
class Prediction:
    models: list[AnswerModel]
    frame: pd.DataFrame  # date, probability (the seeds' mean), seed_<S> (each model)

    def summary(self) -> str:
        """One line for stderr: what answered, and for which days."""
        first, frame = self.models[0], self.frame
        days = f"{frame['date'].iloc[0]} .. {frame['date'].iloc[-1]}" if len(frame) else "no days"
        seeds = ", ".join(str(m.seed) for m in self.models)
        return (f"{len(frame)} days ({days}) from configuration rank {first.rank} (trial {first.trial_number}, "
                f"{first.n_params:,} parameters), seed{'s' if len(self.models) > 1 else ''} {seeds}")


def predict(
    engine: sa.Engine, study: str, *, dataset: str | None = None, start: str | None = None, seed: int | None = None
) -> Prediction:
    """Per-day probabilities of the study's answer for the days its models never saw."""
    spec = load_study_spec(engine, study)
    models = answer_models(engine, study, seed)
    own = load_dataset(engine, spec.dataset.name, spec.dataset.version)
    if own.sha256 != spec.dataset.sha256:
        raise UserError(f"dataset {spec.dataset} has changed since study {spec.name} was created (sha256 differs)")
    data = prediction_dataset(own, engine, spec, dataset)
    seen_through = max(m.checkpoint.seen_through for m in models).isoformat()
    first = first_position(data, spec.context, seen_through, start)
    positions = np.arange(first, len(data.frame), dtype=np.int64)
    columns: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="scalesweep-predict-") as tmp:
        for model in models:
            first_scored, last_scored = (int(data.frame.index.searchsorted(own.frame.index[p])) for p in model.scored)
            scored = (first_scored, last_scored)
            columns[f"seed_{model.seed}"] = model_probabilities(model, data, positions, scored, Path(tmp))
    frame = pd.DataFrame({"date": data.frame.index[positions].strftime("%Y-%m-%d")})
    frame["probability"] = np.mean(np.stack(list(columns.values())), axis=0)
    for name, values in columns.items():
        frame[name] = values
    return Prediction(models, frame)


def segments(positions: np.ndarray, scored: tuple[int, int], size: int) -> list[list[np.ndarray]]:
    """`positions` as three segments (before, inside and after the run's scored test days), each a
    list of forward-pass chunks of at most `size`; the scored days on the run's own chunk grid.

    Why: a row's floating-point result depends on how many rows share its forward pass, and an
    element's sigmoid on where it sits in its tensor (vector lanes or the scalar tail). The run
    scored its test days in chunks of `size` from its first test day and took one sigmoid over all
    of them; doing the same for those days is what makes their probabilities equal bit for bit.
    """
    first, last = scored
    before, inside, after = positions[positions < first], positions[(positions >= first) & (positions <= last)], positions[positions > last]
    grid = np.flatnonzero((inside - first) % size == 0)[1:]
    pieces = [np.array_split(before, np.arange(size, len(before), size)), np.split(inside, grid),
              np.array_split(after, np.arange(size, len(after), size))]
    return [[chunk for chunk in segment if len(chunk)] for segment in pieces if any(len(chunk) for chunk in segment)]


def model_probabilities(model: AnswerModel, data: Dataset, positions: np.ndarray, scored: tuple[int, int], workdir: Path) -> np.ndarray:
    """One model's probabilities for `positions`, computed segment by segment as `segments` says."""
    import torch  # heavy, optional in the control plane: only `predict` needs it

    from worker.checkpoints import load_checkpoint

    label = f"study model seed {model.seed} (checkpoint {model.checkpoint.sha256[:12]}…)"
    path = artifacts.fetch_checkpoint(model.checkpoint, workdir)
    loaded = load_checkpoint(path, architecture=model.architecture, n_params=model.n_params, label=label)
    payload = loaded.payload
    if payload["input_columns"] != data.input_columns:
        raise UserError(f"{label}: trained on columns {payload['input_columns']}, the dataset has {data.input_columns}")
    # Exactly the trainer's arithmetic: float32 features, standardised in float64, then float32.
    raw = data.frame[data.input_columns].to_numpy(dtype=np.float64).astype(np.float32).astype(np.float64)
    mean, std = payload["feature_mean"].numpy(), payload["feature_std"].numpy()
    features = torch.tensor((raw - mean) / std, dtype=torch.float32)
    offsets = torch.arange(-payload["context"] + 1, 1)
    probabilities = []
    threads = torch.get_num_threads()
    if payload["device"] == "cpu":  # the run's thread count: another one changes float32 sums in the last bit
        torch.set_num_threads(payload["cpu_threads"])
    try:
        with torch.no_grad():
            for segment in segments(positions, scored, payload["eval_chunk"]):
                logits = [loaded.model(features[torch.from_numpy(chunk)[:, None] + offsets]).float() for chunk in segment]
                probabilities.append(torch.sigmoid(torch.cat(logits)).double())
    finally:
        torch.set_num_threads(threads)
    return torch.cat(probabilities).numpy()


def output_path(out: str | None) -> Path | None:
    """--out checked before any work: a .csv or .parquet file in an existing folder (None: stdout)."""
    if out is None:
        return None
    path = Path(out)
    if path.suffix.lower() not in (".csv", ".parquet"):
        raise UserError(f"--out {out}: use a .csv or .parquet file name")
    if not path.parent.is_dir():
        raise UserError(f"--out {out}: folder {path.parent} does not exist")
    return path


def write_predictions(frame: pd.DataFrame, path: Path | None) -> str | None:
    """CSV or parquet by the file's suffix; without a file, the CSV text (for stdout)."""
    if path is None:
        return frame.to_csv(index=False)
    if path.suffix.lower() == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return None
