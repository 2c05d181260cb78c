"""One model architecture and its exact parameter count, in closed form (no torch).

`Architecture` is what a trial builds (`worker.model.PatchTST`); budgets are checked with
`count_params` before any tensor is allocated, so it must equal
`sum(p.numel() for p in model.parameters())` for every architecture (tests/test_params.py builds
hundreds of models to prove it). Change the model and this count together.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from coordinator.data.samples import CONTEXT


@dataclass(frozen=True)
class Architecture:
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    n_features: int
    context: int = CONTEXT
    patch_len: int = 10
    stride: int = 5
    revin: bool = True

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads {self.n_heads} does not divide d_model {self.d_model}")
        n_patches(self.context, self.patch_len, self.stride)  # raises for a patch longer than the context

    @property
    def n_params(self) -> int:
        return count_params(self)

    @property
    def n_patches(self) -> int:
        return n_patches(self.context, self.patch_len, self.stride)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Architecture:
        return cls(**data)


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
