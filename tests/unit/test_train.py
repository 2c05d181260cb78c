"""The trainer: every sampled value consumed, best-epoch reporting, early stopping, explicit failure,
learning on planted-signal data, and a few epochs on real SPY with every metric finite."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

from coordinator.data.registry import dataset_from_file
from coordinator.data.samples import Samples, make_samples
from coordinator.data.splits import default_splits
from coordinator.studies.search_space import Architecture, TrialConfig
from tests.conftest import REPO, SPY_CSV, requires_real_data

torch = pytest.importorskip("torch")
import worker.train as train_module  # noqa: E402
from worker.model import PatchTST  # noqa: E402
from worker.train import EpochMetrics, TrainOptions, TrialFailed, TrialInterrupted, lr_at, train, train_model  # noqa: E402

METRIC_KEYS = {
    "val_auc", "val_pr_auc", "val_loss", "val_brier", "val_accuracy", "val_precision", "val_recall",
    "pred_mean", "pred_std", "pred_min", "pred_max", "val_positive_rate",
}  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def planted_samples(n_days: int = 1800, n_features: int = 4, seed: int = 0) -> Samples:
    """Noise features; the label is whether feature 0 averaged over the last 5 days is positive."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n_days, n_features)).astype(np.float32)
    recent_mean = np.convolve(features[:, 0], np.ones(5) / 5, mode="full")[:n_days]
    labels = (recent_mean > 0).astype(np.float32)
    context = 60
    train_end, val_end = int(n_days * 0.7), int(n_days * 0.85)
    index = {
        "train": np.arange(context - 1, train_end),
        "val": np.arange(train_end + context - 1, val_end),
        "test": np.arange(val_end + context - 1, n_days),
    }
    return Samples(
        features=features,
        labels=labels,
        index={k: v.astype(np.int64) for k, v in index.items()},
        context=context,
        horizon=1,
        input_columns=[f"x{i}" for i in range(n_features)],
        dates=np.arange(n_days).astype("datetime64[D]").astype("datetime64[ns]"),
    )


def spy_samples(horizon: int) -> Samples:
    """Real SPY a25 samples with the default splits, built without a database."""
    dataset = dataset_from_file(SPY_CSV)
    return make_samples(dataset, horizon, default_splits(dataset.frame.index))


def small_config(n_features: int = 4, **overrides: object) -> TrialConfig:
    values: dict = {
        "architecture": Architecture(d_model=16, n_layers=1, n_heads=2, d_ff=32, n_features=n_features),
        "learning_rate": 2e-3,
        "weight_decay": 0.01,
        "dropout": 0.0,
        "warmup_frac": 0.1,
        "max_epochs": 3,
        "patience": 3,
        "batch_size": 64,
        "seed": 0,
    }
    return TrialConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def planted() -> Samples:
    return planted_samples()


def test_learns_a_planted_signal(planted: Samples) -> None:
    epochs: list[EpochMetrics] = []
    config = small_config(max_epochs=4)
    result = train(config, planted, TrainOptions(on_epoch=epochs.append))
    assert result.metrics["val_auc"] > 0.8
    assert set(result.metrics) == METRIC_KEYS
    assert [e.epoch for e in epochs] == list(range(1, result.epochs_run + 1))
    assert result.objective_value == max(e.val_auc for e in epochs) == epochs[result.best_epoch - 1].val_auc
    assert result.values_used["micro_batch"] == 64 and result.values_used["grad_accum"] == 1
    assert result.n_params == config.architecture.n_params
    assert result.samples_per_s > 0 and result.peak_memory_mb > 0 and result.device == "cpu"


def test_deterministic_on_cpu_for_a_seed(planted: Samples) -> None:
    config = small_config(max_epochs=2, dropout=0.1)
    first, second = train(config, planted), train(config, planted)
    assert first.metrics == second.metrics
    assert [e.train_loss for e in first.epochs] == [e.train_loss for e in second.epochs]
    other = train(small_config(max_epochs=2, dropout=0.1, seed=1), planted)
    assert other.epochs[0].train_loss != first.epochs[0].train_loss


def test_learning_rate_follows_warmup_then_cosine(planted: Samples) -> None:
    # The schedule itself.
    assert lr_at(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 100) == pytest.approx(1.0)
    assert lr_at(10, 1.0, 10, 100) == pytest.approx(1.0)
    assert lr_at(55, 1.0, 10, 100) == pytest.approx(0.5)
    assert lr_at(100, 1.0, 10, 100) == pytest.approx(0.0)
    assert lr_at(0, 1.0, 0, 100) == pytest.approx(1.0)  # no warmup
    # The trainer applies it at every step: the LR seen at the end of each epoch is lr_at(that step).
    for warmup_frac in (0.0, 0.5):
        config = small_config(max_epochs=3, patience=5, warmup_frac=warmup_frac, learning_rate=1e-3)
        result = train(config, planted)
        steps = result.values_used["steps_per_epoch"]
        total = result.values_used["total_steps"]
        assert total == 3 * steps and result.values_used["warmup_steps"] == round(warmup_frac * total)
        for e in result.epochs:
            assert e.learning_rate == pytest.approx(lr_at(e.epoch * steps - 1, 1e-3, round(warmup_frac * total), total))
    assert result.epochs[0].learning_rate == pytest.approx(1e-3 * min(1.0, steps / round(0.5 * total)))


