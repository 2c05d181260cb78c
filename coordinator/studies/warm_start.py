"""Warm start: the best configurations of earlier studies as the first trials of new ones.

`create-studies --warm-start-from GLOB [--top N]` looks up the COMPLETE trials of the studies whose
names match GLOB (comma-separated globs allowed; typically the same matrix on another dataset version
or suffix), keeps those whose parameters are a valid sample of the new study's search space (the
architecture within the new budget, every value inside its ranges and choice lists), and gives each
new study the best N as its first slots. They run as ordinary enqueued trials (`enqueue_trial`
with their parameters), so they count towards the target and the sampler learns from their results
like from any other trial. Trials of studies with the new study's horizon come first, then by their
objective; only studies with the same objective metric are used, and synthetic results never.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from coordinator.errors import UserError
from coordinator.store.tables import attempts, study_specs, work_items
from coordinator.studies.search_space import (
    SearchSpace,
    feasible_architectures,
    ffn_ratio_param,
    n_heads_param,
    n_layers_param,
)
from coordinator.studies.spec import StudySpec, WarmStartSpec

MAX_TOP = 1000
TRAINING_RANGES = ("learning_rate", "weight_decay", "dropout", "warmup_frac")


@dataclass(frozen=True)
class Candidate:
    """One COMPLETE trial of an earlier study."""

    study: str
    trial_number: int
    value: float
    params: dict[str, Any]
    horizon: int
    metric: str
    direction: str

    def record(self) -> dict[str, Any]:
        """As written into the new study's spec."""
        return {"study": self.study, "trial_number": self.trial_number, "value": self.value, "params": self.params}


def load_candidates(engine: sa.Engine, source: str) -> list[Candidate]:
    """Every COMPLETE, non-synthetic trial of the studies matching `source`; UserError when none match."""
    globs = [g.strip() for g in source.split(",") if g.strip()]
    if not globs:
        raise UserError(f"bad --warm-start-from '{source}': expected study-name globs such as 'spy-a25-*'")
    with engine.connect() as conn:
        specs = {r.study_name: StudySpec.from_dict(r.spec) for r in conn.execute(sa.select(study_specs.c.study_name, study_specs.c.spec))}
        matched = sorted(name for name in specs if any(fnmatch.fnmatchcase(name, g) for g in globs))
        if not matched:
            raise UserError(f"--warm-start-from '{source}' matches no study")
        found = conn.execute(
            sa.select(work_items.c.study_name, attempts.c.trial_number, attempts.c.value, attempts.c.params)
            .join(work_items, work_items.c.item_id == attempts.c.item_id)
            .where(
                work_items.c.study_name.in_(matched),
                attempts.c.state == "COMPLETE",
                attempts.c.synthetic.is_(False),
                attempts.c.value.is_not(None),
                attempts.c.params.is_not(None),
            )
        ).all()
    if not found:
        raise UserError(f"--warm-start-from '{source}' matches {len(matched)} studies, none with a COMPLETE trial")
    return [
        Candidate(r.study_name, r.trial_number, r.value, dict(r.params), specs[r.study_name].horizon,
                  specs[r.study_name].objective.metric, specs[r.study_name].objective.direction)
        for r in found
    ]


def choose(candidates: list[Candidate], spec: StudySpec, source: str, top: int) -> WarmStartSpec:
    """The best `top` candidates that are valid samples of `spec`'s search space; UserError when none is."""
    if not 1 <= top <= MAX_TOP:
        raise UserError(f"--top must be between 1 and {MAX_TOP}, got {top}")
    space = SearchSpace.from_dict(spec.search_space)
    feasible = set(feasible_architectures(space))
    usable = [c for c in candidates if c.metric == spec.objective.metric and c.study != spec.name and fits(space, feasible, c.params)]
    if not usable:
        raise UserError(
            f"--warm-start-from '{source}': none of its {len(candidates)} COMPLETE trials fits study {spec.name} "
            f"({spec.objective.metric}, {spec.budget.label} ±{space.tolerance:.0%}, its search space)"
        )
    sign = {"maximize": -1.0, "minimize": 1.0}
    usable.sort(key=lambda c: (c.horizon != spec.horizon, sign[c.direction] * c.value, c.study, c.trial_number))
    chosen: list[Candidate] = []
    for candidate in usable:
        params = sample_params(candidate.params)
        if all(sample_params(c.params) != params for c in chosen):  # the same configuration once
            chosen.append(candidate)
        if len(chosen) == top:
            break
    return WarmStartSpec(source=source, top=top, trials=[dict(c.record(), params=sample_params(c.params)) for c in chosen])


def sample_params(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters `suggest` draws for this architecture (others, e.g. of other widths, dropped)."""
    d = params["d_model"]
    ratio = params[ffn_ratio_param(d)]
    names = ["d_model", ffn_ratio_param(d), n_layers_param(d, ratio), n_heads_param(d), "revin", *TRAINING_RANGES, "batch_size"]
    return {name: params[name] for name in names if name in params}


def fits(space: SearchSpace, feasible: set[Any], params: dict[str, Any]) -> bool:
    """True when `params` is a sample `suggest` could draw in `space` (missing training values are sampled)."""
    try:
        d = params["d_model"]
        ratio = params[ffn_ratio_param(d)]
        architecture = space.architecture(d, params[n_layers_param(d, ratio)], params[n_heads_param(d)], ratio, params.get("revin", True))
    except (KeyError, TypeError):
        return False
    if params.get("revin", True) not in space.revin_choices or architecture not in feasible:
        return False
    for name in TRAINING_RANGES:
        low, high = getattr(space, name)
        if name in params and not low <= params[name] <= high:
            return False
    return "batch_size" not in params or params["batch_size"] in space.batch_sizes
