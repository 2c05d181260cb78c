"""The only module of the trial lifecycle that talks to Optuna, through its public API only.

Optuna samples and prunes; the ledger (coordinator.lifecycle.ledger) owns who runs what, liveness
and counts. Used here: `create_study`/`load_study`, `Study.ask`, `Trial(study, trial_id)` (a resumed claim), `Study.enqueue_trial` (a retry or a
fixed first trial runs the same parameters), `Study.tell(number, values, state=...)` (also FAIL for a
lost attempt), `Trial.report`/`Trial.should_prune`, and `optuna.exceptions.UpdateFinishedTrialError`.
`Study.set_user_attr`/`Trial.set_user_attr` give plain Optuna clients (optuna-dashboard) a short
reference to the spec and each trial's parameter count, architecture and metrics.
No heartbeat or retry API, no writes into Optuna's tables, no private attributes, no silenced warnings.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
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
    """The Optuna study of a spec (left behind by a run that died before storing the spec: reused).

    The spec itself lives in the project's `study_specs` table; Optuna gets a short reference that
    plain Optuna clients and optuna-dashboard can show on one line. (Studies made before this kept a
    `spec` attribute with the whole spec; nothing reads it.)
    """
    study = optuna.create_study(study_name=spec.name, storage=storage, directions=spec.directions, load_if_exists=True)
    for key, value in spec_reference(spec).items():
        study.set_user_attr(key, value)
    return study


def spec_reference(spec: StudySpec) -> dict[str, Any]:
    """What a plain Optuna client sees of a study's spec (the whole spec: table study_specs)."""
    return {
        "spec_sha256": spec.sha256(),
        "spec_table": f"study_specs/{spec.name}",
        "budget": spec.budget.label,
        "horizon": spec.horizon,
        "dataset": str(spec.dataset),
    }


# What a finished search trial tells plain Optuna clients: three attributes, three small writes.
ARCHITECTURE_KEYS = ("d_model", "n_layers", "n_heads", "d_ff", "n_features", "context", "patch_len", "stride", "revin")
METRIC_KEYS = ("val_auc", "val_loss", "val_pr_auc", "best_epoch", "epochs_run", "duration_s", "samples_per_s", "device")


def describe_trial(trial: optuna.Trial, details: Mapping[str, Any]) -> bool:
    """The trial's real parameter count, architecture and key metrics as Optuna user attributes
    (before it is told: a finished trial takes none). False when it was finished already (reaped)."""
    attrs: dict[str, Any] = {}
    if details.get("n_params") is not None:
        attrs["n_params"] = int(details["n_params"])
    architecture = {k: details[k] for k in ARCHITECTURE_KEYS if k in details}
    if architecture:
        attrs["architecture"] = architecture
    metrics = {k: details[k] for k in METRIC_KEYS if isinstance(details.get(k), (int, float, str)) and finite_or_text(details[k])}
    if metrics:
        attrs["metrics"] = metrics
    try:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    return True


def finite_or_text(value: Any) -> bool:
    """JSON has no NaN or infinity: such metrics are left out rather than stored as invalid JSON."""
    return isinstance(value, str) or value == value and value not in (float("inf"), float("-inf"))


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


def running_trial(study: optuna.Study, trial_id: int) -> optuna.Trial:
    """The RUNNING trial `trial_id` of the study, to go on with (a claim resumed after a lost connection).
    `optuna.Trial(study, trial_id)` is the public constructor Study.ask itself returns."""
    return optuna.Trial(study, trial_id)


def tell(study: optuna.Study, number: int | optuna.Trial, state: str, value: float | Sequence[float] | None) -> bool:
    """Finish a trial (object or number) in Optuna; False when it was finished already (e.g. by a reaper).

    `value`: the objective, or one value per objective for a multi-objective study."""
    wanted = FINISHED_STATES[state]
    try:
        told = study.tell(number, value if state == "COMPLETE" else None, state=wanted, skip_if_finished=True)
    except optuna.exceptions.UpdateFinishedTrialError:  # finished by someone else between check and write
        return False
    values = list(value) if isinstance(value, Sequence) else [value]
    return told.state == wanted and (state != "COMPLETE" or told.values == values)


def tell_by_name(storage: Storage, study_name: str, number: int, state: str, value: float | Sequence[float] | None) -> bool:
    return tell(optuna.load_study(study_name=study_name, storage=storage), number, state, value)


def discard_waiting(storage: Storage, study_name: str) -> bool:
    """Take the study's oldest WAITING trial (left by a claim that died after enqueue_trial) and fail it.

    Callers hold the study's claim lock, so it is nobody's. Public API only: ask pops it, tell fails it.
    """
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=optuna.samplers.RandomSampler())
    trial = study.ask()
    return tell(study, trial.number, "FAIL", None)


def report(trial: optuna.Trial, value: float, step: int, ask: bool = True) -> bool:
    """Report an intermediate value; True when the pruner says stop (never asked when `ask` is False)."""
    trial.report(value, step)
    return ask and trial.should_prune()


class EpochReports:
    """A trial's epochs as its pruner sees them: step = epoch, value = the best objective so far.

    The objective of a trial is its best epoch's, so the best so far is what stopping now would
    leave; a noisy epoch after a good one does not count against the trial. The pruner is not asked
    after the schedule's last epoch: nothing is left to save, and a finished trial stays COMPLETE.
    """

    def __init__(self, trial: optuna.Trial, direction: str, last_epoch: int) -> None:
        self.trial = trial
        self.better = max if direction == "maximize" else min
        self.last_epoch = last_epoch
        self.best: float | None = None

    def epoch(self, value: float, epoch: int) -> bool:
        """Report one epoch's objective; True when the pruner stops the trial here."""
        self.best = value if self.best is None else self.better(self.best, value)
        return report(self.trial, self.best, epoch, ask=epoch < self.last_epoch)
