"""One trial: build the sampled model, train it, evaluate it each epoch, return the best epoch.

No database here: `train(config, samples, device=...)` is all the service needs to call.

- Data: the whole (standardised) feature matrix, labels and split positions live on the device as
  tensors; a batch is gathered by index arithmetic (positions t -> rows t-context+1 .. t), so no
  batch is ever copied from the host.
- Optimisation: AdamW with the sampled weight decay on the weight matrices (biases, LayerNorm and
  RevIN affines and the positional embedding are not decayed), learning rate in linear warmup over
  `warmup_frac` of all steps then cosine decay to zero, per optimizer step; gradient clipping.
  bf16 autocast on CUDA; optional torch.compile.
- Speed on CUDA: fused AdamW (one kernel for all parameters instead of a dozen per tensor group)
  and a foreach gradient clip that never syncs the host. Small or deep models are bound by kernel
  launches (a 64-layer model issues thousands per step), so the whole step (forward, backward,
  clip, AdamW) may be captured once in a CUDA graph and replayed. `step_mode="auto"` decides per
  trial from measurement: a few eager steps, then a few replays, and the faster one is kept; the
  choice and both timings are recorded in `values_used` (`step_mode`, `step_ms_eager`,
  `step_ms_graph`). CPU: foreach AdamW and clip, always eager.
- Evaluation: once per epoch on the validation split only (the test split is never touched here).
  `on_step(n)` is called after every optimizer step with the steps taken so far (no host sync).
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

from coordinator.studies.architecture import count_params
from coordinator.studies.metrics import binary_metrics
from coordinator.studies.search_space import TrialConfig
from coordinator.studies.spec import OBJECTIVES
from worker.model import PatchTST, n_params

if TYPE_CHECKING:
    from coordinator.data.samples import Samples

COLLAPSE_STD = 1e-4  # val predictions whose std (in probability) stays below this are a constant
NAN_CHECK_EVERY = 10  # optimizer steps between checks of the running loss (each check syncs the GPU)
EVAL_BATCH_FACTOR = 4  # evaluation keeps no activations, so it can use a larger batch
STEP_MODES = ("auto", "eager", "cuda_graph")
# How AdamW and the gradient clip run: "default" is PyTorch's choice (foreach on CUDA, a loop over
# tensors on CPU), kept so benchmarks can show the path this trainer used before; None picks by device.
OPTIMIZERS = ("fused", "foreach", "default")
GRAPH_WARMUP_STEPS = 3  # eager steps before capture (AdamW state, cuBLAS workspaces, allocator)
GRAPH_PROBE_STEPS = 3  # timed replays compared with the timed eager steps
GRAPH_MIN_GAIN = 0.9  # keep the graph when a replay takes under 90% of an eager step


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
    metrics: dict[str, float]  # validation metrics at the best epoch
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
    # The model's parameters and buffers at the best epoch, on the CPU; only with keep_best_state=True.
    best_state: dict[str, torch.Tensor] | None = None
    test_predictions: np.ndarray | None = None  # only with score_test: the best epoch's test-split probabilities


def lr_at(step: int, peak_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup, then cosine decay to zero."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return peak_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def train_statistics(samples: Samples) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std (float64) of the training rows, which every input is standardised with.

    Standardised so inputs are O(1) whether or not RevIN is on; OBV and volume reach 1e10, where
    float32 windows would lose their variation. A checkpoint stores them beside the weights.
    """
    train = samples.index["train"]
    rows = samples.features.astype(np.float64)[train.min() - samples.context + 1 : train.max() + 1]
    mean, std = rows.mean(axis=0), rows.std(axis=0)
    std[std == 0] = 1.0
    return mean, std


