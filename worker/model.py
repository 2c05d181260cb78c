"""The model: a PatchTST-style encoder with channel-mixing patches, returning a logit.

    x (B, context, F)
    -> RevIN (optional): per sample and feature, normalise over time, learnable affine
    -> unfold into P patches of patch_len days (stride `stride`), each flattened to patch_len*F
    -> Linear(patch_len*F -> d) + learned positional embedding (P, d)
    -> n_layers pre-norm encoder blocks: x + Attn(LN(x)), x + FFN(LN(x))
    -> LayerNorm -> flatten (P*d) -> dropout -> Linear(P*d -> 1)
    -> logit (B,)   (no sigmoid: the loss is BCEWithLogits, probabilities come from torch.sigmoid)

`coordinator.studies.architecture.count_params` is the closed form of this module's parameter count; keep them equal.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from coordinator.studies.architecture import Architecture


class RevIN(nn.Module):
    """Reversible instance normalisation, used one way: each window is standardised per feature."""

    def __init__(self, n_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_features))
        self.bias = nn.Parameter(torch.zeros(n_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, F)
        mean = x.mean(dim=1, keepdim=True)
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps)
        return (x - mean) / std * self.weight + self.bias


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.proj_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, P, d)
        B, P, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        # (B, P, d) -> (B, heads, P, head_dim)
        q, k, v = (t.view(B, P, self.n_heads, d // self.n_heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, P, d)
        return self.proj_dropout(self.proj(y))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, d_ff)
        self.down = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.gelu(self.up(x))))


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class PatchTST(nn.Module):
    def __init__(self, arch: Architecture, dropout: float = 0.0) -> None:
        super().__init__()
        self.arch = arch
        d, p = arch.d_model, arch.n_patches
        self.revin = RevIN(arch.n_features) if arch.revin else None
        self.patch_embedding = nn.Linear(arch.patch_len * arch.n_features, d)
        self.position_embedding = nn.Parameter(torch.randn(p, d) * 0.02)
        self.embedding_dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(EncoderLayer(d, arch.n_heads, arch.d_ff, dropout) for _ in range(arch.n_layers))
        self.final_norm = nn.LayerNorm(d)
        self.head_dropout = nn.Dropout(dropout)
        self.head = nn.Linear(p * d, 1)
        self.apply(init_weights)
        # GPT-2 style: scale the projections that add into the residual stream by 1/sqrt(2 * n_layers),
        # so the stream's variance does not grow with depth (deep grids reach 256 layers).
        for layer in self.layers:
            for weight in (layer.attn.proj.weight, layer.ffn.down.weight):
                nn.init.normal_(weight, mean=0.0, std=0.02 / (2 * arch.n_layers) ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, context, F) -> (B,) logits
        if self.revin is not None:
            x = self.revin(x)
        # unfold over time: (B, P, F, patch_len) -> (B, P, patch_len, F) -> (B, P, patch_len*F), time-major
        patches = x.unfold(1, self.arch.patch_len, self.arch.stride).transpose(2, 3).flatten(2)
        h = self.embedding_dropout(self.patch_embedding(patches) + self.position_embedding)
        for layer in self.layers:
            h = layer(h)
        h = self.head_dropout(self.final_norm(h).flatten(1))
        return self.head(h).squeeze(-1)


def init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        nn.init.zeros_(module.bias)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
