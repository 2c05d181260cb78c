"""create-studies: the matrix and its specs, idempotency, immutable specs, gates before any write."""

from __future__ import annotations

import dataclasses

import optuna
import pytest
import sqlalchemy as sa

from coordinator.errors import UserError
from coordinator.studies.search_space import SearchSpace, ffn_ratio_param, n_heads_param, n_layers_param
from coordinator.studies.spec import StudySpec, claim_seed
from coordinator.version import code_version
from tests.data_helpers import run_cli
from tests.service_helpers import create, make_dataset, rows, scalar


def test_default_matrix_has_12_studies_with_right_specs(engine: sa.Engine, initialised_db: str) -> None:
    dataset = make_dataset(initialised_db)
    plans = create(initialised_db)

    specs = rows(engine, "SELECT * FROM study_specs ORDER BY budget_params, horizon")
    assert len(specs) == 12
    assert [(r["budget"], r["horizon"]) for r in specs] == [(b, h) for b in ("2M", "20M", "200M", "2B") for h in (1, 3, 5)]
    dataset_sha = scalar(engine, "SELECT sha256 FROM datasets WHERE name = 'syn-a25' AND version = 1")
    storage = optuna.storages.RDBStorage(initialised_db)
    for row in specs:
        spec = StudySpec.from_dict(row["spec"])
        assert row["study_name"] == spec.name == f"syn-a25-thr1pct-{row['budget']}-h{row['horizon']}"
        assert f"{spec.dataset.name}:{spec.dataset.version}" == dataset
        assert spec.dataset.sha256 == row["dataset_sha256"] == dataset_sha
        # The horizon reaches the label spec, and the budget the search space.
        assert spec.label.horizon == row["horizon"] and spec.label.threshold == 0.01
        space = SearchSpace.from_dict(spec.search_space)
        assert space.budget_params == spec.budget.params == row["budget_params"]
        assert spec.target_trials == row["target_trials"] == 50
        assert spec.objective.metric == "val_auc" and spec.objective.direction == "maximize"
        assert spec.sampler.kind == "tpe" and spec.pruner.kind == "median"
        assert set(spec.splits) == {"train", "val", "test"} and spec.context == 60
        assert row["spec_sha256"] == spec.sha256() and row["code_version"] == spec.code_version == code_version()
        # The same spec is visible to optuna-dashboard, and the study id links the two.
        study = optuna.load_study(study_name=spec.name, storage=storage)
        assert scalar(engine, "SELECT study_id FROM studies WHERE study_name = :n", n=spec.name) == row["study_id"]
        assert study.user_attrs["spec"] == spec.to_dict()
        assert study.direction == optuna.study.StudyDirection.MAXIMIZE
        # One ledger item per target slot; the extreme architectures first, inside the budget.
        items = rows(engine, "SELECT slot, state, payload FROM work_items WHERE study_name = :n AND kind = 'search' ORDER BY slot", n=spec.name)
        assert [i["slot"] for i in items] == list(range(1, spec.target_trials + 1)) and {i["state"] for i in items} == {"waiting"}
        fixed_items = [i["payload"]["params"] for i in items if "params" in i["payload"]]
        assert 1 <= len(fixed_items) <= spec.target_trials and all("params" in i["payload"] for i in items[: len(fixed_items)])
        assert study.get_trials() == []  # Optuna only samples: trials appear when claimed
        for fixed in fixed_items:
            d = fixed["d_model"]
            ratio = fixed[ffn_ratio_param(d)]
            arch = space.architecture(d, fixed[n_layers_param(d, ratio)], fixed[n_heads_param(d)], ratio)
            assert space.within_budget(arch.n_params)
    assert {p.spec.name for p in plans} == {r["study_name"] for r in specs}