class DeviceData:
    """Features, labels and split positions as tensors on the device; batches by index arithmetic."""

    def __init__(self, samples: Samples, device: torch.device) -> None:
        self.context = samples.context
        features = samples.features.astype(np.float64)
        mean, std = train_statistics(samples)
        self.features = torch.tensor((features - mean) / std, dtype=torch.float32, device=device)
        self.labels = torch.tensor(samples.labels, dtype=torch.float32, device=device)
        self.index = {name: torch.tensor(pos, dtype=torch.long, device=device) for name, pos in samples.index.items()}
        self.offsets = torch.arange(-self.context + 1, 1, device=device)

    def windows(self, positions: torch.Tensor) -> torch.Tensor:
        """(B,) positions t -> (B, context, F) windows features[t-context+1 : t+1]."""
        return self.features[positions[:, None] + self.offsets]


def default_optimizer(device: torch.device) -> str:
    """Fused AdamW on CUDA (one kernel launch for every parameter); foreach elsewhere."""
    return "fused" if device.type == "cuda" else "foreach"


def make_optimizer(
    model: torch.nn.Module, learning_rate: float, weight_decay: float, *, implementation: str = "foreach"
) -> torch.optim.AdamW:
    """AdamW decaying the weight matrices only (ndim >= 2 excludes biases, norms, RevIN; and the
    positional embedding, which is 2-D but a table of offsets, not a projection).

    "fused" (CUDA) keeps the learning rate in a device tensor and its step count on the device
    (`capturable`), so a captured CUDA graph replays the update with each step's learning rate;
    set it with `set_learning_rate`.
    """
    if implementation not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer implementation {implementation!r}; choose one of {OPTIMIZERS}")
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and name != "position_embedding" else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if implementation == "fused":
        device = next(model.parameters()).device
        lr = torch.tensor(learning_rate, dtype=torch.float32, device=device)
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=True, capturable=True)
    if implementation == "foreach":
        return torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, 0.95), foreach=True)
    return torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, 0.95))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group's learning rate; in place when it is a device tensor (a CUDA graph reads it there)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def clip_gradients(model: torch.nn.Module, max_norm: float, foreach: bool | None = True) -> None:
    """Global-norm clip, by default with the foreach kernels: no host sync, so a graph can capture it."""
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm, foreach=foreach)


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@dataclass(frozen=True)
class TrainOptions:
    """How one trial trains, besides its sampled values (the TrialConfig).

    `micro_batch` defaults to the whole batch. `step_mode` ("auto", "eager", "cuda_graph") and
    `optimizer` ("fused", "foreach", "default"; None picks by device) choose how a step runs, so
    benchmarks can put the older path beside the current one. `keep_best_state` keeps the best epoch's
    parameters in `TrialResult.best_state` (on the CPU). `score_test` is for the final evaluation only
    (never the search): the best epoch's weights are kept, and after training they score the test
    split once (`TrialResult.test_predictions`).
    """

    device: str = "cpu"
    objective: str = "val_auc"
    on_epoch: Callable[[EpochMetrics], None] | None = None
    should_stop: Callable[[], bool] | None = None
    micro_batch: int | None = None
    compile: bool = False
    on_step: Callable[[int], None] | None = None
    step_mode: str = "auto"
    optimizer: str | None = None
    keep_best_state: bool = False
    score_test: bool = False


def train(config: TrialConfig, samples: Samples, options: TrainOptions = TrainOptions()) -> TrialResult:
    """Run one trial; see the module doc."""
    return train_model(config, samples, options)[0]


def train_model(config: TrialConfig, samples: Samples, options: TrainOptions = TrainOptions()) -> tuple[TrialResult, PatchTST]:
    """`train`, also returning the model as it is after the last epoch (for tests and benchmarks)."""
    trainer = Trainer(config, samples, options)
    trainer.fit()
    return trainer.result(), trainer.model


def check_request(config: TrialConfig, samples: Samples, options: TrainOptions) -> None:
    """Refuse an unknown objective or step mode, and samples the architecture was not built for."""
    if options.objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {options.objective!r}; choose one of {sorted(OBJECTIVES)}")
    if options.step_mode not in STEP_MODES:
        raise ValueError(f"unknown step mode {options.step_mode!r}; choose one of {STEP_MODES}")
    arch = config.architecture
    if arch.n_features != samples.features.shape[1] or arch.context != samples.context:
        raise ValueError(
            f"architecture expects {arch.n_features} features x {arch.context} days, "
            f"samples have {samples.features.shape[1]} x {samples.context}"
        )


