"""One trial: build the sampled model, train it, evaluate it each epoch, return the best epoch.

No database here: `train(config, samples, device=...)` is all the service needs to call.

- Data: the whole (standardised) feature matrix, labels and split positions live on the device as
  tensors; a batch is gathered by index arithmetic (positions t -> rows t-context+1 .. t), so no
  batch is ever copied from the host.
- Optimisation: AdamW with the sampled weight decay on the weight matrices (biases, LayerNorm and
  RevIN affines and the positional embedding are not decayed), learning rate in linear warmup over
  `warmup_frac` of all steps then cosine decay to zero, per optimizer step; gradient clipping.
  bf16 autocast on CUDA; optional torch.compile.
- Evaluation: once per epoch on the validation split only (the test split is never touched here).
  `on_epoch` gets every epoch's numbers (the service reports them to Optuna there and may raise
  optuna.TrialPruned, which propagates). Early stopping after `patience` epochs without improvement
  of the objective; the result carries the metrics of the best epoch, not the last.
- Failure is explicit, never a sentinel: a non-finite loss or prediction, or predictions collapsed to
  a constant, raise optuna.TrialPruned with the reason; running out of memory at micro-batch 1 raises
  TrialFailed. On CUDA out-of-memory the micro-batch is halved and gradients accumulated, so the
  effective batch stays `batch_size`; the values actually used are in `values_used`.
- Deterministic on CPU for a fixed seed.
"""

from __future__ import annotations

import dataclasses
import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import torch
import torch.nn.functional as F

from coordinator.metrics import binary_metrics
from coordinator.params import count_params
from coordinator.search_space import TrialConfig
from worker.model import PatchTST, n_params

if TYPE_CHECKING:
    from coordinator.data.samples import Samples

OBJECTIVES = {"val_auc": "maximize", "val_loss": "minimize"}
COLLAPSE_STD = 1e-4  # val predictions whose std (in probability) stays below this are a constant
NAN_CHECK_EVERY = 10  # optimizer steps between checks of the running loss (each check syncs the GPU)
EVAL_BATCH_FACTOR = 4  # evaluation keeps no activations, so it can use a larger batch


class TrialFailed(Exception):
    """The trial could not run (e.g. out of memory even at micro-batch 1); the message says why."""


class TrialInterrupted(Exception):
    """should_stop() asked the trial to stop (worker shutting down)."""


@dataclass
class EpochMetrics:
    epoch: int  # 1-based
    train_loss: float
    val_loss: float
    val_auc: float
    learning_rate: float  # at the last step of the epoch
    seconds: float

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclass
class TrialResult:
    metrics: dict[str, float]  # SPEC 2.7 validation metrics at the best epoch
    objective_value: float
    best_epoch: int
    epochs_run: int
    n_params: int
    values_used: dict[str, Any]
    duration_s: float
    samples_per_s: float  # training samples per second of training time
    peak_memory_mb: float  # CUDA: max allocated during the trial; CPU: the process's peak RSS
    device: str
    epochs: list[EpochMetrics] = field(default_factory=list)


