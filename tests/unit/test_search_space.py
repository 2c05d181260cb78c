"""Budget-feasible architectures, conditional sampling without ordinal indices, exact round trips."""

from __future__ import annotations

import json

import optuna
import pytest
from typer.testing import CliRunner

from coordinator.cli import app
from coordinator.errors import UserError
from coordinator.studies.architecture import count_params
from coordinator.studies.search_space import (
    CPU_BUDGETS,
    DEFAULT_BUDGETS,
    REFERENCE_D_MODELS,
    SMALL_D_MODELS,
    Architecture,
    SearchSpace,
    TrialConfig,
    arch_params,
    budget_label,
    default_search_space,
    extreme_params,
    feasible_architectures,
    parse_budget,
    suggest,
)

ARCH_PARAM_PREFIXES = ("d_model", "ffn_ratio_", "n_layers_", "n_heads_", "revin")
TRAINING_PARAMS = ("learning_rate", "weight_decay", "dropout", "warmup_frac", "batch_size")

optuna.logging.set_verbosity(optuna.logging.WARNING)


def within(space: SearchSpace, arch: Architecture) -> bool:
    n = count_params(arch)
    return space.budget_params * 0.75 <= n <= space.budget_params * 1.25


@pytest.mark.parametrize("n_features", [25, 33])
@pytest.mark.parametrize("label", CPU_BUDGETS + DEFAULT_BUDGETS)
def test_every_feasible_architecture_is_within_budget(label: str, n_features: int) -> None:
    space = default_search_space(parse_budget(label), n_features)
    archs = feasible_architectures(space)
    assert len(archs) >= 10, "too few architectures to search over"
    for arch in archs:
        assert within(space, arch), (label, arch)
        assert arch.d_model % arch.n_heads == 0 and space.min_head_dim <= arch.d_model // arch.n_heads <= 256
        assert arch.d_ff // arch.d_model in space.ffn_ratios and arch.n_layers in space.n_layers
    # Nothing feasible was left out: every grid point within budget is listed.
    listed = {(a.d_model, a.d_ff, a.n_layers) for a in archs}
    for d in space.d_models:
        for ratio in space.ffn_ratios:
            for n in space.n_layers:
                if within(space, space.architecture(d, n, 2, ratio)):
                    assert (d, ratio * d, n) in listed


def test_small_widths_only_for_sub_million_budgets() -> None:
    small = default_search_space(parse_budget("100K"), 25, preset="cpu-small")
    assert set(SMALL_D_MODELS) <= set(small.d_models)
    assert small.max_epochs < default_search_space(parse_budget("100K"), 25).max_epochs
    assert default_search_space(parse_budget("2M"), 25).d_models == REFERENCE_D_MODELS


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize("label", ["300K", "2M", "2B"])
def test_sampled_trials_are_feasible_and_every_value_is_consumed(label: str) -> None:
    space = default_search_space(parse_budget(label), 25)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=10, multivariate=True, group=True)
    )
    seen = set()
    for _ in range(60):
        trial = study.ask()
        config = suggest(trial, space)
        arch = config.architecture
        assert within(space, arch), arch
        seen.add((arch.d_model, arch.n_layers))
        # The trial's params are exactly the architecture's and the training values' (all consumed).
        expected = {**arch_params(arch), **{k: getattr(config, k) for k in TRAINING_PARAMS}}
        assert trial.params == expected
        assert (config.max_epochs, config.patience) == (space.max_epochs, space.patience)
        # A learnable objective: prefer wide models, so TPE has structure to find.
        study.tell(trial, arch.d_model / 2048 - abs(config.learning_rate - 1e-3))
    assert len(seen) >= 5, "sampling explores the space"


def test_no_ordinal_architecture_parameter() -> None:
    """Architecture choices are categorical over real values (never an index into a sorted list)."""
    space = default_search_space(parse_budget("20M"), 25)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    configs = []
    for _ in range(40):
        trial = study.ask()
        configs.append(suggest(trial, space))
        study.tell(trial, 0.0)
    for frozen, config in zip(study.trials, configs, strict=True):
        for name, dist in frozen.distributions.items():
            if name.startswith(ARCH_PARAM_PREFIXES):
                assert isinstance(dist, optuna.distributions.CategoricalDistribution), name
        d = frozen.params["d_model"]
        ratio = frozen.params[f"ffn_ratio_d{d}"]
        assert d in space.d_models and ratio in space.ffn_ratios
        assert frozen.params[f"n_layers_d{d}_r{ratio}"] in space.n_layers
        assert frozen.params[f"n_heads_d{d}"] in space.n_heads
        assert arch_params(config.architecture) == {k: v for k, v in frozen.params.items() if k.startswith(ARCH_PARAM_PREFIXES)}
    # Each conditional choice list holds only feasible values, so one distribution is never wasted.
    for frozen in study.trials:
        for name, dist in frozen.distributions.items():
            if name.startswith("n_layers_d"):
                d, ratio = (int(part[1:]) for part in name.removeprefix("n_layers_").split("_"))
                for n in dist.choices:
                    assert within(space, space.architecture(d, n, 2, ratio))


