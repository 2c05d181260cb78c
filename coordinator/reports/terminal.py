"""For the terminal and for programs: status and leaderboard tables, CSV and JSON, number formats."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from typing import Any

from rich.table import Table

from coordinator.reports.columns import Column, fitted_table, terminal_console
from coordinator.reports.figures import format_count
from coordinator.reports.queries import Row


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_number(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def json_value(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


STATUS_COLUMNS = [
    Column("study", 0, "left"), Column("target", 1), Column("complete", 1), Column("pruned", 3), Column("failed", 2),
    Column("retried", 5), Column("running", 2), Column("waiting", 4), Column("objective", 6, "left"), Column("best", 1),
    Column("mean trial", 5), Column("ETA", 1),
]


def status_table(rows: list[Row], width: int | None = None) -> Table:
    """Progress per study, in `width` columns (default: the terminal's)."""
    cells = []
    for r in rows:
        best = format_number(r["best_objective"])
        eta = "done" if r["target_trials"] is not None and r["remaining"] == 0 and r["running"] == 0 else format_duration(r["eta_s"])
        cells.append([
            r["study_name"], str(r["target_trials"] if r["target_trials"] is not None else "-"), str(r["complete"]),
            str(r["pruned"]), str(r["failed"]), str(r["retried"]), str(r["running"]), str(r["waiting"]),
            f"{r['objective_metric'] or '-'} ({(r['direction'] or '?')[:3]})", best,
            format_duration(r["mean_duration_s"]), eta,
        ])
    return fitted_table("studies", STATUS_COLUMNS, cells, width or terminal_console().width)


def status_summary(rows: list[Row]) -> str:
    target = sum(r["target_trials"] or 0 for r in rows)
    finished = sum(r["finished"] for r in rows)
    running = sum(r["running"] for r in rows)
    return f"{len(rows)} studies: {finished} of {target} trials finished, {running} running"


# (label, row key, keep order): narrow, the study, its best trial and the test AUC (once evaluated)
# stay, then val AUC and the real parameter count; the architecture and training values go first.
LEADERBOARD_TABLE_COLUMNS = [
    ("study", "study_name", 0), ("trial", "trial_number", 1), ("objective", "objective", 9), ("val_auc", "val_auc", 2),
    ("test AUC [95% CI]", "test_auc_ci", 1),
    ("params", "n_params", 2), ("d_model", "d_model", 3), ("layers", "n_layers", 3), ("heads", "n_heads", 4), ("d_ff", "d_ff", 5),
    ("lr", "learning_rate", 6), ("wd", "weight_decay", 7), ("dropout", "dropout", 7), ("epochs", "epochs_run", 8),
    ("best epoch", "best_epoch", 2),
]
# The leaderboard's CSV: the view's columns, then the evaluated test AUC and the trial it belongs to.
TEST_AUC_COLUMNS = ["test_auc", "test_auc_low", "test_auc_high", "test_auc_trial"]


def leaderboard_cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "n_params":
        return format_count(int(value))
    if key in ("learning_rate", "weight_decay"):
        return f"{value:.2e}"
    if key == "dropout":
        return f"{value:.2f}"
    if isinstance(value, float):
        return format_number(value)
    return str(value)


def leaderboard_table(rows: list[Row], width: int | None = None) -> Table:
    """The best trial per study, in `width` columns (default: the terminal's)."""
    evaluated = any(r.get("test_auc_ci") for r in rows)
    shown = [c for c in LEADERBOARD_TABLE_COLUMNS if evaluated or c[1] != "test_auc_ci"]  # no column of dashes
    columns = [Column(label, keep, "left" if label == "study" else "right") for label, _, keep in shown]
    cells = [[leaderboard_cell(key, r.get(key)) for _, key, _ in shown] for r in rows]
    return fitted_table("best trial per study", columns, cells, width or terminal_console().width)


def leaderboard_csv(rows: list[Row], columns: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: json_value(r[k]) for k in columns})
    return out.getvalue()


def leaderboard_json(rows: list[Row]) -> str:
    return json.dumps([{k: json_value(v) for k, v in r.items()} for r in rows], indent=2)
