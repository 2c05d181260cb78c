"""The only module of the trial lifecycle that talks to Optuna, through its public API only.

Optuna samples and prunes; the ledger (coordinator.lifecycle.ledger) owns who runs what, liveness
and counts. Used here: `create_study`/`load_study`, `Study.ask`, `Study.enqueue_trial` (a retry or a
fixed first trial runs the same parameters), `Study.tell(number, values, state=...)` (also FAIL for a
lost attempt), `Trial.report`/`Trial.should_prune`, and `optuna.exceptions.UpdateFinishedTrialError`.
No heartbeat or retry API, no writes into Optuna's tables, no private attributes, no silenced warnings.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import optuna

from coordinator.store import engines
from coordinator.studies.spec import StudySpec

log = logging.getLogger("scalesweep")

OPTUNA_FLOOR = "5.0"  # the oldest release tested (pyproject pins the same floor)
FINISHED_STATES = {"COMPLETE": optuna.trial.TrialState.COMPLETE, "PRUNED": optuna.trial.TrialState.PRUNED, "FAIL": optuna.trial.TrialState.FAIL}

optuna.logging.set_verbosity(optuna.logging.WARNING)

Storage = optuna.storages.RDBStorage
Trial = optuna.Trial
TrialPruned = optuna.TrialPruned


def open_storage(url: str) -> Storage:
    """Optuna's storage on the project database (no heartbeats: liveness is the ledger's)."""
    return engines.optuna_storage(url)


def create_study(storage: Storage, spec: StudySpec) -> optuna.Study:
    """The Optuna study of a spec (left behind by a run that died before storing the spec: reused)."""
    study = optuna.create_study(study_name=spec.name, storage=storage, direction=spec.objective.direction, load_if_exists=True)
    study.set_user_attr("spec", spec.to_dict())  # for optuna-dashboard
    study.set_user_attr("spec_sha256", spec.sha256())
    return study


def started_trials(study: optuna.Study) -> int:
    """Trials that left WAITING (a study made elsewhere has some; ours start with none)."""
    return sum(t.state != optuna.trial.TrialState.WAITING for t in study.get_trials(deepcopy=False))


# One Study object per (storage, study) in a process: Optuna keeps a cache of finished trials per
# Study object, so re-loading the study for every claim would re-read its whole history each time.
_studies: dict[tuple[int, str], optuna.Study] = {}


def load_study(storage: Storage, spec: StudySpec, seed: int) -> optuna.Study:
    """The study with this claim's sampler (a fresh TPE sampler seeded for the claim)."""
    key = (id(storage), spec.name)
    study = _studies.get(key)
    if study is None:
        study = optuna.load_study(study_name=spec.name, storage=storage, sampler=spec.make_sampler(seed), pruner=spec.make_pruner())
        _studies[key] = study
    else:
        study.sampler = spec.make_sampler(seed)  # Study.sampler is a public attribute
    return study


def ask(study: optuna.Study, fixed_params: Mapping[str, Any] | None) -> optuna.Trial:
    """A new RUNNING trial; with `fixed_params` (a retry or an enqueued extreme) it gets exactly those.

    Callers hold the study's claim lock, so no other claim can take the trial enqueued here.
    """
    if fixed_params:
        study.enqueue_trial(dict(fixed_params))
    return study.ask()


def tell(study: optuna.Study, number: int | optuna.Trial, state: str, value: float | None) -> bool:
    """Finish a trial (object or number) in Optuna; False when it was finished already (e.g. by a reaper)."""
    wanted = FINISHED_STATES[state]
    try:
        told = study.tell(number, value if state == "COMPLETE" else None, state=wanted, skip_if_finished=True)
    except optuna.exceptions.UpdateFinishedTrialError:  # finished by someone else between check and write
        return False
    return told.state == wanted and (state != "COMPLETE" or told.value == value)


def tell_by_name(storage: Storage, study_name: str, number: int, state: str, value: float | None) -> bool:
    return tell(optuna.load_study(study_name=study_name, storage=storage), number, state, value)


def discard_waiting(storage: Storage, study_name: str) -> bool:
    """Take the study's oldest WAITING trial (left by a claim that died after enqueue_trial) and fail it.

    Callers hold the study's claim lock, so it is nobody's. Public API only: ask pops it, tell fails it.
    """
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=optuna.samplers.RandomSampler())
    trial = study.ask()
    return tell(study, trial.number, "FAIL", None)


def report(trial: optuna.Trial, value: float, step: int) -> bool:
    """Report an intermediate value; True when the pruner says stop."""
    trial.report(value, step)
    return trial.should_prune()
