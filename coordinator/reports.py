"""For people: `coordinator status`, `coordinator leaderboard` and `coordinator report`.

Everything here reads the SQL read model (sql/*.sql: study_progress, leaderboard, trial_results)
and the `baselines` table, so what the CLI shows is exactly what `psql` users see. Nothing writes.
"""

from __future__ import annotations

import csv
import datetime as dt
import fnmatch
import html
import io
import json
import math
import os
from pathlib import Path
from typing import Annotated, Any, Optional

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table

from coordinator import db
from coordinator.app import OutputFormat, open_engine, path_option, split_globs
from coordinator.datasets import select_dataset_rows
from coordinator.errors import UserError
from coordinator.figures import Column, finish_figure, fitted_table, format_count

Row = dict[str, Any]



# --------------------------------------------------------------------------------------------------
# Reading the read model


def matches(name: str, globs: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, g) for g in globs)


def select_studies(rows: list[Row], pattern: str | None) -> list[Row]:
    """Rows whose study_name matches the glob (or any of comma-separated globs); a glob list matching
    nothing is an error."""
    globs = split_globs(pattern)
    if globs is None:
        return rows
    chosen = [r for r in rows if matches(r["study_name"], globs)]
    if not chosen:
        raise UserError(f"no study matching '{pattern}' (see `coordinator status`)")
    return chosen


def study_progress(engine: sa.Engine, pattern: str | None = None) -> list[Row]:
    rows = db.read_rows(engine, "SELECT * FROM study_progress ORDER BY horizon NULLS LAST, budget_params NULLS LAST, study_name")
    return select_studies(rows, pattern)


def leaderboard(engine: sa.Engine, pattern: str | None = None) -> list[Row]:
    if pattern is not None:
        select_studies(study_progress(engine), pattern)  # unknown study: error even if nothing completed yet
    from coordinator.evaluation.report import with_test_auc

    rows = db.read_rows(engine, "SELECT * FROM leaderboard ORDER BY horizon NULLS LAST, budget_params NULLS LAST, study_name")
    globs = split_globs(pattern)
    # Once evaluated, the test AUC (with interval) of the study's answer sits next to its validation objective.
    return with_test_auc(engine, rows if globs is None else [r for r in rows if matches(r["study_name"], globs)])


def completed_trials(engine: sa.Engine) -> list[Row]:
    return db.read_rows(
        engine,
        """
        SELECT study_name, budget, budget_params, horizon, dataset_name, dataset_version, trial_number,
               val_auc, n_params
        FROM trial_results
        WHERE state = 'COMPLETE' AND val_auc IS NOT NULL AND n_params IS NOT NULL
        """,
    )


def baselines(engine: sa.Engine) -> list[Row]:
    """Baseline validation AUCs per dataset version and horizon; none if the table is not there yet."""
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        if not inspector.has_table("baselines"):
            return []
        columns = {c["name"] for c in inspector.get_columns("baselines")}
    needed = {"dataset_name", "dataset_version", "horizon", "model", "val_auc"}
    if not needed <= columns:
        return []
    return db.read_rows(engine, "SELECT dataset_name, dataset_version, horizon, model, val_auc FROM baselines WHERE val_auc IS NOT NULL")


# --------------------------------------------------------------------------------------------------
# Formatting


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
    """Progress per study, in `width` columns (default: the console's)."""
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
    return fitted_table("studies", STATUS_COLUMNS, cells, width or console().width)


def status_summary(rows: list[Row]) -> str:
    target = sum(r["target_trials"] or 0 for r in rows)
    finished = sum(r["finished"] for r in rows)
    running = sum(r["running"] for r in rows)
    return f"{len(rows)} studies: {finished} of {target} trials finished, {running} running"