def test_weight_decay_is_applied_to_weights(planted: Samples) -> None:
    def weights(wd: float) -> dict[str, torch.Tensor]:
        _, model = train_model(small_config(max_epochs=1, weight_decay=wd), planted)
        return {k: v.detach().clone() for k, v in model.named_parameters()}

    plain, decayed = weights(0.0), weights(5.0)
    matrices = [k for k, v in plain.items() if v.ndim >= 2 and k != "position_embedding"]
    assert matrices
    for name in matrices:
        assert decayed[name].norm() < plain[name].norm(), name


def test_dropout_is_applied_in_training_only(planted: Samples) -> None:
    _, model = train_model(small_config(max_epochs=1, dropout=0.3), planted)
    rates = {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
    assert rates == {0.3} and model.layers[0].attn.dropout == 0.3
    x = torch.randn(8, 60, 4)
    model.train()
    assert not torch.equal(model(x), model(x))  # dropout changes training outputs
    model.eval()
    assert torch.equal(model(x), model(x))
    no_dropout = PatchTST(model.arch, dropout=0.0).train()
    assert torch.equal(no_dropout(x), no_dropout(x))


def scripted_metrics(monkeypatch: pytest.MonkeyPatch, curve: list[dict[str, float]]) -> None:
    """Replace the trainer's validation metrics by a known curve, one entry per epoch."""
    calls = iter(curve)
    real = train_module.binary_metrics

    def fake(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
        return {**real(labels, probs), **next(calls)}

    monkeypatch.setattr(train_module, "binary_metrics", fake)


def test_best_epoch_and_early_stopping_on_a_known_curve(planted: Samples, monkeypatch: pytest.MonkeyPatch) -> None:
    aucs = [0.55, 0.60, 0.58, 0.62, 0.61, 0.60, 0.59, 0.90, 0.95, 0.97]
    scripted_metrics(monkeypatch, [{"val_auc": a, "val_brier": 0.1 + i} for i, a in enumerate(aucs)])
    reported: list[EpochMetrics] = []
    result = train(small_config(max_epochs=10, patience=3), planted, TrainOptions(on_epoch=reported.append))
    # Best at epoch 4; epochs 5, 6, 7 do not improve; patience 3 stops after epoch 7.
    assert result.best_epoch == 4 and result.epochs_run == 7 and len(reported) == 7
    assert result.objective_value == 0.62 and result.metrics["val_auc"] == 0.62
    assert result.metrics["val_brier"] == 0.1 + 3  # every metric comes from the best epoch, not the last


def test_val_loss_objective_is_minimised(planted: Samples, monkeypatch: pytest.MonkeyPatch) -> None:
    losses = [0.70, 0.65, 0.66, 0.67]
    scripted_metrics(monkeypatch, [{"val_loss": v} for v in losses])
    result = train(small_config(max_epochs=4, patience=2), planted, TrainOptions(objective="val_loss"))
    assert (result.best_epoch, result.epochs_run, result.objective_value) == (2, 4, 0.65)


def test_collapsed_predictions_are_pruned_with_a_reason(planted: Samples, monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_metrics(monkeypatch, [{"pred_std": 0.0, "pred_mean": 0.5}] * 5)
    with pytest.raises(optuna.TrialPruned, match="collapsed"):
        train(small_config(max_epochs=5, patience=2), planted)


def test_huge_learning_rate_ends_pruned_with_a_reason(planted: Samples) -> None:
    with pytest.raises(optuna.TrialPruned, match="diverged|collapsed"):
        train(small_config(max_epochs=3, learning_rate=1e6, warmup_frac=0.0), planted)


def test_pruning_and_stop_requests_propagate(planted: Samples) -> None:
    def prune(_: EpochMetrics) -> None:
        raise optuna.TrialPruned("pruned by the service at epoch 1")

    with pytest.raises(optuna.TrialPruned, match="by the service"):
        train(small_config(), planted, TrainOptions(on_epoch=prune))
    with pytest.raises(TrialInterrupted):
        train(small_config(), planted, TrainOptions(should_stop=lambda: True))


def test_out_of_memory_halves_the_micro_batch_and_keeps_the_batch(
    planted: Samples, monkeypatch: pytest.MonkeyPatch
) -> None:
    class SmallMemoryModel(PatchTST):
        """Runs out of memory above 16 windows at a time while training."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.training and len(x) > 16:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return super().forward(x)

    config = small_config(max_epochs=2)
    full = train(config, planted)
    monkeypatch.setattr(train_module, "PatchTST", SmallMemoryModel)
    accumulated = train(config, planted)
    assert accumulated.values_used["micro_batch"] == 16 and accumulated.values_used["grad_accum"] == 4
    assert accumulated.values_used["batch_size"] == 64
    # Gradient accumulation gives the same updates as the whole batch (up to float rounding).
    assert accumulated.metrics["val_auc"] == pytest.approx(full.metrics["val_auc"], abs=1e-3)
    assert [e.train_loss for e in accumulated.epochs] == pytest.approx([e.train_loss for e in full.epochs], rel=1e-3)

    class NoMemoryModel(PatchTST):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(train_module, "PatchTST", NoMemoryModel)
    with pytest.raises(TrialFailed, match="micro-batch 1"):
        train(config, planted)


@requires_real_data
def test_real_spy_tiny_model_trains_with_finite_metrics() -> None:
    samples = spy_samples(horizon=3)
    config = small_config(n_features=len(samples.input_columns), max_epochs=2, learning_rate=1e-3)
    result = train(config, samples)
    assert result.epochs_run == 2 and 1 <= result.best_epoch <= 2
    assert set(result.metrics) == METRIC_KEYS
    assert all(math.isfinite(v) for v in result.metrics.values())
    assert all(math.isfinite(v) for e in result.epochs for v in e.to_dict().values())
    assert result.metrics["val_positive_rate"] == pytest.approx(samples.positive_rate("val"))
    assert result.values_used["n_train"] == len(samples.index["train"])
    assert result.values_used["n_val"] == len(samples.index["val"])
    assert result.n_params == config.architecture.n_params


@requires_real_data
def test_training_benchmark_runs(tmp_path: Path) -> None:
    """bench/training.py end to end on its smallest budget (it must keep working, on CPU and CUDA)."""
    out = tmp_path / "bench.json"
    command = [sys.executable, str(REPO / "bench" / "training.py"), "--device", "cpu", "--budgets", "100K"]
    command += ["--steps", "2", "--threads", "1", "--csv", str(SPY_CSV), "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(out.read_text())
    assert row["budget"] == "100K" and 75_000 <= row["n_params"] <= 125_000
    assert row["samples_per_s"] > 0 and row["s_per_epoch"] > 0 and row["peak_memory_mb"] > 0 and row["mfu"] is None
    assert "samples/s" in done.stdout


def test_on_step_counts_every_optimizer_step_and_the_step_path_is_recorded(planted: Samples) -> None:
    seen: list[int] = []
    result = train(small_config(max_epochs=2, patience=5), planted, TrainOptions(on_step=seen.append))
    steps = result.values_used["steps_per_epoch"] * result.epochs_run
    assert seen == list(range(1, steps + 1))
    # On CPU a step is always eager, with the foreach AdamW and clip.
    assert result.values_used["step_mode"] == "eager" and result.values_used["optimizer"] == "foreach"
    assert result.values_used["step_ms_eager"] is None and result.values_used["step_ms_graph"] is None
    with pytest.raises(ValueError, match="needs a CUDA device"):
        train(small_config(), planted, TrainOptions(step_mode="cuda_graph"))
    with pytest.raises(ValueError, match="unknown step mode"):
        train(small_config(), planted, TrainOptions(step_mode="fast"))


def test_best_state_reproduces_the_best_epoch(planted: Samples, monkeypatch: pytest.MonkeyPatch) -> None:
    """keep_best_state keeps the weights of the best epoch, not the last one."""
    seen: list[np.ndarray] = []
    real = train_module.binary_metrics

    def remember(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
        seen.append(probs.copy())
        metrics = real(labels, probs)
        return {**metrics, "val_auc": [0.6, 0.7, 0.65][(len(seen) - 1) % 3]}  # best at epoch 2 of 3

    monkeypatch.setattr(train_module, "binary_metrics", remember)
    config = small_config(max_epochs=3, patience=5)
    result, last = train_model(config, planted, TrainOptions(keep_best_state=True))
    assert result.best_epoch == 2 and result.best_state is not None
    assert train(config, planted).best_state is None  # only when asked
    model = PatchTST(config.architecture).eval()
    model.load_state_dict(result.best_state)
    data = train_module.DeviceData(planted, torch.device("cpu"))
    with torch.no_grad():
        probs = torch.sigmoid(model(data.windows(data.index["val"]))).double().numpy()
    np.testing.assert_allclose(probs, seen[1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(probs, seen[2], rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs and fused AdamW need a CUDA device")
def test_cuda_graph_step_matches_the_eager_step(planted: Samples) -> None:
    config = small_config(max_epochs=2, patience=5, batch_size=32)
    eager = train(config, planted, TrainOptions(device="cuda", step_mode="eager", optimizer="foreach"))
    graphed = train(config, planted, TrainOptions(device="cuda", step_mode="cuda_graph"))
    assert eager.values_used["step_mode"] == "eager" and graphed.values_used["step_mode"] == "cuda_graph"
    assert graphed.values_used["optimizer"] == "fused" and graphed.values_used["step_ms_graph"] > 0
    assert [e.train_loss for e in graphed.epochs] == pytest.approx([e.train_loss for e in eager.epochs], rel=2e-2)
    auto = train(config, planted, TrainOptions(device="cuda"))
    assert auto.values_used["step_mode"] in ("eager", "cuda_graph") and "graph_error" not in auto.values_used
