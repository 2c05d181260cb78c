"""The evaluation protocol: how a study's answer is computed, recorded once like a study's spec.

An `EvaluationProtocol` says which configurations are re-trained (the study's top k COMPLETE trials
by its own objective), with which fresh seeds, and how uncertainty is estimated (block bootstrap
method, block length, replicates, the bootstrap's own seed, the interval level). Its sha256 is its
identity. A study is evaluated under one protocol: running `coordinator evaluate` again with the
same protocol changes nothing, and a different protocol for an evaluated study is refused (the
results already stored would silently mean something else otherwise).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from coordinator.errors import UserError
from coordinator.evaluation.bootstrap import METHODS

# Evaluation seeds start far above any trial number (trials use their number as seed), so an
# evaluation run never repeats a search trial's initialisation.
SEED_BASE = 1_000_000


@dataclass(frozen=True)
class BootstrapSpec:
    method: str = "moving-block"  # moving-block | stationary
    block_length: int = 20  # trading days (about a month); the horizon H is used when it is longer
    replicates: int = 2000
    seed: int = 0
    level: float = 0.95

    def block_for(self, horizon: int) -> int:
        """The block length used at horizon H: never shorter than H (label windows overlap H-1 days)."""
        return max(self.block_length, horizon)


@dataclass(frozen=True)
class EvaluationProtocol:
    k: int  # top-k COMPLETE configurations per study, by the study's objective
    seeds: tuple[int, ...]  # fresh training seeds, one evaluation run per (configuration, seed)
    bootstrap: BootstrapSpec
    selection: str = "validation"  # the study's answer is its top-k config with the best mean validation objective

    def __post_init__(self) -> None:
        if self.k < 1:
            raise UserError(f"--k must be at least 1, got {self.k}")
        if len(self.seeds) < 1:
            raise UserError("an evaluation needs at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise UserError(f"evaluation seeds must be distinct, got {list(self.seeds)}")
        if self.bootstrap.method not in METHODS:
            raise UserError(f"unknown bootstrap method {self.bootstrap.method!r}; choose one of {', '.join(METHODS)}")
        if self.bootstrap.block_length < 1 or self.bootstrap.replicates < 100:
            raise UserError("bootstrap needs block_length >= 1 and at least 100 replicates")

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), sort_keys=True))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvaluationProtocol:
        return cls(k=int(d["k"]), seeds=tuple(int(s) for s in d["seeds"]), bootstrap=BootstrapSpec(**d["bootstrap"]),
                   selection=d.get("selection", "validation"))

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def describe(self) -> str:
        b = self.bootstrap
        return (f"top {self.k} configuration(s) x {self.n_seeds} seed(s); {b.method} bootstrap over test days, "
                f"block length max({b.block_length}, H), {b.replicates} replicates, {b.level:.0%} intervals")


def default_seeds(n: int) -> tuple[int, ...]:
    return tuple(SEED_BASE + i for i in range(n))


@dataclass(frozen=True)
class EvaluationPreset:
    k: int
    n_seeds: int
    replicates: int


PRESETS: dict[str, EvaluationPreset] = {
    "default": EvaluationPreset(k=3, n_seeds=5, replicates=2000),
    # Small enough for `make run` on 2 cores; with 3 seeds of one configuration the seed part of
    # the interval rests on very few draws, and every answer says so (`wide_note_for`).
    "smoke": EvaluationPreset(k=1, n_seeds=3, replicates=1000),
}


def make_protocol(preset: str = "default", k: int | None = None, n_seeds: int | None = None,
                  seeds: tuple[int, ...] | None = None) -> EvaluationProtocol:
    """The preset's protocol with optional overrides (explicit seeds win over a seed count)."""
    if preset not in PRESETS:
        raise UserError(f"unknown evaluation preset {preset!r}; choose one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    if seeds is None:
        count = p.n_seeds if n_seeds is None else n_seeds
        if count < 1:
            raise UserError(f"--seeds must be at least 1, got {count}")
        seeds = default_seeds(count)
    return EvaluationProtocol(k=p.k if k is None else k, seeds=tuple(seeds), bootstrap=BootstrapSpec(replicates=p.replicates))


def wide_note_for(protocol: EvaluationProtocol) -> str | None:
    """A warning when the protocol is too small for its intervals to be tight."""
    if protocol.n_seeds < 5 or protocol.k < 3:
        return (f"small protocol ({protocol.k} configuration(s) x {protocol.n_seeds} seed(s)): intervals are wide; "
                "a seed count of 5 or more and k = 3 are the default")
    return None
