"""The exact parameter count of the SPEC 2.5 model, in closed form (no torch).

Budgets are checked with this number before any tensor is allocated, so it must equal
`sum(p.numel() for p in model.parameters())` of `worker.model.PatchTST` for every architecture
(tests/test_params.py builds hundreds of models to prove it). Change both together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for the annotation: search_space imports this module
    from coordinator.search_space import Architecture


def n_patches(context: int, patch_len: int, stride: int) -> int:
    """How many patches `Tensor.unfold(1, patch_len, stride)` cuts from a window of `context` days."""
    if patch_len > context:
        raise ValueError(f"patch_len {patch_len} is longer than the context {context}")
    return (context - patch_len) // stride + 1


def layer_params(d_model: int, d_ff: int) -> int:
    """One pre-norm encoder layer: two LayerNorms, attention (fused qkv + out proj), the FFN."""
    norms = 2 * (2 * d_model)  # weight and bias of each LayerNorm
    attention = (d_model * 3 * d_model + 3 * d_model) + (d_model * d_model + d_model)
    ffn = (d_model * d_ff + d_ff) + (d_ff * d_model + d_model)
    return norms + attention + ffn


def count_params(arch: Architecture) -> int:
    """Every trainable parameter of the model built for `arch`."""
    d = arch.d_model
    p = n_patches(arch.context, arch.patch_len, arch.stride)
    revin = 2 * arch.n_features if arch.revin else 0  # per-feature affine weight and bias
    patch_embedding = arch.patch_len * arch.n_features * d + d
    position_embedding = p * d
    layers = arch.n_layers * layer_params(d, arch.d_ff)
    final_norm = 2 * d
    head = p * d + 1
    return revin + patch_embedding + position_embedding + layers + final_norm + head
