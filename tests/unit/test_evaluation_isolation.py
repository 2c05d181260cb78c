"""The test split is out of reach of the search: altering every test-split price, feature and label
changes no search trial's result; only the final evaluation (score_test) reads test rows."""

from __future__ import annotations

import ast

import numpy as np
import pytest

from coordinator.data.registry import Dataset
from coordinator.data.samples import make_samples
from coordinator.data.splits import default_splits
from coordinator.data.synth import synthetic_series
from coordinator.studies.search_space import Architecture, TrialConfig
from tests.conftest import REPO

torch = pytest.importorskip("torch")
from worker.train import TrainOptions, train  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def synthetic_dataset(days: int = 2500) -> Dataset:
    from coordinator.data.registry import compute_dataset_frame

    frame, _ = compute_dataset_frame(synthetic_series(days, 0).frame, "a25", None)
    return Dataset(name="syn-a25", version=0, sha256="synthetic", frame=frame, input_columns=[str(c) for c in frame.columns])


def with_test_split_altered(dataset: Dataset, test_start: str) -> Dataset:
    """Every value of every test-split day replaced: prices (so labels), volume, indicators."""
    frame = dataset.frame.copy()
    test = frame.index >= test_start
    rng = np.random.default_rng(123)
    for column in frame.columns:
        frame.loc[test, column] = frame.loc[test, column].to_numpy() * rng.uniform(0.5, 1.5, test.sum())
    frame.loc[test, "high"] = frame.loc[test, "close"].to_numpy() * rng.uniform(1.0, 1.05, test.sum())
    return Dataset(dataset.name, dataset.version, dataset.sha256, frame, dataset.input_columns)


def tiny_config(n_features: int, seed: int = 3) -> TrialConfig:
    return TrialConfig(
        architecture=Architecture(d_model=16, n_layers=1, n_heads=2, d_ff=32, n_features=n_features),
        learning_rate=2e-3, weight_decay=0.01, dropout=0.1, warmup_frac=0.1, max_epochs=2, patience=2, batch_size=64, seed=seed,
    )


def test_altering_the_test_split_changes_no_search_result() -> None:
    original = synthetic_dataset()
    splits = default_splits(original.frame.index)
    altered = with_test_split_altered(original, splits.test[0])
    samples = {name: make_samples(d, 5, splits) for name, d in (("original", original), ("altered", altered))}
    a, b = samples["original"], samples["altered"]
    test = a.index["test"]
    # The premise: the test split really differs, and nothing before it does.
    assert (a.labels[test] != b.labels[test]).mean() > 0.2
    assert not np.allclose(a.features[test], b.features[test])
    before = a.index["val"].max() + 1
    np.testing.assert_array_equal(a.features[:before], b.features[:before])
    np.testing.assert_array_equal(a.labels[:before], b.labels[:before])

    config = tiny_config(a.features.shape[1])
    search = [train(config, s) for s in (a, b)]  # exactly what a search trial runs
    assert search[0].metrics == search[1].metrics
    assert [e.to_dict() | {"seconds": 0} for e in search[0].epochs] == [e.to_dict() | {"seconds": 0} for e in search[1].epochs]
    assert search[0].best_epoch == search[1].best_epoch and search[0].test_predictions is None

    # The final evaluation does read the test split: same training, different test scores.
    final = [train(config, s, TrainOptions(score_test=True)) for s in (a, b)]
    assert final[0].metrics == search[0].metrics  # scoring test changes nothing about the training
    assert final[0].test_predictions is not None and len(final[0].test_predictions) == len(test)
    assert not np.allclose(final[0].test_predictions, final[1].test_predictions)


def test_scored_weights_are_the_best_epochs() -> None:
    from dataclasses import replace

    from coordinator.studies.metrics import roc_auc
    from worker.train import DeviceData, TrainOptions, train_model

    original = synthetic_dataset()
    samples = make_samples(original, 1, default_splits(original.frame.index))
    config = replace(tiny_config(samples.features.shape[1]), max_epochs=3, patience=3)
    result, model = train_model(config, samples, TrainOptions(score_test=True))
    assert result.best_epoch == 1 + int(np.argmax([e.val_auc for e in result.epochs]))
    # The model left behind holds the scored weights: its validation AUC is the best epoch's.
    data = DeviceData(samples, torch.device("cpu"))
    model.eval()
    with torch.no_grad():
        val = torch.sigmoid(model(data.windows(data.index["val"]))).double().numpy()
        test = torch.sigmoid(model(data.windows(data.index["test"]))).double().numpy()
    assert roc_auc(samples.labels[samples.index["val"]], val) == pytest.approx(result.metrics["val_auc"], abs=1e-6)
    np.testing.assert_allclose(test, result.test_predictions, atol=1e-6)


READERS_OF_TEST = {
    "worker/train.py",  # only under score_test, after training
    "worker/evaluate.py",  # the final evaluation
    "coordinator/evaluation/summary.py",  # test labels for the bootstrap
    "coordinator/evaluation/baselines.py",  # baselines are scored on test (fitted on train only)
}


def test_only_the_evaluation_reads_test_rows() -> None:
    """Every `[... "test" ...]` subscript in coordinator/ and worker/ is in a known, reviewed module."""
    found = set()
    for path in sorted((REPO / "coordinator").rglob("*.py")) + sorted((REPO / "worker").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value == "test":
                found.add(str(path.relative_to(REPO)))
    assert found <= READERS_OF_TEST, found - READERS_OF_TEST
    assert "worker/train.py" in found and "worker/evaluate.py" in found
    source = (REPO / "worker/train.py").read_text()
    test_line = next(line for line in source.splitlines() if 'index["test"]' in line)
    assert "predict" in test_line and source.index('index["test"]') > source.index("if self.options.score_test:")
    assert "score_test" not in (REPO / "worker/loop.py").read_text(), "the search loop must never score test"