# (label, row key, keep order): at 80 columns the study, its best trial, the objective, the test AUC
# and the real parameter count stay; the architecture and training values go first.
LEADERBOARD_TABLE_COLUMNS = [
    ("study", "study_name", 0), ("trial", "trial_number", 1), ("objective", "objective", 9), ("val_auc", "val_auc", 1),
    ("test AUC [95% CI]", "test_auc_ci", 1),
    ("params", "n_params", 1), ("d_model", "d_model", 3), ("layers", "n_layers", 3), ("heads", "n_heads", 4), ("d_ff", "d_ff", 5),
    ("lr", "learning_rate", 6), ("wd", "weight_decay", 7), ("dropout", "dropout", 7), ("epochs", "epochs_run", 8),
    ("best epoch", "best_epoch", 2),
]
# The leaderboard's CSV/JSON: the view's columns, then the evaluated test AUC and the trial it belongs to.
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
    columns = [Column(label, keep, "left" if label == "study" else "right") for label, _, keep in LEADERBOARD_TABLE_COLUMNS]
    cells = [[leaderboard_cell(key, r[key]) for _, key, _ in LEADERBOARD_TABLE_COLUMNS] for r in rows]
    return fitted_table("best trial per study", columns, cells, width or console().width)


def leaderboard_csv(rows: list[Row], columns: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: json_value(r[k]) for k in columns})
    return out.getvalue()


def leaderboard_json(rows: list[Row]) -> str:
    return json.dumps([{k: json_value(v) for k, v in r.items()} for r in rows], indent=2)


def view_columns(engine: sa.Engine, view: str) -> list[str]:
    """Column names in view order (so an empty leaderboard CSV still has its header)."""
    with engine.connect() as conn:
        return list(conn.execute(sa.text(f"SELECT * FROM {view} LIMIT 0")).keys())


# --------------------------------------------------------------------------------------------------
# The HTML report


def report_dataset(engine: sa.Engine, dataset: str | None) -> tuple[str, int] | None:
    """The one dataset version a report shows (None without studies): a report never mixes datasets,
    so several in use and none named (or `all`) is refused."""
    from coordinator.datasets import ALL

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
    from coordinator.evaluation.report import html_section

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


BASELINE_STYLES = [("#444444", "--"), ("#9467bd", "-."), ("#8c564b", ":"), ("#e377c2", "--")]


def plot_auc_vs_params(points: list[Row], board: list[Row], lines: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display, no GUI toolkit
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    horizons = sorted({p["horizon"] for p in points if p["horizon"] is not None}) or [None]
    budgets = sorted({(p["budget_params"] or 0, p["budget"] or "?") for p in points})
    colours = {label: plt.get_cmap("tab10")(i % 10) for i, (_, label) in enumerate(budgets)}
    datasets = {(p["dataset_name"], p["dataset_version"]) for p in points}
    baseline_rows = [b for b in lines if (b["dataset_name"], b["dataset_version"]) in datasets]
    models = sorted({b["model"] for b in baseline_rows})
    styles = {m: BASELINE_STYLES[i % len(BASELINE_STYLES)] for i, m in enumerate(models)}
    sizes = [p["n_params"] for p in points]
    # Few decades: label 1-2-3-5 steps so every budget is readable; many: powers of ten only.
    subs = (1.0, 2.0, 3.0, 5.0) if max(sizes) / min(sizes) < 100 else (1.0,)

    fig, axes = plt.subplots(1, len(horizons), figsize=(5.2 * len(horizons), 4.6), sharey=True, squeeze=False)
    for ax, horizon in zip(axes[0], horizons, strict=False):
        mine = [p for p in points if p["horizon"] == horizon]
        for budget_params, label in budgets:
            these = [p for p in mine if (p["budget"] or "?") == label]
            ax.scatter([p["n_params"] for p in these], [p["val_auc"] for p in these], s=18, alpha=0.5,
                       color=colours[label], label=f"{label} budget: trials")
            if budget_params:
                ax.axvline(budget_params, color=colours[label], linewidth=0.7, linestyle=":", alpha=0.7)
        best = sorted((b for b in board if b["horizon"] == horizon and b["val_auc"] is not None and b["n_params"]),
                      key=lambda b: b["n_params"])
        if best:
            ax.plot([b["n_params"] for b in best], [b["val_auc"] for b in best], color="black", linewidth=1,
                    marker="*", markersize=11, label="best trial per study")
        for b in baseline_rows:
            if b["horizon"] == horizon:
                colour, style = styles[b["model"]]
                ax.axhline(b["val_auc"], color=colour, linestyle=style, linewidth=1.2, label=f"baseline: {b['model']}")
        ax.axhline(0.5, color="grey", linewidth=0.6)  # chance
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=subs))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: format_count(int(round(x)))))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("parameters (real count, log scale)")
        ax.set_title(f"horizon {horizon} day{'s' if horizon != 1 else ''}" if horizon is not None else "studies without a spec")
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel("validation AUC (best epoch)")
    finish_figure(fig, axes, "Validation AUC vs real parameter count (dotted: the budget; grey: AUC 0.5)", path, bottom=0.06)


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
    parts += [table(board, [(label, key) for label, key, _ in LEADERBOARD_TABLE_COLUMNS], leaderboard_cell) if board else "<p>No COMPLETE trial yet.</p>"]
    parts += ["<h2>Progress</h2>", table(progress, progress_columns, leaderboard_cell) if progress else "<p>No studies.</p>"]
    if lines:
        baseline_columns = [("dataset", "dataset_name"), ("version", "dataset_version"), ("horizon", "horizon"),
                            ("model", "model"), ("val_auc", "val_auc")]
        parts += ["<h2>Baselines</h2>", table(sorted(lines, key=lambda b: (b["horizon"], b["model"])), baseline_columns, leaderboard_cell)]
    parts.append("</body></html>")
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------------
# Commands (mounted in coordinator/cli.py)

