"""A study's samples: the rows it trains, validates and is tested on, built one way everywhere.

The worker's trials, the evaluation runs, the evaluation summary and the baselines all call
`study_samples`, so they all see the same windows: the study's dataset version (its sha256 checked
against the spec), label threshold, context and splits. `SamplesCache` builds them once per process.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import sqlalchemy as sa

from coordinator.data.registry import Dataset, load_dataset
from coordinator.data.samples import Samples, make_samples
from coordinator.data.splits import Splits
from coordinator.errors import UserError
from coordinator.studies.spec import StudySpec


class DatasetChanged(UserError):
    """The dataset version's content is not the one the study was created on."""


def study_samples(spec: StudySpec, dataset: Dataset) -> Samples:
    """The study's samples from `dataset`, which must be the very version its spec names."""
    ref = spec.dataset
    if (dataset.name, dataset.version) != (ref.name, ref.version) or dataset.sha256 != ref.sha256:
        raise DatasetChanged(
            f"dataset {ref} has sha256 {dataset.sha256[:12]}… but the study was created on {ref.sha256[:12]}…"
        )
    samples = make_samples(dataset, spec.horizon, Splits.from_dict(spec.splits), context=spec.context, threshold=spec.label.threshold)
    if samples.horizon != spec.horizon:  # the horizon must reach the labels
        raise UserError(f"samples were built for horizon {samples.horizon}, the study is h{spec.horizon}")
    return samples


def load_study_samples(engine: sa.Engine, spec: StudySpec) -> Samples:
    """The study's samples, its dataset version read from the database."""
    return study_samples(spec, load_dataset(engine, spec.dataset.name, spec.dataset.version))


def samples_key(spec: StudySpec) -> tuple:
    """What a study's samples are built from: studies that share it share their samples."""
    ref = spec.dataset
    return (ref.name, ref.version, ref.sha256, spec.horizon, spec.label.threshold, spec.context, json.dumps(spec.splits, sort_keys=True))


class SamplesCache:
    """Samples built once per process; `load(name, version)` gives a dataset version."""

    def __init__(self, load: Callable[[str, int], Dataset]) -> None:
        self.load = load
        self.built: dict[tuple, Samples] = {}

    def __call__(self, spec: StudySpec) -> Samples:
        key = samples_key(spec)
        if key not in self.built:
            self.built[key] = study_samples(spec, self.load(spec.dataset.name, spec.dataset.version))
        return self.built[key]