@pytest.mark.parametrize("label", CPU_BUDGETS + DEFAULT_BUDGETS)
def test_extremes_are_enqueued_and_sampled_first(label: str) -> None:
    space = default_search_space(parse_budget(label), 25)
    archs = feasible_architectures(space)
    extremes = extreme_params(space)
    assert 2 <= len(extremes) <= 4 and len({json.dumps(e, sort_keys=True) for e in extremes}) == len(extremes)
    study = optuna.create_study()
    for params in extremes:
        study.enqueue_trial(params)
    got = []
    for _ in extremes:
        trial = study.ask()
        got.append(suggest(trial, space).architecture)
        study.tell(trial, 0.0)
    assert [arch_params(a) for a in got] == extremes
    assert got[0].d_model == max(a.d_model for a in archs)  # widest
    assert got[1].n_layers == max(a.n_layers for a in archs)  # deepest
    heads = [a.n_heads for a in got]
    assert min(heads) == min(a.n_heads for a in archs) and max(heads) == max(a.n_heads for a in archs)


def test_search_space_round_trip_is_exact() -> None:
    for preset in ("reference", "cpu-small"):
        space = default_search_space(parse_budget("300K"), 33, preset=preset)
        data = json.loads(json.dumps(space.to_dict()))
        assert data == space.to_dict()
        assert SearchSpace.from_dict(data) == space
        assert feasible_architectures(SearchSpace.from_dict(data)) == feasible_architectures(space)
    with pytest.raises(UserError, match="unknown search space keys"):
        SearchSpace.from_dict({**space.to_dict(), "surprise": 1})


def test_trial_config_round_trip_is_exact() -> None:
    arch = Architecture(d_model=64, n_layers=2, n_heads=4, d_ff=128, n_features=25)
    config = TrialConfig(arch, 3e-4, 0.01, 0.1, 0.05, max_epochs=3, patience=2, batch_size=64, seed=7)
    assert TrialConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_bad_spaces_are_user_errors() -> None:
    with pytest.raises(UserError, match="no architecture"):
        default_search_space(1000, 25)
    with pytest.raises(UserError, match="preset"):
        default_search_space(2_000_000, 25, preset="huge")
    with pytest.raises(UserError, match="low <= high"):
        SearchSpace(budget_params=2_000_000, n_features=25, learning_rate=(1e-2, 1e-4))


def test_budget_labels() -> None:
    assert [parse_budget(x) for x in ("100K", "2M", "20m", "2B", "1.5M", "12345")] == [
        100_000, 2_000_000, 20_000_000, 2_000_000_000, 1_500_000, 12345
    ]
    assert [budget_label(parse_budget(x)) for x in ("100K", "300K", "2M", "200M", "2B", "1.5M")] == [
        "100K", "300K", "2M", "200M", "2B", "1.5M"
    ]
    with pytest.raises(UserError, match="bad budget"):
        parse_budget("2 gigs")


def test_search_space_command_prints_feasible_counts() -> None:
    result = CliRunner().invoke(app, ["search-space", "--budgets", "100K,2M"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines()[1:3]}
    for label in ("100K", "2M"):
        archs = feasible_architectures(default_search_space(parse_budget(label), 25))
        assert int(rows[label][1]) == len(archs)
        assert int(rows[label][3].replace(",", "")) == min(a.n_params for a in archs)
        assert int(rows[label][4].replace(",", "")) == max(a.n_params for a in archs)


def test_revin_is_searched_and_old_specs_keep_their_space() -> None:
    space = default_search_space(parse_budget("2M"), 25)
    assert space.revin_choices == (True, False) and space.to_dict()["revin_choices"] == [True, False]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    drawn = set()
    for _ in range(20):
        trial = study.ask()
        config = suggest(trial, space)
        assert trial.params["revin"] == config.architecture.revin
        assert within(space, config.architecture)
        drawn.add(config.architecture.revin)
        study.tell(trial, 0.0)
    assert drawn == {True, False}
    # A spec written before RevIN was searched and before the head-dimension cap: one study-wide
    # flag (absent means on), no cap. It rebuilds the space it was created with.
    old = {k: v for k, v in space.to_dict().items() if k not in ("revin_choices", "max_head_dim")}
    for stored, expected in (({}, (True,)), ({"revin": False}, (False,)), ({"revin": True}, (True,))):
        loaded = SearchSpace.from_dict({**old, **stored})
        assert loaded.revin_choices == expected and loaded.max_head_dim is None
        assert {a.revin for a in feasible_architectures(loaded)} == set(expected)
    old_2b = {k: v for k, v in default_search_space(parse_budget("2B"), 25).to_dict().items() if k != "max_head_dim"}
    assert 1024 in {a.d_model // a.n_heads for a in feasible_architectures(SearchSpace.from_dict(old_2b))}
    with pytest.raises(UserError, match="revin_choices"):
        SearchSpace(budget_params=2_000_000, n_features=25, revin_choices=())


def test_head_dimension_is_capped_for_fused_attention() -> None:
    for label in DEFAULT_BUDGETS:
        archs = feasible_architectures(default_search_space(parse_budget(label), 25))
        assert max(a.d_model // a.n_heads for a in archs) <= 256, label
    widths = {a.d_model: a for a in feasible_architectures(default_search_space(parse_budget("2B"), 25))}
    assert 2048 in widths  # the widest shapes stay, with 8 or more heads