def lr_at(step: int, peak_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup, then cosine decay to zero."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return peak_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


class DeviceData:
    """Features, labels and split positions as tensors on the device; batches by index arithmetic."""

    def __init__(self, samples: Samples, device: torch.device) -> None:
        self.context = samples.context
        features = samples.features.astype(np.float64)
        # Standardise with train statistics (float64) so inputs are O(1) whether or not RevIN is on;
        # OBV and volume reach 1e10, where float32 windows would lose their variation.
        train = samples.index["train"]
        rows = features[train.min() - self.context + 1 : train.max() + 1]
        mean, std = rows.mean(axis=0), rows.std(axis=0)
        std[std == 0] = 1.0
        self.features = torch.tensor((features - mean) / std, dtype=torch.float32, device=device)
        self.labels = torch.tensor(samples.labels, dtype=torch.float32, device=device)
        self.index = {name: torch.tensor(pos, dtype=torch.long, device=device) for name, pos in samples.index.items()}
        self.offsets = torch.arange(-self.context + 1, 1, device=device)

    def windows(self, positions: torch.Tensor) -> torch.Tensor:
        """(B,) positions t -> (B, context, F) windows features[t-context+1 : t+1]."""
        return self.features[positions[:, None] + self.offsets]


def make_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW decaying the weight matrices only (ndim >= 2 excludes biases, norms, RevIN; and the
    positional embedding, which is 2-D but a table of offsets, not a projection)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and name != "position_embedding" else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, 0.95))


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def train(
    config: TrialConfig,
    samples: Samples,
    *,
    device: str = "cpu",
    objective: str = "val_auc",
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    micro_batch: int | None = None,
    compile: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> TrialResult:
    """Run one trial; see the module doc. `micro_batch` defaults to the whole batch."""
    return train_model(
        config,
        samples,
        device=device,
        objective=objective,
        on_epoch=on_epoch,
        should_stop=should_stop,
        micro_batch=micro_batch,
        compile=compile,
        on_step=on_step,
    )[0]


def train_model(
    config: TrialConfig,
    samples: Samples,
    *,
    device: str = "cpu",
    objective: str = "val_auc",
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    micro_batch: int | None = None,
    compile: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> tuple[TrialResult, PatchTST]:
    """`train`, also returning the model as it is after the last epoch (for tests and benchmarks)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {sorted(OBJECTIVES)}")
    arch = config.architecture
    if arch.n_features != samples.features.shape[1] or arch.context != samples.context:
        raise ValueError(
            f"architecture expects {arch.n_features} features x {arch.context} days, "
            f"samples have {samples.features.shape[1]} x {samples.context}"
        )
    started = time.perf_counter()
    dev = torch.device(device)
    maximize = OBJECTIVES[objective] == "maximize"
    torch.manual_seed(config.seed)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
    data = DeviceData(samples, dev)
    try:
        with dev:  # allocate parameters directly on the device
            model = PatchTST(arch, dropout=config.dropout)
    except RuntimeError as exc:
        if not is_out_of_memory(exc):
            raise
        raise TrialFailed(f"out of memory allocating {count_params(arch):,} parameters on {device_name(dev)}") from None
    if n_params(model) != count_params(arch):  # the budget was checked with count_params
        raise RuntimeError(f"model has {n_params(model)} parameters, count_params says {count_params(arch)}")
    forward = torch.compile(model) if compile else model
    optimizer = make_optimizer(model, config.learning_rate, config.weight_decay)
    autocast = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")

    train_positions = data.index["train"]
    n_train = len(train_positions)
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    total_steps = steps_per_epoch * config.max_epochs
    warmup_steps = round(config.warmup_frac * total_steps)
    micro = min(micro_batch or config.batch_size, config.batch_size)
    shuffle = torch.Generator(device=dev).manual_seed(config.seed)

    def backward_batch(batch: torch.Tensor) -> torch.Tensor:
        """Gradients of the mean loss over `batch`, accumulated over micro-batches; returns the loss."""
        total = torch.zeros((), device=dev)
        for chunk in batch.split(micro):
            with autocast:
                logits = forward(data.windows(chunk))
            # Sum over the chunk / batch size: the accumulated gradient is that of the batch mean.
            loss = F.binary_cross_entropy_with_logits(logits.float(), data.labels[chunk], reduction="sum") / len(batch)
            loss.backward()
            total += loss.detach()
        return total

    def predict(positions: torch.Tensor) -> np.ndarray:
        """Probabilities for `positions`, float64 on the host."""
        nonlocal micro
        model.eval()
        while True:
            try:
                with torch.no_grad(), autocast:
                    logits = [forward(data.windows(chunk)).float() for chunk in positions.split(micro * EVAL_BATCH_FACTOR)]
                break
            except RuntimeError as exc:
                if not is_out_of_memory(exc):
                    raise
                micro = halve_micro_batch(micro, dev, "evaluation")
        model.train()
        return torch.sigmoid(torch.cat(logits)).double().cpu().numpy()

    val_labels = samples.labels[samples.index["val"]]
    epochs: list[EpochMetrics] = []
    epoch_metrics: list[dict[str, float]] = []
    best_epoch, best_value = 0, -math.inf if maximize else math.inf
    collapsed_streak = 0
    train_seconds, samples_seen, step, lr = 0.0, 0, 0, config.learning_rate
    model.train()
    for epoch in range(1, config.max_epochs + 1):
        epoch_start = time.perf_counter()
        order = train_positions[torch.randperm(n_train, generator=shuffle, device=dev)]
        loss_sum = torch.zeros((), device=dev)
        for batch in order.split(config.batch_size):
            if should_stop is not None and should_stop():
                raise TrialInterrupted(f"stopped on request at epoch {epoch}, step {step}")
            lr = lr_at(step, config.learning_rate, warmup_steps, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            while True:
                optimizer.zero_grad(set_to_none=True)
                try:
                    batch_loss = backward_batch(batch)
                    break
                except RuntimeError as exc:
                    if not is_out_of_memory(exc):
                        raise
                    micro = halve_micro_batch(micro, dev, "training")
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            try:
                optimizer.step()
            except RuntimeError as exc:  # AdamW allocates its state (2 x parameters) on the first step
                if not is_out_of_memory(exc):
                    raise
                raise TrialFailed(f"out of memory for the optimizer state on {device_name(dev)}") from None
            loss_sum += batch_loss * len(batch)
            step += 1
            if on_step is not None:
                on_step(step)  # optimizer steps so far in this trial (the worker's liveness counter)
            if step % NAN_CHECK_EVERY == 0:
                check_finite(loss_sum, epoch, step)
        check_finite(loss_sum, epoch, step)
        train_loss = loss_sum.item() / n_train
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        train_seconds += time.perf_counter() - epoch_start
        samples_seen += n_train

        probs = predict(data.index["val"])
        if not np.all(np.isfinite(probs)):
            raise optuna.TrialPruned(f"diverged: non-finite validation predictions at epoch {epoch}")
        metrics = binary_metrics(val_labels, probs)
        epoch_metrics.append(metrics)
        record = EpochMetrics(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=metrics["val_loss"],
            val_auc=metrics["val_auc"],
            learning_rate=lr,
            seconds=time.perf_counter() - epoch_start,
        )
        epochs.append(record)
        if on_epoch is not None:
            on_epoch(record)  # may raise optuna.TrialPruned: let it propagate

        collapsed_streak = collapsed_streak + 1 if metrics["pred_std"] < COLLAPSE_STD else 0
        if collapsed_streak >= config.patience:
            raise optuna.TrialPruned(
                f"collapsed: validation predictions constant (std {metrics['pred_std']:.2e} < {COLLAPSE_STD:g}) "
                f"for {collapsed_streak} epochs, mean {metrics['pred_mean']:.4f}"
            )
        value = metrics[objective]
        if (value > best_value) if maximize else (value < best_value):
            best_epoch, best_value = epoch, value
        if epoch - best_epoch >= config.patience:
            break

    best = epoch_metrics[best_epoch - 1]
    if best["pred_std"] < COLLAPSE_STD:
        raise optuna.TrialPruned(
            f"collapsed: validation predictions at the best epoch {best_epoch} are constant "
            f"(std {best['pred_std']:.2e} < {COLLAPSE_STD:g})"
        )
    values_used = {
        **config.training_values(),
        "micro_batch": micro,
        "grad_accum": math.ceil(config.batch_size / micro),
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "warmup_steps": warmup_steps,
        "objective": objective,
        "precision": "bf16-autocast" if dev.type == "cuda" else "fp32",
        "compile": compile,
        "n_train": n_train,
        "n_val": len(val_labels),
    }
    result = TrialResult(
        metrics=best,
        objective_value=best_value,
        best_epoch=best_epoch,
        epochs_run=len(epochs),
        n_params=n_params(model),
        values_used=values_used,
        duration_s=time.perf_counter() - started,
        samples_per_s=samples_seen / train_seconds,
        peak_memory_mb=peak_memory_mb(dev),
        device=device_name(dev),
        epochs=epochs,
    )
    return result, model


def check_finite(loss_sum: torch.Tensor, epoch: int, step: int) -> None:
    if not math.isfinite(loss_sum.item()):
        raise optuna.TrialPruned(f"diverged: non-finite training loss by epoch {epoch}, step {step}")


def halve_micro_batch(micro: int, device: torch.device, phase: str) -> int:
    """Out of memory: free what we can and retry with half the micro-batch (more accumulation)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if micro <= 1:
        raise TrialFailed(f"out of memory during {phase} even at micro-batch 1 on {device_name(device)}")
    return micro // 2


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return "cpu"
