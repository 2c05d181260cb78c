"""The HTML report (`coordinator report`): index.html plus PNG figures for one dataset version."""

from __future__ import annotations

import datetime as dt
import html
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from coordinator.errors import UserError
from coordinator.reports.answer import html_section
from coordinator.reports.figures import plot_auc_vs_params
from coordinator.reports.queries import Row, baselines, completed_trials, leaderboard, study_progress
from coordinator.reports.terminal import LEADERBOARD_TABLE_COLUMNS, leaderboard_cell
from coordinator.studies.datasets import ALL, select_dataset_rows


def report_dataset(engine: sa.Engine, dataset: str | None) -> tuple[str, int] | None:
    """The one dataset version a report shows (None without studies): a report never mixes datasets,
    so several in use and none named (or `all`) is refused."""
    if dataset == ALL:
        raise UserError("a report shows one dataset: choose it with --dataset NAME[:VERSION]")
    present = sorted({(r["dataset_name"], r["dataset_version"]) for r in select_dataset_rows(study_progress(engine), dataset)
                      if r["dataset_name"] is not None})
    if len(present) > 1:
        names = ", ".join(f"{n}:{v}" for n, v in present)
        raise UserError(f"--dataset {dataset} matches {len(present)} dataset versions ({names}): add the version, e.g. {names.split(', ')[-1]}")
    return present[0] if present else None


def write_report(engine: sa.Engine, out_dir: Path, dataset: str | None = None) -> Path:
    """index.html plus PNG figures for one dataset version: the evaluated answer (test AUC with
    intervals vs real parameter count, verdicts, learning curves) when there is one, then validation
    AUC vs real parameter count of the search; works on partial data."""
    out_dir.mkdir(parents=True, exist_ok=True)
    key = report_dataset(engine, dataset)

    def mine(rows: list[Row]) -> list[Row]:
        return [r for r in rows if key is None or (r["dataset_name"], r["dataset_version"]) == key]

    progress = mine(study_progress(engine))
    board = mine(leaderboard(engine))
    points = mine(completed_trials(engine))
    lines = mine(baselines(engine))
    figure: str | None = "auc_vs_params.png"
    if points:
        plot_auc_vs_params(points, board, lines, out_dir / figure)
    else:
        (out_dir / figure).unlink(missing_ok=True)  # a figure from an earlier run would contradict the page
        figure = None
    answer = html_section(engine, *key, out_dir) if key is not None else ""
    page = render_html(progress, board, figure, lines, answer)
    index = out_dir / "index.html"
    index.write_text(page)
    return index


def render_html(progress: list[Row], board: list[Row], figure: str | None, lines: list[Row], answer: str = "") -> str:
    esc = html.escape
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    target = sum(r["target_trials"] or 0 for r in progress)
    finished = sum(r["finished"] for r in progress)
    running = sum(r["running"] for r in progress)
    complete = sum(r["complete"] for r in progress)
    notes = []
    if not progress:
        notes.append("No studies yet: create them with <code>coordinator create-studies</code>.")
    elif complete == 0:
        notes.append("No COMPLETE trial yet: nothing to plot. Start workers with <code>worker</code>.")
    if progress and finished < target:
        notes.append(f"Partial results: {finished} of {target} target trials finished, {running} running.")
    if progress and not lines:
        notes.append("No baselines stored yet (<code>coordinator baselines</code>): the figure has no baseline lines.")

    def table(rows: list[Row], columns: list[tuple[str, str]], cell: Any) -> str:
        head = "".join(f"<th>{esc(label)}</th>" for label, _ in columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{esc(cell(key, r[key]))}</td>" for _, key in columns) + "</tr>" for r in rows
        )
        return f"<table><tr>{head}</tr>{body}</table>"

    progress_columns = [
        ("study", "study_name"), ("target", "target_trials"), ("complete", "complete"), ("pruned", "pruned"),
        ("failed", "failed"), ("retried", "retried"), ("running", "running"), ("best", "best_objective"),
    ]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>scalesweep report</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
        ".note{background:#fff4d6;padding:6px 10px;border-left:4px solid #e0a800}img{max-width:100%}</style></head><body>",
        "<h1>scalesweep report</h1>",
        f"<p>Generated {now}. {len(progress)} studies, {finished} of {target} target trials finished "
        f"({complete} complete), {running} running.</p>",
        *(f"<p class='note'>{n}</p>" for n in notes),
        answer,  # the evaluated answer first: it is what the search is for
    ]
    if figure:
        parts += [
            "<h2>Validation AUC vs real parameter count</h2>",
            "<p>Every COMPLETE trial is a point (colour: budget); stars join the best trial of each study; "
            "horizontal lines are the baselines on the same dataset version and horizon (values in the table below); "
            "grey is AUC 0.5.</p>",
            f"<img src='{esc(figure)}' alt='validation AUC vs parameter count per horizon'>",
        ]
    parts += ["<h2>Best architecture per study</h2>"]
    parts += [table(board, LEADERBOARD_TABLE_COLUMNS, leaderboard_cell) if board else "<p>No COMPLETE trial yet.</p>"]
    parts += ["<h2>Progress</h2>", table(progress, progress_columns, leaderboard_cell) if progress else "<p>No studies.</p>"]
    if lines:
        baseline_columns = [("dataset", "dataset_name"), ("version", "dataset_version"), ("horizon", "horizon"),
                            ("model", "model"), ("val_auc", "val_auc")]
        parts += ["<h2>Baselines</h2>", table(sorted(lines, key=lambda b: (b["horizon"], b["model"])), baseline_columns, leaderboard_cell)]
    parts.append("</body></html>")
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------------
# Commands (mounted in coordinator/cli.py)