def build_model(config: TrialConfig, dev: torch.device) -> PatchTST:
    """The sampled model, allocated directly on the device; its size must be the one the budget was checked with."""
    arch = config.architecture
    try:
        with dev:
            model = PatchTST(arch, dropout=config.dropout)
    except RuntimeError as exc:
        if not is_out_of_memory(exc):
            raise
        raise TrialFailed(f"out of memory allocating {count_params(arch):,} parameters on {device_name(dev)}") from None
    if n_params(model) != count_params(arch):  # the budget was checked with count_params
        raise RuntimeError(f"model has {n_params(model)} parameters, count_params says {count_params(arch)}")
    return model


class CapturedStep:
    """One whole training step for a fixed batch size, captured once in a CUDA graph and replayed.

    The batch positions live in a static tensor that each replay reads; gradients, the loss and the
    activations live in the graph's private memory pool for as long as the graph does.
    """

    def __init__(self, body: Callable[[torch.Tensor], torch.Tensor], first_batch: torch.Tensor) -> None:
        self.positions = first_batch.clone()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss = body(self.positions)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.positions.copy_(batch)
        self.graph.replay()
        return self.loss


class Steps:
    """How the model's optimizer steps and predictions run.

    On CUDA (without torch.compile) the first full-size steps run eagerly on a side stream (as graph
    capture requires), timed; then the step is captured and replayed, timed; in "auto" the graph is
    kept only if a replay is clearly faster. Accumulating micro-batches (after an out-of-memory)
    always runs eagerly. `mode` ends as what the steps mostly were: eager, cuda_graph or compiled.
    """

    def __init__(self, model: PatchTST, data: DeviceData, config: TrialConfig, options: TrainOptions, implementation: str) -> None:
        self.model, self.data, self.config, self.step_mode = model, data, config, options.step_mode
        self.dev = torch.device(options.device)
        self.forward = torch.compile(model) if options.compile else model
        self.adamw = make_optimizer(model, config.learning_rate, config.weight_decay, implementation=implementation)
        self.clip_foreach = None if implementation == "default" else True
        # No cast cache: each weight is cast once per forward anyway, and a captured graph must not
        # keep casts made outside it.
        self.autocast = torch.autocast(device_type=self.dev.type, dtype=torch.bfloat16, enabled=self.dev.type == "cuda", cache_enabled=False)
        self.micro = min(options.micro_batch or config.batch_size, config.batch_size)
        can_capture = self.dev.type == "cuda" and options.step_mode != "eager" and implementation == "fused"  # capturable AdamW only
        self.mode = "compiled" if options.compile else ("probing" if can_capture else "eager")
        self.graph: CapturedStep | None = None
        self.graph_error: str | None = None
        self.eager_times: list[float] = []
        self.graph_times: list[float] = []
        self.full_eager_steps = 0
        self.side_stream = torch.cuda.Stream(self.dev) if self.mode == "probing" else None

    def backward_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """Gradients of the mean loss over `batch`, accumulated over micro-batches; returns the loss."""
        total = torch.zeros((), device=self.dev)
        for chunk in batch.split(self.micro):
            with self.autocast:
                logits = self.forward(self.data.windows(chunk))
            # Sum over the chunk / batch size: the accumulated gradient is that of the batch mean.
            loss = F.binary_cross_entropy_with_logits(logits.float(), self.data.labels[chunk], reduction="sum") / len(batch)
            loss.backward()
            total += loss.detach()
        return total

    def step_body(self, batch: torch.Tensor) -> torch.Tensor:
        """Backward, clip, AdamW: what a CUDA graph captures (gradients were set to None before)."""
        loss = self.backward_batch(batch)
        clip_gradients(self.model, self.config.grad_clip, self.clip_foreach)
        self.adamw.step()
        return loss

    def eager_step(self, batch: torch.Tensor) -> torch.Tensor:
        while True:
            self.adamw.zero_grad(set_to_none=True)
            try:
                batch_loss = self.backward_batch(batch)
                break
            except RuntimeError as exc:
                if not is_out_of_memory(exc):
                    raise
                self.micro = halve_micro_batch(self.micro, self.dev, "training")
        clip_gradients(self.model, self.config.grad_clip, self.clip_foreach)
        try:
            self.adamw.step()
        except RuntimeError as exc:  # AdamW allocates its state (2 x parameters) on the first step
            if not is_out_of_memory(exc):
                raise
            raise TrialFailed(f"out of memory for the optimizer state on {device_name(self.dev)}") from None
        return batch_loss

    def run(self, batch: torch.Tensor, lr: float) -> torch.Tensor:
        """One optimizer step over `batch` at learning rate `lr`; returns its loss (on the device)."""
        set_learning_rate(self.adamw, lr)
        full = len(batch) == self.config.batch_size
        if self.mode == "probing" and full:
            if self.micro < self.config.batch_size:
                self.mode = "eager"  # accumulation: a graph would fix one micro-batch split; not worth it
            elif self.full_eager_steps >= GRAPH_WARMUP_STEPS and self.graph is None:
                self.capture(batch)
        if self.graph is not None and full:
            return self.replay(self.graph, batch)
        if self.mode != "probing":
            return self.eager_step(batch)
        return self.timed_eager_step(batch, full)

    def capture(self, batch: torch.Tensor) -> None:
        torch.cuda.synchronize(self.dev)
        self.adamw.zero_grad(set_to_none=True)
        try:
            self.graph = CapturedStep(self.step_body, batch)
        except RuntimeError as exc:
            if self.step_mode == "cuda_graph" and not is_out_of_memory(exc):
                raise
            self.graph, self.mode = None, "eager"
            self.graph_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
            self.adamw.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()

    def replay(self, graph: CapturedStep, batch: torch.Tensor) -> torch.Tensor:
        if self.mode != "probing":
            return graph(batch)
        torch.cuda.synchronize(self.dev)
        tick = time.perf_counter()
        loss = graph(batch)
        torch.cuda.synchronize(self.dev)
        self.graph_times.append(time.perf_counter() - tick)
        if len(self.graph_times) > GRAPH_PROBE_STEPS:  # the first replay pays one-off costs: not counted
            replay_s, eager_s = min(self.graph_times[1:]), min(self.eager_times) if self.eager_times else math.inf
            if self.step_mode == "cuda_graph" or replay_s < GRAPH_MIN_GAIN * eager_s:
                self.mode = "cuda_graph"
            else:
                self.mode, self.graph = "eager", None
                torch.cuda.empty_cache()
        return loss

    def timed_eager_step(self, batch: torch.Tensor, full: bool) -> torch.Tensor:
        """An eager step on the side stream while probing, timed when it is a full, warm one."""
        assert self.side_stream is not None
        self.side_stream.wait_stream(torch.cuda.current_stream(self.dev))
        with torch.cuda.stream(self.side_stream):
            timed = full and self.full_eager_steps > 0  # the first step allocates AdamW's state: not counted
            if timed:
                torch.cuda.synchronize(self.dev)
                tick = time.perf_counter()
            loss = self.eager_step(batch)
            if timed:
                torch.cuda.synchronize(self.dev)
                self.eager_times.append(time.perf_counter() - tick)
        torch.cuda.current_stream(self.dev).wait_stream(self.side_stream)
        self.full_eager_steps += full
        return loss

    def predict(self, positions: torch.Tensor) -> torch.Tensor:
        """Probabilities for `positions` as a float64 device tensor (no host sync here)."""
        self.model.eval()
        while True:
            try:
                with torch.no_grad(), self.autocast:
                    logits = [self.forward(self.data.windows(chunk)).float() for chunk in positions.split(self.micro * EVAL_BATCH_FACTOR)]
                break
            except RuntimeError as exc:
                if not is_out_of_memory(exc):
                    raise
                self.micro = halve_micro_batch(self.micro, self.dev, "evaluation")
        self.model.train()
        return torch.sigmoid(torch.cat(logits)).double()

    def final_mode(self) -> str:
        """The trial ended before the probe decided: say what its steps mostly were."""
        if self.mode == "probing":
            return "cuda_graph" if self.graph is not None else "eager"
        return self.mode


