"""The evaluation protocol gains walk-forward folds and an automatic block length; a protocol stored
by an earlier release (single test period) reads back with its own identity."""

from __future__ import annotations

import pytest

from coordinator.errors import UserError
from coordinator.evaluation.protocol import EvaluationProtocol, make_protocol

# What the release before walk-forward stored in evaluation_protocols for `--preset smoke`, and its sha256.
SINGLE_PERIOD_SMOKE = {"bootstrap": {"block_length": 20, "level": 0.95, "method": "moving-block", "replicates": 1000, "seed": 0},
                       "k": 1, "seeds": [1000000, 1000001, 1000002], "selection": "validation"}
SINGLE_PERIOD_SMOKE_SHA = "068fb0309ae3c06c1ab116e0fc88821c24cba55e9380b1f05fc729549d502447"


def test_a_stored_single_period_protocol_keeps_its_identity() -> None:
    old = EvaluationProtocol.from_dict(SINGLE_PERIOD_SMOKE)
    assert not old.walk_forward and old.n_folds == 1 and old.bootstrap.block_rule == "fixed"
    assert old.to_dict() == SINGLE_PERIOD_SMOKE and old.sha256() == SINGLE_PERIOD_SMOKE_SHA
    assert "single-period protocol" in old.describe()
    assert make_protocol("smoke").sha256() != SINGLE_PERIOD_SMOKE_SHA  # today's smoke protocol is another one


def test_presets_are_walk_forward_with_an_automatic_block_length() -> None:
    smoke, default = make_protocol("smoke"), make_protocol("default")
    assert (smoke.k, smoke.n_seeds, smoke.folds) == (1, 2, 3) and (default.k, default.n_seeds, default.folds) == (3, 5, 5)
    for p in (smoke, default):
        assert p.bootstrap.block_rule == "politis-white"
        assert EvaluationProtocol.from_dict(p.to_dict()) == p and p.to_dict()["folds"] == p.folds
    assert make_protocol("smoke", folds=4).sha256() != smoke.sha256()
    assert "3 walk-forward test fold(s)" in smoke.describe() and "Politis-White" in smoke.describe()


def test_bad_fold_counts_are_refused() -> None:
    with pytest.raises(UserError, match="--folds must be between 1"):
        make_protocol("smoke", folds=0)
