"""A trained model as one checkpoint file, written after training and read back by `coordinator predict`.

The file (torch.save of plain values, loadable with `weights_only=True`) holds everything needed to
use the model on new days, so its sha256 vouches for all of it:
- `state_dict`: the parameters at the best epoch (the epoch the objective chose on validation);
- `architecture`, `dropout`, `n_params`: what to build before loading the weights;
- `input_columns`, `features_version`, `tier`, `context`, `horizon`, `dataset`: the data it expects;
- `feature_mean`, `feature_std` (float64): the training statistics its inputs were standardised with;
- `seen_through`: the last day whose data shaped the model (last training or early-stopping label);
- `eval_chunk`, `device`, `cpu_threads`: how many windows one forward pass took when the run scored
  its test days, where, and with how many CPU threads (the same chunks and threads give the same
  floating-point results).

Reading checks the architecture three ways: the recorded parameter count, the state dict's own
count, and its keys and shapes against a model built (on the meta device: no memory) from the
recorded architecture.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
import torch

from coordinator.errors import UserError
from coordinator.store import artifacts
from coordinator.studies.architecture import Architecture
from coordinator.studies.search_space import TrialConfig
from coordinator.studies.spec import DatasetRef
from worker.model import PatchTST
from worker.train import EVAL_BATCH_FACTOR, TrialResult, train_statistics

FORMAT = 1


def checkpoint_payload(
    state: dict[str, torch.Tensor],
    architecture: Architecture,
    *,
    dropout: float,
    samples: Any,
    mean: np.ndarray,
    std: np.ndarray,
    dataset: dict[str, Any],
    eval_chunk: int,
    device: str = "cpu",
) -> dict[str, Any]:
    """The checkpoint's content for weights trained on `samples` (inputs standardised with mean/std)."""
    seen = max(int(samples.index[name].max()) for name in ("train", "val")) + samples.horizon
    seen_through = np.datetime_as_string(samples.dates[min(seen, len(samples.dates) - 1)], unit="D")
    return {
        "format": FORMAT,
        "state_dict": {k: v.detach().to("cpu").contiguous() for k, v in state.items()},
        "architecture": architecture.to_dict(),
        "dropout": float(dropout),
        "n_params": state_params(state),
        "input_columns": list(samples.input_columns),
        "context": int(samples.context),
        "horizon": int(samples.horizon),
        "dataset": dict(dataset),
        "feature_mean": torch.tensor(np.asarray(mean, dtype=np.float64)),
        "feature_std": torch.tensor(np.asarray(std, dtype=np.float64)),
        "seen_through": str(seen_through),
        "eval_chunk": int(eval_chunk),
        "device": device,  # where it was trained: "cpu", or "cuda:<name>" (scored in bf16 autocast)
        "cpu_threads": torch.get_num_threads(),  # intra-op threads of the run: on CPU they decide the last bit
    }


def keep_checkpoint(
    engine: sa.Engine, result: TrialResult, config: TrialConfig, samples: Any, dataset: DatasetRef, *,
    filename: str, attach_to: Any, storage: Any = None,
) -> artifacts.Checkpoint:
    """Store the best epoch's weights of a finished training (content addressed: a re-run writes nothing new)."""
    if result.best_state is None:
        raise ValueError("keep_checkpoint needs the best epoch's weights: train with keep_best_state or score_test")
    mean, std = train_statistics(samples)
    payload = checkpoint_payload(
        result.best_state, config.architecture, dropout=config.dropout, samples=samples, mean=mean, std=std,
        dataset={"name": dataset.name, "version": dataset.version, "sha256": dataset.sha256},
        eval_chunk=result.values_used["micro_batch"] * EVAL_BATCH_FACTOR,
        device=result.device,
    )
    store = artifacts.open_store()
    with tempfile.TemporaryDirectory(prefix="scalesweep-checkpoint-") as tmp:
        path = Path(tmp) / filename  # the name optuna-dashboard shows for it
        torch.save(payload, path)
        return artifacts.put_checkpoint(engine, store, path, n_params=payload["n_params"], seen_through=payload["seen_through"],
                                        attach_to=attach_to, storage=storage)


def state_params(state: dict[str, torch.Tensor]) -> int:
    return int(sum(v.numel() for v in state.values()))


@dataclasses.dataclass
class LoadedModel:
    model: PatchTST  # in eval mode, on the CPU
    payload: dict[str, Any]  # the file's other values (state_dict removed)


def load_checkpoint(path: Path, *, architecture: Architecture, n_params: int, label: str) -> LoadedModel:
    """The model in the (checksum-verified) file, its architecture checked; one line on any mismatch."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a file that is not a checkpoint at all
        raise UserError(f"{label}: not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{label}: not a scalesweep checkpoint of format {FORMAT}")
    state = payload.pop("state_dict")
    stored = Architecture.from_dict(payload["architecture"])
    if stored != architecture:
        raise UserError(f"{label}: checkpoint architecture {stored.to_dict()} differs from the run's {architecture.to_dict()}")
    if state_params(state) != n_params or payload["n_params"] != n_params:
        raise UserError(f"{label}: checkpoint has {state_params(state):,} parameters, the run recorded {n_params:,}")
    with torch.device("meta"):
        model = PatchTST(architecture, dropout=payload["dropout"])
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        differ = sorted(set(expected.items()) ^ set(found.items()))[:3]
        raise UserError(f"{label}: checkpoint tensors do not match the architecture (first differences: {differ})")
    model.load_state_dict(state, assign=True)
    return LoadedModel(model.eval(), payload)