StudiesGlob = Annotated[
    Optional[str], typer.Option("--studies", help="Only studies matching these globs, comma-separated: '*-h1,*-h5'.")
]
DatasetOption = Annotated[
    Optional[str],
    typer.Option("--dataset", help="NAME[:VERSION], or all; required when the studies use several datasets."),
]
FormatOption = Annotated[OutputFormat, typer.Option("--format", help="table for people; csv or json for programs.")]


def console() -> Console:
    """Rich console: the terminal's width ($COLUMNS when set); piped without $COLUMNS, wide enough
    that a log keeps every column."""
    terminal = Console()
    return terminal if terminal.is_terminal or os.environ.get("COLUMNS") else Console(width=220)


def status_command(ctx: typer.Context, studies: StudiesGlob = None, dataset: DatasetOption = None, format: FormatOption = OutputFormat.table) -> None:
    """Progress per study: target, complete, pruned, failed, running, best, ETA."""
    engine = open_engine(ctx)
    try:
        rows = select_dataset_rows(study_progress(engine, studies), dataset)
        columns = view_columns(engine, "study_progress")
    finally:
        engine.dispose()
    # Everything is read and checked before the first line is printed.
    if format == OutputFormat.csv:
        typer.echo(leaderboard_csv(rows, columns), nl=False)
    elif format == OutputFormat.json:
        typer.echo(leaderboard_json(rows))
    elif not rows:
        typer.echo("no studies yet: create them with `coordinator create-studies`")
    else:
        out = console()
        out.print(status_table(rows))
        out.print(status_summary(rows))


def leaderboard_command(ctx: typer.Context, format: FormatOption = OutputFormat.table, studies: StudiesGlob = None, dataset: DatasetOption = None) -> None:
    """The best COMPLETE trial of every study (by the study's own direction)."""
    engine = open_engine(ctx)
    try:
        rows = select_dataset_rows(leaderboard(engine, studies), dataset)
        columns = view_columns(engine, "leaderboard") + TEST_AUC_COLUMNS
    finally:
        engine.dispose()
    if format == OutputFormat.csv:
        typer.echo(leaderboard_csv(rows, columns), nl=False)
    elif format == OutputFormat.json:
        typer.echo(leaderboard_json(rows))
    elif rows:
        console().print(leaderboard_table(rows))
    else:
        typer.echo("no COMPLETE trial yet")


def report_command(
    ctx: typer.Context,
    out_text: Annotated[str, typer.Option("--out", help="Folder for index.html and the PNG figures.")] = "report",
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="NAME[:VERSION]: the one dataset the report shows; required when studies use several.")] = None,
) -> None:
    """An HTML page with PNG figures: validation AUC vs parameter count per horizon, best architectures."""
    out = path_option(out_text, "--out")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    engine = open_engine(ctx)
    try:
        index = write_report(engine, out, dataset)
    except OSError as exc:
        raise UserError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    finally:
        engine.dispose()
    typer.echo(f"report: {index}")