class Trainer:
    """One trial's training run: the data and model on the device, the epoch loop, the best epoch."""

    def __init__(self, config: TrialConfig, samples: Samples, options: TrainOptions) -> None:
        check_request(config, samples, options)
        self.started = time.perf_counter()
        self.config, self.samples, self.options = config, samples, options
        self.dev = torch.device(options.device)
        self.on_cuda = self.dev.type == "cuda"
        self.maximize = OBJECTIVES[options.objective] == "maximize"
        self.implementation = options.optimizer or default_optimizer(self.dev)
        if options.step_mode == "cuda_graph" and (not self.on_cuda or options.compile or self.implementation != "fused"):
            raise ValueError("step_mode 'cuda_graph' needs a CUDA device, the fused optimizer and no torch.compile")
        torch.manual_seed(config.seed)
        if self.on_cuda:
            torch.cuda.reset_peak_memory_stats(self.dev)
            torch.backends.cuda.matmul.allow_tf32 = True
        self.data = DeviceData(samples, self.dev)
        self.model = build_model(config, self.dev)
        self.steps = Steps(self.model, self.data, config, options, self.implementation)
        self.n_train = len(self.data.index["train"])
        self.steps_per_epoch = math.ceil(self.n_train / config.batch_size)
        self.total_steps = self.steps_per_epoch * config.max_epochs
        self.warmup_steps = round(config.warmup_frac * self.total_steps)
        self.shuffle = torch.Generator(device=self.dev).manual_seed(config.seed)
        self.val_labels = samples.labels[samples.index["val"]]
        self.epochs: list[EpochMetrics] = []
        self.epoch_metrics: list[dict[str, float]] = []
        self.best_epoch, self.best_value = 0, -math.inf if self.maximize else math.inf
        self.best_state: dict[str, torch.Tensor] | None = None  # the best epoch's weights, on the host
        self.collapsed_streak = 0
        self.train_seconds, self.samples_seen, self.step, self.lr = 0.0, 0, 0, config.learning_rate

    def fit(self) -> None:
        """Epochs until the last one or early stopping; pruning and failures raise."""
        self.model.train()
        for epoch in range(1, self.config.max_epochs + 1):
            epoch_start = time.perf_counter()
            loss_sum = self.train_epoch(epoch, epoch_start)
            metrics = self.validate(epoch, epoch_start, loss_sum)
            if self.keep_if_best(epoch, metrics):
                break

    def train_epoch(self, epoch: int, epoch_start: float) -> torch.Tensor:
        """One pass over the shuffled training split; returns the summed loss (on the device)."""
        positions = self.data.index["train"]
        order = positions[torch.randperm(self.n_train, generator=self.shuffle, device=self.dev)]
        loss_sum = torch.zeros((), device=self.dev)
        for batch in order.split(self.config.batch_size):
            if self.options.should_stop is not None and self.options.should_stop():
                raise TrialInterrupted(f"stopped on request at epoch {epoch}, step {self.step}")
            self.lr = lr_at(self.step, self.config.learning_rate, self.warmup_steps, self.total_steps)
            loss_sum += self.steps.run(batch, self.lr) * len(batch)
            self.step += 1
            if self.options.on_step is not None:
                self.options.on_step(self.step)  # optimizer steps so far in this trial (the worker's liveness counter)
            if self.step % NAN_CHECK_EVERY == 0:
                check_finite(loss_sum, epoch, self.step)
        if self.on_cuda:  # the epoch's training time, for samples/s (one sync per epoch)
            torch.cuda.synchronize(self.dev)
        self.train_seconds += time.perf_counter() - epoch_start
        self.samples_seen += self.n_train
        return loss_sum

    def validate(self, epoch: int, epoch_start: float, loss_sum: torch.Tensor) -> dict[str, float]:
        """The epoch's validation metrics, recorded and handed to `on_epoch` (which may prune)."""
        # One device-to-host copy per epoch: the training loss and every validation probability.
        val_probs = self.steps.predict(self.data.index["val"])
        on_host = torch.cat([loss_sum.double().reshape(1), val_probs]).cpu().numpy()
        train_loss, probs = float(on_host[0]) / self.n_train, on_host[1:]
        if not math.isfinite(train_loss):
            raise optuna.TrialPruned(f"diverged: non-finite training loss by epoch {epoch}, step {self.step}")
        if not np.all(np.isfinite(probs)):
            raise optuna.TrialPruned(f"diverged: non-finite validation predictions at epoch {epoch}")
        metrics = binary_metrics(self.val_labels, probs)
        self.epoch_metrics.append(metrics)
        record = EpochMetrics(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=metrics["val_loss"],
            val_auc=metrics["val_auc"],
            learning_rate=self.lr,
            seconds=time.perf_counter() - epoch_start,
        )
        self.epochs.append(record)
        if self.options.on_epoch is not None:
            self.options.on_epoch(record)  # may raise optuna.TrialPruned: let it propagate
        return metrics

    def keep_if_best(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Track the best epoch (and its weights when asked); True when training should stop early."""
        self.collapsed_streak = self.collapsed_streak + 1 if metrics["pred_std"] < COLLAPSE_STD else 0
        if self.collapsed_streak >= self.config.patience:
            raise optuna.TrialPruned(
                f"collapsed: validation predictions constant (std {metrics['pred_std']:.2e} < {COLLAPSE_STD:g}) "
                f"for {self.collapsed_streak} epochs, mean {metrics['pred_mean']:.4f}"
            )
        value = metrics[self.options.objective]
        if (value > self.best_value) if self.maximize else (value < self.best_value):
            self.best_epoch, self.best_value = epoch, value
            if self.options.keep_best_state or self.options.score_test:
                self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        return epoch - self.best_epoch >= self.config.patience

    def result(self) -> TrialResult:
        """The best epoch's metrics (and, with score_test, its test predictions) and the values used."""
        best = self.epoch_metrics[self.best_epoch - 1]
        if best["pred_std"] < COLLAPSE_STD:
            raise optuna.TrialPruned(
                f"collapsed: validation predictions at the best epoch {self.best_epoch} are constant "
                f"(std {best['pred_std']:.2e} < {COLLAPSE_STD:g})"
            )
        mode = self.steps.final_mode()
        test_predictions = None
        if self.options.score_test:  # once, after training, with the weights of the epoch chosen on validation
            if self.best_state is None:
                raise TrialFailed("no epoch improved the objective: nothing to score on test")
            self.model.load_state_dict(self.best_state)
            test_predictions = self.steps.predict(self.data.index["test"]).cpu().numpy()  # one host copy, after training
        return TrialResult(
            metrics=best,
            objective_value=self.best_value,
            best_epoch=self.best_epoch,
            epochs_run=len(self.epochs),
            n_params=n_params(self.model),
            values_used=self.values_used(mode),
            duration_s=time.perf_counter() - self.started,
            samples_per_s=self.samples_seen / self.train_seconds,
            peak_memory_mb=peak_memory_mb(self.dev),
            device=device_name(self.dev),
            epochs=self.epochs,
            best_state=self.best_state,
            test_predictions=test_predictions,
        )

    def values_used(self, mode: str) -> dict[str, Any]:
        """Every value the trial actually trained with, beside the sampled ones."""
        steps, micro = self.steps, self.steps.micro
        values = {
            **self.config.training_values(),
            "micro_batch": micro,
            "grad_accum": math.ceil(self.config.batch_size / micro),
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "objective": self.options.objective,
            "precision": "bf16-autocast" if self.on_cuda else "fp32",
            "compile": self.options.compile,
            "optimizer": self.implementation,
            "step_mode": mode,
            "step_ms_eager": 1000 * min(steps.eager_times) if steps.eager_times else None,
            "step_ms_graph": 1000 * min(steps.graph_times[1:]) if len(steps.graph_times) > 1 else None,
            "n_train": self.n_train,
            "n_val": len(self.val_labels),
        }
        if steps.graph_error is not None:
            values["graph_error"] = steps.graph_error
        return values


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
