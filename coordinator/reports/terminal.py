"""For the terminal and for programs: status and leaderboard tables, CSV and JSON, number formats."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from typing import Any

from rich.table import Table

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


def status_table(rows: list[Row]) -> Table:
    table = Table(title="studies", title_justify="left")
    for name, justify in [
        ("study", "left"), ("target", "right"), ("complete", "right"), ("pruned", "right"), ("failed", "right"),
        ("retried", "right"), ("running", "right"), ("waiting", "right"), ("objective", "left"), ("best", "right"),
        ("mean trial", "right"),
        ("ETA", "right"),
    ]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        best = format_number(r["best_objective"])
        eta = "done" if r["target_trials"] is not None and r["remaining"] == 0 and r["running"] == 0 else format_duration(r["eta_s"])
        table.add_row(
            r["study_name"], str(r["target_trials"] if r["target_trials"] is not None else "-"), str(r["complete"]),
            str(r["pruned"]), str(r["failed"]), str(r["retried"]), str(r["running"]), str(r["waiting"]),
            f"{r['objective_metric'] or '-'} ({(r['direction'] or '?')[:3]})", best,
            format_duration(r["mean_duration_s"]), eta,
        )
    return table


def status_summary(rows: list[Row]) -> str:
    target = sum(r["target_trials"] or 0 for r in rows)
    finished = sum(r["finished"] for r in rows)
    running = sum(r["running"] for r in rows)
    return f"{len(rows)} studies: {finished} of {target} trials finished, {running} running"


LEADERBOARD_TABLE_COLUMNS = [
    ("study", "study_name"), ("trial", "trial_number"), ("objective", "objective"), ("val_auc", "val_auc"),
    ("test AUC [95% CI]", "test_auc_ci"),
    ("params", "n_params"), ("d_model", "d_model"), ("layers", "n_layers"), ("heads", "n_heads"), ("d_ff", "d_ff"),
    ("lr", "learning_rate"), ("wd", "weight_decay"), ("dropout", "dropout"), ("epochs", "epochs_run"),
    ("best epoch", "best_epoch"),
]


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


def leaderboard_table(rows: list[Row]) -> Table:
    table = Table(title="best trial per study", title_justify="left")
    for label, _ in LEADERBOARD_TABLE_COLUMNS:
        table.add_column(label, justify="left" if label == "study" else "right")
    for r in rows:
        table.add_row(*(leaderboard_cell(key, r[key]) for _, key in LEADERBOARD_TABLE_COLUMNS))
    return table


def leaderboard_csv(rows: list[Row], columns: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: json_value(r[k]) for k in columns})
    return out.getvalue()


def leaderboard_json(rows: list[Row]) -> str:
    return json.dumps([{k: json_value(v) for k, v in r.items()} for r in rows], indent=2)
