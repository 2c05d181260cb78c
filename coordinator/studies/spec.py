"""A study's immutable spec: everything that defines what its trials mean.

One spec per study, written once by `coordinator create-studies` (table `study_specs`, and the Optuna
study's user attributes for the dashboard). Workers rebuild the label, splits, search space, sampler
and pruner from it, so two studies that differ in the spec really differ in what they train
(the horizon, the sampler seed and the feature set are all part of it). `sha256()` is the spec's identity; `code_version` is provenance only and
is left out of it, or every new commit would look like a changed spec.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import optuna

OBJECTIVES = {"val_auc": "maximize", "val_loss": "minimize"}
# Further objectives of a multi-objective study (`--objectives val_auc,n_params`), each a cost:
# the exact parameter count, or the training seconds per epoch.
SECONDARY_OBJECTIVES = {"n_params": "minimize", "s_per_epoch": "minimize"}
PRUNERS = ("none", "median", "asha", "hyperband")
# Successive halving (asha, and hyperband's brackets): the first rung after MIN_RESOURCE epochs (one
# epoch of warmup-dominated training says little), then every REDUCTION_FACTOR times as many, keeping
# the best 1/REDUCTION_FACTOR of the trials that reached each rung.
MIN_RESOURCE = 2
REDUCTION_FACTOR = 3


@dataclass(frozen=True)
class DatasetRef:
    name: str
    version: int
    sha256: str

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class LabelSpec:
    kind: str  # "threshold": y = 1 if max(High[t+1..t+H]) >= Close[t] * (1 + threshold)
    threshold: float
    horizon: int


@dataclass(frozen=True)
class BudgetSpec:
    label: str  # e.g. "2M"
    params: int  # e.g. 2_000_000
    tolerance: float  # a trial's real parameter count must lie within params * (1 ± tolerance)


@dataclass(frozen=True)
class ObjectiveSpec:
    metric: str  # "val_auc" | "val_loss", taken at the best epoch
    direction: str  # "maximize" | "minimize"


@dataclass(frozen=True)
class SamplerSpec:
    kind: str  # "tpe"
    seed: int  # each claim derives its own seed from this one (see `claim_seed`)


@dataclass(frozen=True)
class PrunerSpec:
    """How a study stops unpromising trials early. The resource is the epoch: a trial reports its best
    objective so far after every epoch (step = epoch number), and the pruner may stop it there.

    - median: Optuna's MedianPruner (worse than the median of earlier trials at the same epoch).
    - asha: Optuna's SuccessiveHalvingPruner (asynchronous successive halving): at the rungs
      min_resource x reduction_factor^k epochs a trial continues only if it is in the best
      1/reduction_factor of the trials that reached that rung so far, so no worker ever waits for another.
    - hyperband: Optuna's HyperbandPruner: successive-halving brackets with min resources
      min_resource x reduction_factor^k up to max_resource; a trial's bracket is a hash of the study
      name and trial number, so every worker computes the same one.
    - none: every trial runs to its own early stopping.

    Settings that do not apply to a kind are None and left out of the identity, so specs stored
    before asha and hyperband existed keep their hash.
    """

    kind: str
    n_startup_trials: int | None = 5  # median: prune nothing until this many trials finished
    n_warmup_steps: int | None = 2  # median: ... and nothing before this many epochs of the trial
    min_resource: int | None = None  # asha, hyperband: epochs before the first rung
    reduction_factor: int | None = None  # asha, hyperband: keep 1 in this many at each rung
    max_resource: int | None = None  # asha, hyperband: the schedule's max epochs (hyperband's brackets)
    bootstrap_count: int | None = None  # asha, hyperband: trials that must reach a rung before any is promoted

    def settings(self) -> dict[str, Any]:
        """The fields that apply to this kind (None ones are not part of the spec)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def make(self) -> Any:
        """The Optuna pruner; every worker builds the same one from the spec."""
        if self.kind == "none":
            return optuna.pruners.NopPruner()
        if self.kind == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=self.n_startup_trials, n_warmup_steps=self.n_warmup_steps)
        if self.kind == "asha":
            return optuna.pruners.SuccessiveHalvingPruner(
                min_resource=self.min_resource, reduction_factor=self.reduction_factor, bootstrap_count=self.bootstrap_count
            )
        if self.kind == "hyperband":
            return optuna.pruners.HyperbandPruner(
                min_resource=self.min_resource,
                max_resource=self.max_resource,
                reduction_factor=self.reduction_factor,
                bootstrap_count=self.bootstrap_count,
            )
        raise ValueError(f"unknown pruner kind {self.kind!r}")


def pruner_spec(kind: str, max_epochs: int) -> PrunerSpec:
    """The pruner `kind` with the project's settings for a schedule of `max_epochs` epochs."""
    if kind in ("none", "median"):
        return PrunerSpec(kind)
    if kind in ("asha", "hyperband"):
        return PrunerSpec(
            kind,
            n_startup_trials=None,
            n_warmup_steps=None,
            min_resource=min(MIN_RESOURCE, max_epochs),
            reduction_factor=REDUCTION_FACTOR,
            max_resource=max_epochs,
            bootstrap_count=0,
        )
    raise ValueError(f"unknown pruner kind {kind!r}; choose one of {', '.join(PRUNERS)}")


@dataclass(frozen=True)
class LimitsSpec:
    """When a running attempt is failed although its worker is alive (and retried per policy)."""

    stall_timeout_s: int = 1800  # no optimizer step for this long: stalled
    time_limit_s: int = 86_400  # wall clock of one attempt


