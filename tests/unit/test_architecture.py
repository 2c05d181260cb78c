"""The closed-form parameter count equals the built model's, for hundreds of architectures."""

from __future__ import annotations

import random

import pytest

from coordinator.studies.architecture import count_params, n_patches
from coordinator.studies.search_space import Architecture

torch = pytest.importorskip("torch")
from worker.model import PatchTST, n_params  # noqa: E402


def random_architectures(n: int, seed: int = 0) -> list[Architecture]:
    rng = random.Random(seed)
    archs = []
    while len(archs) < n:
        n_heads = rng.choice([1, 2, 4, 8])
        d_model = n_heads * rng.choice([2, 4, 8, 12, 16])
        context = rng.choice([20, 32, 60, 61])
        patch_len = rng.choice([4, 10, 16])
        archs.append(
            Architecture(
                d_model=d_model,
                n_layers=rng.choice([0, 1, 2, 3]),
                n_heads=n_heads,
                d_ff=rng.choice([1, 2, 3, 4]) * d_model,
                n_features=rng.choice([1, 5, 25, 33]),
                context=context,
                patch_len=patch_len,
                stride=rng.choice([1, 3, 5, patch_len]),
                revin=rng.random() < 0.5,
            )
        )
    return archs


def test_formula_equals_numel_for_random_architectures() -> None:
    archs = random_architectures(220)
    assert len({(a.d_model, a.n_layers, a.d_ff, a.n_features, a.context, a.patch_len, a.stride, a.revin) for a in archs}) > 150
    with torch.device("meta"):  # shapes only: no memory, no time
        for arch in archs:
            assert count_params(arch) == n_params(PatchTST(arch, dropout=0.1)), arch


def test_formula_equals_numel_for_budget_sized_models() -> None:
    """A 2M- and a 2B-class model from the reference grid (on the meta device, nothing allocated)."""
    with torch.device("meta"):
        for arch in (
            Architecture(d_model=256, n_layers=2, n_heads=8, d_ff=1024, n_features=25),
            Architecture(d_model=2048, n_layers=32, n_heads=16, d_ff=8192, n_features=33, revin=False),
        ):
            assert count_params(arch) == n_params(PatchTST(arch))


def test_patch_count_matches_unfold() -> None:
    assert n_patches(60, 10, 5) == 11  # context 60, patch 10, stride 5
    x = torch.zeros(1, 61, 3)
    assert x.unfold(1, 10, 5).shape[1] == n_patches(61, 10, 5)