def test_rerun_changes_nothing_and_changed_spec_is_refused(engine: sa.Engine, initialised_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    make_dataset(initialised_db)
    create(initialised_db, preset="smoke", trials=4)
    before = rows(engine, "SELECT study_name, spec_sha256, created_at FROM study_specs ORDER BY 1")
    trials_before = scalar(engine, "SELECT count(*) FROM trials")

    again = create(initialised_db, preset="smoke", trials=4)
    assert [p.status for p in again] == ["unchanged"] * 4
    assert rows(engine, "SELECT study_name, spec_sha256, created_at FROM study_specs ORDER BY 1") == before
    assert scalar(engine, "SELECT count(*) FROM trials") == trials_before

    # A different target for existing studies, together with a new budget: refused as a whole.
    with pytest.raises(UserError, match=r"syn-a25-thr1pct-100K-h1 already exists with a different spec \(differs in: target_trials\)"):
        create(initialised_db, preset="smoke", budgets=("100K", "200K"), trials=5)
    assert rows(engine, "SELECT study_name, spec_sha256, created_at FROM study_specs ORDER BY 1") == before
    assert scalar(engine, "SELECT count(*) FROM studies") == 4

    # Through the CLI: one line, exit 2. A suffix makes a second matrix beside the first.
    code, _, err = run_cli(capsys, "--database-url", initialised_db, "create-studies", "--preset", "smoke", "--seed", "7")
    assert code == 2 and err.count("\n") == 1 and "differs in: sampler, target_trials" in err
    code, out, _ = run_cli(capsys, "--database-url", initialised_db, "create-studies", "--preset", "smoke", "--seed", "7", "--suffix", "s7", "--no-baselines")
    assert code == 0 and "syn-a25-thr1pct-300K-h5-s7" in out
    assert scalar(engine, "SELECT count(*) FROM study_specs") == 8


def test_spec_identity_ignores_code_version_only() -> None:
    spec = StudySpec.from_dict(
        {
            "name": "x-thr1pct-2M-h1",
            "dataset": {"name": "x", "version": 1, "sha256": "ab"},
            "label": {"kind": "threshold", "threshold": 0.01, "horizon": 1},
            "splits": {"train": ["2000-01-01", "2001-01-01"], "val": ["2001-01-02", "2002-01-01"], "test": ["2002-01-02", "2003-01-01"]},
            "context": 60,
            "budget": {"label": "2M", "params": 2_000_000, "tolerance": 0.25},
            "search_space": {"budget_params": 2_000_000, "learning_rate": [1e-5, 3e-3]},
            "objective": {"metric": "val_auc", "direction": "maximize"},
            "sampler": {"kind": "tpe", "seed": 1},
            "pruner": {"kind": "median", "n_startup_trials": 5, "n_warmup_steps": 2},
            "target_trials": 50,
            "code_version": "0.1.0+gabc",
        }
    )
    assert StudySpec.from_dict(spec.to_dict()) == spec
    assert dataclasses.replace(spec, code_version="0.2.0").sha256() == spec.sha256()
    other = dataclasses.replace(spec, label=dataclasses.replace(spec.label, horizon=3))
    assert other.sha256() != spec.sha256() and other.differences(spec) == ["label"]
    # Every claim of a study gets its own reproducible sampler seed.
    seeds = [claim_seed(1, name, slot, attempt) for name in ("a-h1", "a-h5") for slot in range(250) for attempt in (1, 2)]
    assert len(set(seeds)) == 1000
    assert seeds == [claim_seed(1, name, slot, attempt) for name in ("a-h1", "a-h5") for slot in range(250) for attempt in (1, 2)]


def test_gates_fire_before_anything_is_written(engine: sa.Engine, initialised_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UserError, match="no dataset registered yet"):
        create(initialised_db)
    short = make_dataset(initialised_db, days=900, symbol="TINY")  # ~100 validation days: the split gates refuse
    with pytest.raises(UserError, match="val"):
        create(initialised_db, dataset=short)
    make_dataset(initialised_db)
    # Two datasets registered and none named: refused with the list, never "the latest".
    with pytest.raises(UserError, match=r"2 dataset versions are registered \(syn-a25:1, tiny-a25:1\)"):
        create(initialised_db)
    with pytest.raises(UserError, match="no architecture"):
        create(initialised_db, dataset="syn-a25", budgets=("2M", "3K"))  # nothing in the grid is that small
    with pytest.raises(UserError, match="unknown dataset 'nope:1'"):
        create(initialised_db, dataset="nope:1")
    with pytest.raises(UserError, match="unknown dataset 'syn-a25:9'"):
        create(initialised_db, dataset="syn-a25:9")
    base = ["--database-url", initialised_db, "create-studies", "--dataset", "syn-a25"]
    code, _, err = run_cli(capsys, *base, "--horizons", "1,x")
    assert code == 2 and "bad --horizons" in err
    code, _, err = run_cli(capsys, *base, "--objective", "accuracy")
    assert code == 2 and "'accuracy' is not one of 'val_auc', 'val_loss'" in err
    # Ranges are checked before anything is written, including by --dry-run; an empty list is no list.
    for flags, words in [
        (["--trials", "3000000000"], "--trials must be between 1 and 1,000,000, got 3,000,000,000"),
        (["--trials", "3000000000", "--dry-run"], "--trials must be between 1 and 1,000,000"),
        (["--budgets", ","], "bad --budgets ','"),
        (["--horizons", ","], "bad --horizons ','"),
        (["--horizons", "0"], "horizons must be between 1 and 250"),
        (["--seed", "-1"], "--seed must be between 0 and"),
    ]:
        code, out, err = run_cli(capsys, *base, *flags)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, (flags, err)
        assert "Traceback" not in err and out == ""
    assert scalar(engine, "SELECT count(*) FROM studies") == 0
    assert scalar(engine, "SELECT count(*) FROM study_specs") == 0


def test_dry_run_prints_the_plan_and_writes_nothing(engine: sa.Engine, initialised_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    make_dataset(initialised_db)
    code, out, _ = run_cli(
        capsys, "--database-url", initialised_db, "create-studies", "--budgets", "2M,20M", "--horizons", "1,5", "--trials", "7", "--dry-run"
    )
    assert code == 0 and "dry run: nothing written" in out
    for name in ("syn-a25-thr1pct-2M-h1", "syn-a25-thr1pct-2M-h5", "syn-a25-thr1pct-20M-h1", "syn-a25-thr1pct-20M-h5"):
        assert name in out
    assert scalar(engine, "SELECT count(*) FROM studies") == 0
    assert scalar(engine, "SELECT count(*) FROM trials") == 0
