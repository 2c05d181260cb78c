"""The evaluation protocol: how a study's answer is computed, recorded once like a study's spec.

An `EvaluationProtocol` says which configurations are re-trained (the study's top k COMPLETE trials
by its own objective), with which fresh seeds, on how many walk-forward test folds (F: the study's
test split cut into F consecutive folds, each configuration re-trained before each fold, see
coordinator/data/folds.py), and how uncertainty is estimated (block bootstrap method, block length
rule, replicates, the bootstrap's own seed, the interval level). Its sha256 is its identity.

A protocol without folds is the single-period protocol of earlier releases (every run trained once
on the study's train split and scored on its whole test split); studies evaluated under it stay
readable, and its dictionary (so its sha256) is exactly what those releases stored. A study is evaluated under one protocol: running `coordinator evaluate` again with the
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
    # fixed: block_length (or H when longer); politis-white: chosen on the per-day loss differences,
    # never shorter than H, and recorded with the verdict
    block_rule: str = "fixed"

    def block_for(self, horizon: int) -> int:
        """The block length used at horizon H: never shorter than H (label windows overlap H-1 days)."""
        return max(self.block_length, horizon)


@dataclass(frozen=True)
class EvaluationProtocol:
    k: int  # top-k COMPLETE configurations per study, by the study's objective
    seeds: tuple[int, ...]  # fresh training seeds, one evaluation run per (configuration, seed)
    bootstrap: BootstrapSpec
    selection: str = "validation"  # the study's answer is its top-k config with the best mean validation objective
    folds: int | None = None  # walk-forward test folds; None: the single-period protocol

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
        if self.bootstrap.block_rule not in BLOCK_RULES:
            raise UserError(f"unknown block length rule {self.bootstrap.block_rule!r}; choose one of {', '.join(BLOCK_RULES)}")
        if self.folds is not None and not 1 <= self.folds <= MAX_FOLDS:
            raise UserError(f"--folds must be between 1 and {MAX_FOLDS}, got {self.folds}")

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def n_folds(self) -> int:
        """Runs per (configuration, seed): one per fold, or one for the single test period."""
        return self.folds or 1

    @property
    def walk_forward(self) -> bool:
        return self.folds is not None

    def to_dict(self) -> dict[str, Any]:
        d = json.loads(json.dumps(dataclasses.asdict(self), sort_keys=True))
        # The single-period protocol's dictionary stays what earlier releases stored (same sha256).
        if self.folds is None:
            del d["folds"]
        if self.bootstrap.block_rule == "fixed":
            del d["bootstrap"]["block_rule"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvaluationProtocol:
        folds = d.get("folds")
        return cls(k=int(d["k"]), seeds=tuple(int(s) for s in d["seeds"]), bootstrap=BootstrapSpec(**d["bootstrap"]),
                   selection=d.get("selection", "validation"), folds=None if folds is None else int(folds))

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def describe(self) -> str:
        b = self.bootstrap
        periods = (f"{self.folds} walk-forward test fold(s)" if self.walk_forward
                   else "one test period (single-period protocol)")
        block = "Politis-White, at least H" if b.block_rule == "politis-white" else f"max({b.block_length}, H)"
        return (f"top {self.k} configuration(s) x {self.n_seeds} seed(s) x {periods}; {b.method} bootstrap over "
                f"{'pooled ' if self.walk_forward else ''}test days, block length {block}, {b.replicates} replicates, "
                f"{b.level:.0%} intervals")


def default_seeds(n: int) -> tuple[int, ...]:
    return tuple(SEED_BASE + i for i in range(n))


BLOCK_RULES = ("fixed", "politis-white")
MAX_FOLDS = 50


@dataclass(frozen=True)
class EvaluationPreset:
    k: int
    n_seeds: int
    replicates: int
    folds: int


PRESETS: dict[str, EvaluationPreset] = {
    # Five folds of about two and a half years each over the default splits' test years.
    "default": EvaluationPreset(k=3, n_seeds=5, replicates=2000, folds=5),
    # Small enough for `make run` on 2 cores; with 2 seeds of one configuration the seed part of
    # the interval rests on very few draws, and every answer says so (`wide_note_for`).
    "smoke": EvaluationPreset(k=1, n_seeds=2, replicates=1000, folds=3),
}


def make_protocol(preset: str = "default", k: int | None = None, n_seeds: int | None = None,
                  seeds: tuple[int, ...] | None = None, folds: int | None = None) -> EvaluationProtocol:
    """The preset's protocol with optional overrides (explicit seeds win over a seed count)."""
    if preset not in PRESETS:
        raise UserError(f"unknown evaluation preset {preset!r}; choose one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    if seeds is None:
        count = p.n_seeds if n_seeds is None else n_seeds
        if count < 1:
            raise UserError(f"--seeds must be at least 1, got {count}")
        seeds = default_seeds(count)
    return EvaluationProtocol(k=p.k if k is None else k, seeds=tuple(seeds), folds=p.folds if folds is None else folds,
                              bootstrap=BootstrapSpec(replicates=p.replicates, block_rule="politis-white"))


def wide_note_for(protocol: EvaluationProtocol) -> str | None:
    """A warning when the protocol is too small for its intervals to be tight."""
    if protocol.n_seeds < 5 or protocol.k < 3:
        return (f"small protocol ({protocol.k} configuration(s) x {protocol.n_seeds} seed(s)): intervals are wide; "
                "a seed count of 5 or more and k = 3 are the default")
    return None