@dataclass(frozen=True)
class WarmStartSpec:
    """Configurations of earlier studies enqueued as a study's first trials (`--warm-start-from`).

    `source` (the globs) and `top` are part of the identity. `trials` is what they selected when the
    study was created (study, trial number, value, parameters): provenance, like `code_version`, so
    running create-studies again after the earlier studies moved on still finds the same spec.
    """

    source: str
    top: int
    trials: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class StudySpec:
    name: str
    dataset: DatasetRef
    label: LabelSpec
    splits: dict[str, list[str]]  # coordinator.data.splits.Splits.to_dict()
    context: int
    budget: BudgetSpec
    search_space: dict[str, Any]  # coordinator.studies.search_space.SearchSpace.to_dict()
    objective: ObjectiveSpec
    sampler: SamplerSpec
    pruner: PrunerSpec
    target_trials: int
    code_version: str  # provenance: not part of the identity (sha256)
    limits: LimitsSpec = LimitsSpec()  # specs stored before limits existed get the defaults
    warm_start: WarmStartSpec | None = None  # none: the sampler starts from the extremes alone
    # Multi-objective studies: objectives after the first (Optuna optimises them jointly: a Pareto front).
    extra_objectives: list[ObjectiveSpec] = field(default_factory=list)
    keep_checkpoints: bool = False  # every COMPLETE trial's best-epoch weights stored as a checkpoint

    @property
    def horizon(self) -> int:
        return self.label.horizon

    @property
    def objectives(self) -> list[ObjectiveSpec]:
        return [self.objective, *self.extra_objectives]

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    def to_dict(self) -> dict[str, Any]:
        return json.loads(canonical_json(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudySpec:
        return cls(
            name=d["name"],
            dataset=DatasetRef(**d["dataset"]),
            label=LabelSpec(**d["label"]),
            splits={k: list(v) for k, v in d["splits"].items()},
            context=int(d["context"]),
            budget=BudgetSpec(**d["budget"]),
            search_space=dict(d["search_space"]),
            objective=ObjectiveSpec(**d["objective"]),
            sampler=SamplerSpec(**d["sampler"]),
            pruner=PrunerSpec(**d["pruner"]),
            target_trials=int(d["target_trials"]),
            code_version=d["code_version"],
            limits=LimitsSpec(**d.get("limits", {})),
            warm_start=WarmStartSpec(**d["warm_start"]) if d.get("warm_start") else None,
            extra_objectives=[ObjectiveSpec(**o) for o in d.get("extra_objectives", [])],
            keep_checkpoints=bool(d.get("keep_checkpoints", False)),
        )

    def identity(self) -> dict[str, Any]:
        """What makes two studies the same study: everything but provenance."""
        d = self.to_dict()
        del d["code_version"]
        if self.limits == LimitsSpec():  # default limits leave the identity of older specs unchanged
            del d["limits"]
        d["pruner"] = self.pruner.settings()
        if not self.extra_objectives:  # single-objective specs keep the identity they always had
            del d["extra_objectives"]
        del d["warm_start"]  # older specs have none; the chosen trials are provenance
        if self.warm_start is not None:
            d["warm_start"] = {"source": self.warm_start.source, "top": self.warm_start.top}
        if not self.keep_checkpoints:  # likewise the default of keeping no search checkpoints
            del d["keep_checkpoints"]
        return d

    def sha256(self) -> str:
        return hashlib.sha256(canonical_json(self.identity()).encode()).hexdigest()

    def differences(self, other: StudySpec) -> list[str]:
        """Top-level fields whose values differ (for a readable refusal message)."""
        mine, theirs = self.identity(), other.identity()
        return [key for key in mine if mine[key] != theirs.get(key)]

    # Built from the spec by every worker, so every worker samples and prunes the same way.

    def make_sampler(self, seed: int) -> Any:
        if self.sampler.kind != "tpe":
            raise ValueError(f"unknown sampler kind {self.sampler.kind!r}")
        return tpe_sampler(seed)

    def make_pruner(self) -> Any:
        return self.pruner.make()


def tpe_sampler(seed: int) -> Any:
    """The sampler of every study (kind "tpe"); benchmarks build their peers with it too."""
    # constant_liar: running trials count as pessimistic results, so parallel workers spread out.
    # group=True lets multivariate TPE model the conditional architecture choices (d_model, then the
    # ratio and depth lists of that width) jointly instead of falling back to independent sampling.
    # It is the one experimental Optuna argument the project uses, and only here: Optuna warns once
    # per process, and tests/test_lifecycle.py pins that it is still the only one in the tested range.
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def claim_seed(spec_seed: int, study: str, slot: int, attempt: int) -> int:
    """The sampler seed for one claim: deterministic, and different for every claim and study.

    A claim is one attempt at one slot of the study's target, so no two claims (on any worker)
    share a seed and a rerun reproduces them. The study name is mixed in so that studies created
    with the same seed explore independently.
    """
    digest = hashlib.sha256(f"{spec_seed}:{study}:{slot}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def label_tag(threshold: float) -> str:
    """0.01 -> 'thr1pct' (the label part of study names)."""
    return f"thr{threshold * 100:g}pct"


def study_name(dataset_name: str, threshold: float, budget: str, horizon: int) -> str:
    """E.g. spy-a25-thr1pct-2M-h1."""
    return f"{dataset_name}-{label_tag(threshold)}-{budget}-h{horizon}"
