"""Terminal tables fit 80 and 100 columns by choosing columns: names and numbers are never cut short."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from rich.console import Console

from coordinator.reports.answer import horizon_table
from coordinator.reports.terminal import leaderboard_table, status_table
from coordinator.reports.walkforward import comparison_table, fold_table

NAMES = [f"spy-a25-vix8-thr1pct-{b}-h{h}" for b in ("2M", "20M", "200M", "2B") for h in (1, 3, 5)]


def render(table: object, width: int) -> list[str]:
    out = Console(width=width, file=io.StringIO(), color_system=None)
    out.print(table)
    return out.file.getvalue().splitlines()  # type: ignore[attr-defined]


def progress_row(name: str) -> dict:
    return {"study_name": name, "target_trials": 50, "complete": 41, "pruned": 3, "failed": 1, "retried": 2, "running": 2,
            "waiting": 3, "objective_metric": "val_auc", "direction": "maximize", "best_objective": 0.6123456,
            "mean_duration_s": 754.0, "remaining": 4, "eta_s": 5400.0, "finished": 45}


def board_row(name: str) -> dict:
    return {"study_name": name, "trial_number": 17, "objective": 0.61234, "val_auc": 0.61234, "test_auc_ci": "0.587 [0.561, 0.612] (trial #12)",
            "n_params": 20_123_456, "d_model": 512, "n_layers": 6, "n_heads": 8, "d_ff": 2048, "learning_rate": 3e-4,
            "weight_decay": 1e-2, "dropout": 0.1, "epochs_run": 30, "best_epoch": 22}


def answer_row(budget: str) -> dict:
    return {"horizon": 1, "chosen": True, "under_trained_runs": 1, "n_seeds": 5, "budget": budget, "trial_number": 17,
            "n_params": 20_123_456, "test_auc": 0.587, "test_auc_low": 0.561, "test_auc_high": 0.612, "test_auc_sd": 0.004,
            "test_pr_auc": 0.301, "test_pr_auc_low": 0.28, "test_pr_auc_high": 0.33, "vs_best_baseline": 0.012,
            "vs_best_baseline_low": -0.003, "vs_best_baseline_high": 0.027}


@pytest.mark.parametrize("width", [80, 100])
def test_status_and_leaderboard_fit_with_whole_names(width: int) -> None:
    for table in (status_table([progress_row(n) for n in NAMES], width), leaderboard_table([board_row(n) for n in NAMES], width)):
        lines = render(table, width)
        assert max(len(line) for line in lines) <= width
        body = "\n".join(lines)
        assert all(name in body for name in NAMES) and "…" not in body
    board = "\n".join(render(leaderboard_table([board_row(n) for n in NAMES], width), width))
    assert "0.587 [0.561, 0.612] (trial #12)" in board  # the test AUC says whose it is
    assert width == 80 or "20.1M" in board  # at 100 the real parameter count stays too


@pytest.mark.parametrize("width", [80, 100])
def test_answer_table_fits(width: int) -> None:
    baselines = [{"horizon": 1, "model": "logistic_regression", "best": True, "test_auc": 0.55, "test_auc_low": 0.53, "test_auc_high": 0.57,
                  "test_pr_auc": 0.25, "test_pr_auc_low": 0.23, "test_pr_auc_high": 0.27}]
    lines = render(horizon_table(1, [answer_row(b) for b in ("2M", "20M", "200M")], baselines, width), width)
    assert max(len(line) for line in lines) <= width
    body = "\n".join(lines)
    assert "0.587 [0.561, 0.612]" in body and "logistic_regression (best)" in body and "…" not in body


def test_a_wide_terminal_shows_every_column() -> None:
    body = "\n".join(render(status_table([progress_row(n) for n in NAMES], 220), 220))
    assert "not shown" not in body and "mean trial" in body


@pytest.mark.parametrize("width", [80, 100])
def test_walk_forward_tables_fit_without_cut_numbers(width: int) -> None:
    """The per-fold table at the default preset's 5 folds and the model comparison: no number cut short."""
    models = ["2M", "20M", "200M", "2B", "gradient_boosting", "logistic_regression", "volatility", "base_rate"]
    folds = [{"horizon": 1, "model": m, "kind": "baseline", "budget": None, "fold": f, "test_start": dt.date(2010 + 2 * f, 1, 4),
              "test_end": dt.date(2011 + 2 * f, 12, 30), "n_days": 503, "auc": 0.61234, "beats_best_baseline": f == 2}
             for m in models for f in range(1, 6)]
    compared = [{"horizon": 1, "model": m, "kind": "baseline", "budget": None, "best_baseline": m == "logistic_regression", "auc": 0.6123, "log_loss": 0.65432,
                 "brier": 0.23456, "brier_reliability": 0.00123, "mcs_pvalue": 0.456, "in_mcs": m == "2B"} for m in models]
    for table in (fold_table(1, folds), comparison_table(1, compared, width)):
        lines = render(table, width)
        assert max(len(line) for line in lines) <= width
        body = "\n".join(lines)
        assert "…" not in body and "0.612" in body
    comparison = "\n".join(render(comparison_table(1, compared, width), width))
    assert "0.6543" in comparison and "logistic_regression (best)" in comparison
