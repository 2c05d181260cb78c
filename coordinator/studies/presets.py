"""The presets of a study matrix and the limits every study request is checked against.

The context length and the label threshold live with the data code that uses them
(`coordinator.data.samples.CONTEXT`, `coordinator.data.labels.THRESHOLD`); the objectives with the
spec (`coordinator.studies.spec.OBJECTIVES`).

`default` is the real matrix (2M..2B x H 1, 3, 5, 50 trials); `smoke` the CPU-sized one that runs the
whole service end to end on two cores.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from coordinator.data.samples import CONTEXT
from coordinator.errors import UserError
from coordinator.studies.search_space import budget_label, default_search_space, feasible_architectures
from coordinator.studies.spec import PrunerSpec



@dataclass(frozen=True)
class Preset:
    budgets: tuple[str, ...]
    horizons: tuple[int, ...]
    trials: int
    space: str  # coordinator.studies.search_space preset: grid and training schedule
    pruner: PrunerSpec
    max_layers: int | None = None  # cap on depth (CPU: a 48-layer 100K model trains for minutes)


PRESETS: dict[str, Preset] = {
    # The real matrix: 4 budgets x 3 horizons = 12 studies of 50 trials.
    "default": Preset(("2M", "20M", "200M", "2B"), (1, 3, 5), 50, "reference", PrunerSpec("median")),
    # Sub-million budgets, 3-epoch schedule, 3 trials each: the whole service end to end on 2 CPU cores.
    "smoke": Preset(("100K", "300K"), (1, 5), 3, "cpu-small", PrunerSpec("median"), max_layers=8),
}


class PresetName(StrEnum):
    """The one preset vocabulary (create-studies, local, search-space)."""

    default = "default"
    smoke = "smoke"


class ObjectiveName(StrEnum):
    val_auc = "val_auc"
    val_loss = "val_loss"


class PrunerName(StrEnum):
    median = "median"
    none = "none"


# Ranges checked before anything is written (the columns are 32-bit; seeds are numpy's 32-bit).
MAX_TRIALS = 1_000_000


MAX_HORIZON = 250  # a trading year


MAX_SEED = 2**32 - 1


def preset_named(name: str) -> Preset:
    """The create-studies preset called `name` (default or smoke); UserError for anything else."""
    if name not in PRESETS:
        raise UserError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def search_space(budget: int, n_features: int, preset: Preset) -> Any:
    return preset_search_space(budget, n_features, preset)


def preset_search_space(budget: int, n_features: int, preset: Preset, tolerance: float | None = None) -> Any:
    """The preset's search space for one budget (its schedule and depth cap); UserError when no
    architecture fits it."""
    extra = {} if tolerance is None else {"tolerance": tolerance}
    space = default_search_space(budget, n_features, preset=preset.space, context=CONTEXT, **extra)
    if preset.max_layers is not None:
        space = dataclasses.replace(space, n_layers=tuple(n for n in space.n_layers if n <= preset.max_layers))
        if not feasible_architectures(space):
            raise UserError(f"no architecture of at most {preset.max_layers} layers fits {budget_label(budget)} ±{space.tolerance:.0%}")
    return space
