"""What a trial may be: the architectures that fit a parameter budget and the training values.

A `SearchSpace` is plain data (stored in every study spec, JSON round trip exact), so a worker
rebuilds exactly the space the study was created with. From it:

- `feasible_architectures(space)`: every grid architecture whose exact parameter count
  (`coordinator.studies.architecture.count_params`) lies within ±tolerance of the budget.
- `suggest(trial, space)`: one `TrialConfig` from an Optuna trial. The architecture is drawn as a
  chain of categorical choices, each restricted to what is still feasible given its parents:

      d_model                  widths that have at least one feasible architecture
      ffn_ratio_d{d}           ratios that have a feasible depth at this width
      n_layers_d{d}_r{r}       depths within the budget at this width and ratio
      n_heads_d{d}             head counts that divide d (min_head_dim <= head dim <= max_head_dim)
      revin                    RevIN on or off (per-window normalisation can hide the volatility
                               level the label measures, so whether it helps is searched)

  Every branch is feasible by construction, so no sample is wasted and the sampler learns which
  width/depth/heads work (an ordinal index into a sorted list would hide that structure). The
  parameter names carry their parents because Optuna needs one fixed choice list per name.
  Heads do not change the parameter count, so they only depend on the width. The head dimension
  is capped at 256, the largest the fused (flash) attention kernels take; wider heads fall back to
  the unfused attention. RevIN adds 2 x n_features parameters: an architecture is feasible only if
  it is within budget with every RevIN choice.
- `extreme_params(space)`: widest, deepest, fewest- and most-heads architectures as param dicts for
  `study.enqueue_trial`, so the sampler sees the corners of the space first.

`coordinator search-space` prints, per budget, how many architectures are feasible.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from coordinator.data.samples import CONTEXT
from coordinator.errors import UserError
from coordinator.studies.architecture import Architecture, count_params

if TYPE_CHECKING:
    import optuna

# The reference grid of architectures.
REFERENCE_D_MODELS = (64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
REFERENCE_N_LAYERS = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 160, 180, 192, 256)
REFERENCE_N_HEADS = (2, 4, 8, 16, 32)
FFN_RATIOS = (2, 4)
# Narrow widths join the grid below a million parameters (CPU smoke budgets such as 100K, 300K).
SMALL_D_MODELS = (16, 32, 48)
SMALL_BUDGET = 1_000_000

DEFAULT_BUDGETS = ("2M", "20M", "200M", "2B")
CPU_BUDGETS = ("100K", "300K")

# Training schedule per preset: "reference" for the real studies, "cpu-small" for quick CPU runs.
PRESETS: dict[str, dict[str, Any]] = {
    "reference": {"max_epochs": 30, "patience": 5, "batch_sizes": (64, 128, 256)},
    "cpu-small": {"max_epochs": 3, "patience": 2, "batch_sizes": (64, 128)},
}


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial trains with; every field is consumed by `worker.train.train`."""

    architecture: Architecture
    learning_rate: float  # peak, reached at the end of warmup
    weight_decay: float  # AdamW, on weight matrices only
    dropout: float
    warmup_frac: float  # share of all optimizer steps spent in linear warmup; cosine decay after
    max_epochs: int
    patience: int  # epochs without improvement of the objective before stopping
    batch_size: int  # effective batch (micro-batch x gradient accumulation)
    seed: int
    grad_clip: float = 1.0  # max global gradient norm

    def training_values(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "architecture"}

    def to_dict(self) -> dict[str, Any]:
        return {"architecture": self.architecture.to_dict(), **self.training_values()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialConfig:
        values = dict(data)
        return cls(architecture=Architecture.from_dict(values.pop("architecture")), **values)


@dataclass(frozen=True)
class SearchSpace:
    budget_params: int
    n_features: int
    preset: str = "reference"
    tolerance: float = 0.25  # an architecture is feasible within budget * (1 ± tolerance)
    context: int = CONTEXT
    patch_len: int = 10
    stride: int = 5
    d_models: tuple[int, ...] = REFERENCE_D_MODELS
    n_layers: tuple[int, ...] = REFERENCE_N_LAYERS
    n_heads: tuple[int, ...] = REFERENCE_N_HEADS
    ffn_ratios: tuple[int, ...] = FFN_RATIOS
    min_head_dim: int = 8
    max_head_dim: int | None = 256  # None: no cap (specs written before the cap existed)
    revin_choices: tuple[bool, ...] = (True, False)
    # Training values: (low, high) ranges; learning rate and weight decay are sampled log-uniformly.
    learning_rate: tuple[float, float] = (1e-5, 3e-3)
    weight_decay: tuple[float, float] = (1e-4, 0.3)
    dropout: tuple[float, float] = (0.0, 0.3)
    warmup_frac: tuple[float, float] = (0.0, 0.2)
    batch_sizes: tuple[int, ...] = (64, 128, 256)
    max_epochs: int = 30
    patience: int = 5
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.budget_params <= 0 or self.n_features <= 0:
            raise UserError("budget and number of features must be positive")
        if not 0 < self.tolerance < 1:
            raise UserError(f"budget tolerance must be in (0, 1), got {self.tolerance}")
        if not self.revin_choices or len(set(self.revin_choices)) != len(self.revin_choices):
            raise UserError(f"revin_choices must be distinct and non-empty, got {self.revin_choices}")
        for name in ("d_models", "n_layers", "n_heads", "ffn_ratios", "batch_sizes"):
            values = getattr(self, name)
            if not values or any(v <= 0 for v in values):
                raise UserError(f"search space list {name} must be non-empty and positive, got {values}")
        for name in ("learning_rate", "weight_decay", "dropout", "warmup_frac"):
            low, high = getattr(self, name)
            if not low <= high:
                raise UserError(f"search space range {name} must have low <= high, got {(low, high)}")
        if self.learning_rate[0] <= 0 or self.weight_decay[0] <= 0:
            raise UserError("learning_rate and weight_decay are log-uniform: their lower bounds must be > 0")
        if not (0 <= self.dropout[0] and self.dropout[1] < 1 and 0 <= self.warmup_frac[0] and self.warmup_frac[1] < 1):
            raise UserError("dropout and warmup_frac must lie in [0, 1)")
        if self.max_epochs < 1 or self.patience < 1:
            raise UserError("max_epochs and patience must be >= 1")

    @property
    def low(self) -> int:
        return math.ceil(self.budget_params * (1 - self.tolerance))

    @property
    def high(self) -> int:
        return math.floor(self.budget_params * (1 + self.tolerance))

    def within_budget(self, n_params: int) -> bool:
        return self.low <= n_params <= self.high

    def architecture(self, d_model: int, n_layers: int, n_heads: int, ffn_ratio: int, revin: bool = True) -> Architecture:
        return Architecture(
            d_model=d_model,
            n_layers=n_layers,
            n_heads=n_heads,
            d_ff=ffn_ratio * d_model,
            n_features=self.n_features,
            context=self.context,
            patch_len=self.patch_len,
            stride=self.stride,
            revin=revin,
        )

    def heads_for(self, d_model: int) -> list[int]:
        cap = self.max_head_dim or d_model
        return [h for h in self.n_heads if d_model % h == 0 and self.min_head_dim <= d_model // h <= cap]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (tuples become lists); from_dict(to_dict()) == self."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSpace:
        data = dict(data)
        # Specs written before RevIN was searched carry one study-wide `revin` flag (on when absent),
        # and had no head-dimension cap: they rebuild exactly the space they were created with.
        if "revin_choices" not in data:
            data["revin_choices"] = [bool(data.pop("revin", True))]
        data.setdefault("max_head_dim", None)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(f"unknown search space keys {unknown}: the study was made by another code version")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def default_search_space(
    budget_params: int,
    n_features: int,
    *,
    preset: str = "reference",
    context: int = CONTEXT,
    tolerance: float = 0.25,
    revin_choices: tuple[bool, ...] = (True, False),
) -> SearchSpace:
    """The reference grid for one budget; UserError when no grid architecture fits it."""
    if preset not in PRESETS:
        raise UserError(f"unknown search space preset {preset!r}; choose one of {', '.join(PRESETS)}")
    d_models = REFERENCE_D_MODELS
    if budget_params < SMALL_BUDGET:
        d_models = SMALL_D_MODELS + REFERENCE_D_MODELS
    space = SearchSpace(
        budget_params=budget_params,
        n_features=n_features,
        preset=preset,
        tolerance=tolerance,
        context=context,
        revin_choices=revin_choices,
        d_models=d_models,
        **PRESETS[preset],
    )
    if not feasible_architectures(space):
        raise UserError(
            f"no architecture of the grid lies within ±{tolerance:.0%} of {budget_label(budget_params)} parameters"
        )
    return space


@functools.cache
def _feasible_tree(space: SearchSpace) -> dict[int, dict[int, list[int]]]:
    """d_model -> ffn_ratio -> feasible n_layers (each list non-empty, empty branches dropped)."""
    tree: dict[int, dict[int, list[int]]] = {}
    for d in sorted(space.d_models):
        if not space.heads_for(d):
            continue
        for ratio in sorted(space.ffn_ratios):
            depths = [
                n
                for n in sorted(space.n_layers)
                if all(
                    space.within_budget(count_params(space.architecture(d, n, space.heads_for(d)[0], ratio, revin)))
                    for revin in space.revin_choices
                )
            ]
            if depths:
                tree.setdefault(d, {})[ratio] = depths
    return tree


def feasible_architectures(space: SearchSpace) -> list[Architecture]:
    """Every grid architecture within budget, sorted by (d_model, ffn ratio, n_layers, n_heads, RevIN
    on first)."""
    return [
        space.architecture(d, n, h, ratio, revin)
        for d, ratios in _feasible_tree(space).items()
        for ratio, depths in ratios.items()
        for n in depths
        for h in space.heads_for(d)
        for revin in sorted(space.revin_choices, reverse=True)
    ]


def ffn_ratio_param(d_model: int) -> str:
    return f"ffn_ratio_d{d_model}"


def n_layers_param(d_model: int, ffn_ratio: int) -> str:
    return f"n_layers_d{d_model}_r{ffn_ratio}"


def n_heads_param(d_model: int) -> str:
    return f"n_heads_d{d_model}"


def arch_params(arch: Architecture) -> dict[str, int]:
    """The Optuna params that make `suggest` produce this architecture (for enqueue_trial)."""
    ratio = arch.d_ff // arch.d_model
    return {
        "d_model": arch.d_model,
        ffn_ratio_param(arch.d_model): ratio,
        n_layers_param(arch.d_model, ratio): arch.n_layers,
        n_heads_param(arch.d_model): arch.n_heads,
        "revin": arch.revin,
    }


def suggest(trial: optuna.Trial, space: SearchSpace) -> TrialConfig:
    """One trial's architecture and training values, all drawn from `trial` (see module doc)."""
    tree = _feasible_tree(space)
    d = trial.suggest_categorical("d_model", list(tree))
    ratio = trial.suggest_categorical(ffn_ratio_param(d), list(tree[d]))
    n_layers = trial.suggest_categorical(n_layers_param(d, ratio), tree[d][ratio])
    n_heads = trial.suggest_categorical(n_heads_param(d), space.heads_for(d))
    revin = trial.suggest_categorical("revin", list(space.revin_choices))
    return TrialConfig(
        architecture=space.architecture(d, n_layers, n_heads, ratio, revin),
        learning_rate=trial.suggest_float("learning_rate", *space.learning_rate, log=True),
        weight_decay=trial.suggest_float("weight_decay", *space.weight_decay, log=True),
        dropout=trial.suggest_float("dropout", *space.dropout),
        warmup_frac=trial.suggest_float("warmup_frac", *space.warmup_frac),
        batch_size=trial.suggest_categorical("batch_size", list(space.batch_sizes)),
        max_epochs=space.max_epochs,
        patience=space.patience,
        grad_clip=space.grad_clip,
        seed=trial.number,
    )


def extreme_params(space: SearchSpace) -> list[dict[str, int]]:
    """Widest, deepest, fewest heads, most heads: architecture params for `study.enqueue_trial`.

    Ties go to the architecture closest to the budget; widest and deepest use the head count whose
    head dim is closest to 64 (the usual choice). Duplicates are dropped; training values are left
    to the sampler.
    """
    # RevIN on (as before it was searched) when it is a choice: the corners are about shape.
    preferred = True if True in space.revin_choices else space.revin_choices[0]
    archs = [a for a in feasible_architectures(space) if a.revin == preferred]

    def closeness(a: Architecture) -> int:
        return abs(a.n_params - space.budget_params)

    def usual_heads(a: Architecture) -> bool:
        best = min(space.heads_for(a.d_model), key=lambda h: abs(a.d_model // h - 64))
        return a.n_heads == best

    usual = [a for a in archs if usual_heads(a)]
    widest = min(usual, key=lambda a: (-a.d_model, closeness(a)))
    deepest = min(usual, key=lambda a: (-a.n_layers, closeness(a)))
    fewest_heads = min(archs, key=lambda a: (a.n_heads, closeness(a)))
    most_heads = min(archs, key=lambda a: (-a.n_heads, closeness(a)))
    extremes: list[dict[str, int]] = []
    for arch in (widest, deepest, fewest_heads, most_heads):
        params = arch_params(arch)
        if params not in extremes:
            extremes.append(params)
    return extremes


_SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9}


def parse_budget(label: str) -> int:
    """'2M' -> 2_000_000, '100K', '2B', '1.5M', or a plain integer."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMB]?)\s*", label.upper())
    if not match:
        raise UserError(f"bad budget {label!r}: expected a parameter count such as 300K, 2M, 20M, 2B")
    value = round(float(match.group(1)) * _SUFFIXES[match.group(2)])
    if value <= 0:
        raise UserError(f"bad budget {label!r}: must be positive")
    return value


def budget_label(budget_params: int) -> str:
    """2_000_000 -> '2M'; the inverse of parse_budget for round numbers."""
    for suffix in ("B", "M", "K"):
        scale = _SUFFIXES[suffix]
        if budget_params >= scale and budget_params % (scale // 10) == 0:
            return f"{budget_params / scale:g}{suffix}"
    return str(budget_params)
