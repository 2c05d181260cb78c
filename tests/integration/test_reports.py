"""`coordinator status`, `leaderboard` and `report` on a real, populated database."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from coordinator import cli
from tests.integration.test_views import populate

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def run(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, str, str]:
    """The CLI in-process (as `coordinator --database-url URL ARGS`): exit code, stdout, stderr."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--database-url", url, *args])
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


@pytest.fixture
def populated(engine: sa.Engine, initialised_db: str) -> tuple[str, dict]:
    p = populate(engine, initialised_db)
    return initialised_db, {"best": p.best, "lowest": p.lowest, "empty": p.empty}


def test_status_shows_every_study(capsys: pytest.CaptureFixture[str], populated: tuple[str, dict]) -> None:
    url, studies = populated
    capsys.readouterr()  # create-studies' plan tables
    code, out, err = run(capsys, url, "status")
    assert code == 0, err
    for study in studies.values():
        assert study.study_name in out
    total_target = 10 + 4 + 1  # the third study's 3 waiting slots were cancelled
    assert "3 studies: " in out and f"of {total_target} trials finished" in out
    line = next(l for l in out.splitlines() if studies["lowest"].study_name in l)
    assert "done" in line  # 4 finished trials for a target of 4

    code, out, _ = run(capsys, url, "status", "--studies", "*-100K-h1")
    assert code == 0 and studies["best"].study_name in out and studies["lowest"].study_name not in out


def test_leaderboard_formats_agree(capsys: pytest.CaptureFixture[str], populated: tuple[str, dict]) -> None:
    url, studies = populated
    capsys.readouterr()  # create-studies' plan tables
    code, out, err = run(capsys, url, "leaderboard", "--format", "csv")
    assert code == 0, err
    from_csv = {r["study_name"]: r for r in csv.DictReader(io.StringIO(out))}
    code, out, _ = run(capsys, url, "leaderboard", "--format", "json")
    from_json = {r["study_name"]: r for r in json.loads(out)}
    expected = {s.study_name: s.best_trial for key, s in studies.items() if key != "empty"}
    assert from_csv.keys() == from_json.keys() == expected.keys()
    for name, trial in expected.items():
        assert int(from_csv[name]["trial_number"]) == from_json[name]["trial_number"] == trial.number
        assert float(from_csv[name]["objective"]) == from_json[name]["objective"] == trial.value
    assert from_json[studies["best"].study_name]["n_params"] > 0

    code, out, _ = run(capsys, url, "leaderboard")
    assert code == 0 and all(name in out for name in expected)


def test_leaderboard_csv_has_a_header_when_empty(capsys: pytest.CaptureFixture[str], initialised_db: str) -> None:
    code, out, _ = run(capsys, initialised_db, "leaderboard", "--format", "csv")
    assert code == 0 and out.startswith("study_name,") and len(out.splitlines()) == 1
    code, out, _ = run(capsys, initialised_db, "leaderboard", "--format", "json")
    assert code == 0 and json.loads(out) == []


@pytest.mark.parametrize(
    "args, words",
    [
        (["status", "--studies", "nope-*"], "no study matching 'nope-*'"),
        (["leaderboard", "--studies", "nope"], "no study matching 'nope'"),
        (["leaderboard", "--format", "xml"], "'xml' is not one of 'table', 'csv', 'json'"),
    ],
)
def test_user_errors_are_one_line(capsys: pytest.CaptureFixture[str], initialised_db: str, args: list[str], words: str) -> None:
    code, out, err = run(capsys, initialised_db, *args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and words in err


def test_database_without_read_model_says_db_init(capsys: pytest.CaptureFixture[str], db_url: str) -> None:
    code, _, err = run(capsys, db_url, "status")
    assert code == 2 and "coordinator db init" in err and len(err.strip().splitlines()) == 1


def test_report_writes_html_and_png(capsys: pytest.CaptureFixture[str], populated: tuple[str, dict], tmp_path: Path, engine: sa.Engine) -> None:
    url, studies = populated
    with engine.begin() as conn:  # a baseline on the studies' dataset version and horizon is drawn and listed
        conn.execute(sa.text(
            "INSERT INTO baselines (dataset_name, dataset_version, horizon, model, dataset_sha256, n_train, n_val, n_test,"
            " val_auc, val_pr_auc, val_loss, val_brier, val_accuracy, val_precision, val_recall, val_positive_rate,"
            " pred_mean, pred_std, pred_min, pred_max, test_auc, test_loss, metrics)"
            " VALUES ('syn-a25', 1, 1, 'logistic_regression', 'x', 1, 1, 1, 0.5812, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, '{}')"
        ))
    out_dir = tmp_path / "report"
    capsys.readouterr()  # create-studies' plan tables
    code, out, err = run(capsys, url, "report", "--out", str(out_dir))
    assert code == 0, err
    assert out.strip() == f"report: {out_dir / 'index.html'}"
    page = (out_dir / "index.html").read_text()
    png = (out_dir / "auc_vs_params.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert "auc_vs_params.png" in page and "Partial results" in page
    assert studies["best"].study_name in page and "logistic_regression" in page and "0.5812" in page


def test_report_on_an_empty_database_says_so(capsys: pytest.CaptureFixture[str], initialised_db: str, tmp_path: Path) -> None:
    code, _, err = run(capsys, initialised_db, "report", "--out", str(tmp_path))
    assert code == 0, err
    assert "No studies yet" in (tmp_path / "index.html").read_text()
    assert not list(tmp_path.glob("*.png"))
