"""The walk-forward part of the answer for people: per-fold AUC, the model comparison, calibration.

Reads the views `fold_results` and `model_comparison` for ONE dataset version (never mixed), and
renders a terminal table per horizon and the report's panels: a line per model over the folds, the
comparison table (pooled AUC, log loss, Brier score, 90% model confidence set, SPA p-value) and the
reliability curves. A horizon evaluated under the single-period protocol has no rows here.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from coordinator.reports.columns import Column, fitted_table
from coordinator.reports.figures import finish_figure
from coordinator.store import engines

Row = dict[str, Any]


def walk_forward_rows(engine: sa.Engine, dataset_name: str, dataset_version: int) -> tuple[list[Row], list[Row]]:
    """(fold_results rows, model_comparison rows) of one dataset version; empty on an older schema."""
    with engine.connect() as conn:
        present = conn.execute(sa.text("SELECT to_regclass('fold_results') IS NOT NULL AND to_regclass('model_comparison') IS NOT NULL")).scalar_one()
    if not present:
        return [], []
    key = {"n": dataset_name, "v": dataset_version}
    folds = engines.read_rows(engine, "SELECT * FROM fold_results WHERE dataset_name = :n AND dataset_version = :v "
                              "ORDER BY horizon, kind DESC, budget_params, model, fold", **key)
    models = engines.read_rows(engine, "SELECT * FROM model_comparison WHERE dataset_name = :n AND dataset_version = :v "
                               "ORDER BY horizon, log_loss", **key)
    return folds, models


def label(row: Row) -> str:
    """A study's answer by its budget, a baseline by its model."""
    return str(row["budget"]) if row["kind"] == "study" and row["budget"] else str(row["model"])


def number(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def fold_table(horizon: int, folds: list[Row]) -> Table | None:
    mine = [r for r in folds if r["horizon"] == horizon]
    if not mine:
        return None
    periods = sorted({(r["fold"], r["test_start"], r["test_end"], r["n_days"]) for r in mine})
    table = Table(title=f"H = {horizon}: AUC per walk-forward fold (each model trained before its fold)", title_justify="left")
    table.add_column("model", overflow="fold")  # names may wrap; numbers never shrink (the default preset has 5 folds)
    for number_, start, end, days in periods:
        table.add_column(f"fold {number_}\n{start:%Y-%m}\n..{end:%Y-%m}\n{days} days", justify="right", no_wrap=True)
    models = list(dict.fromkeys((r["model"], label(r)) for r in mine))
    for model, name in models:
        cells = {r["fold"]: r for r in mine if r["model"] == model}
        table.add_row(name, *[number(cells[p[0]]["auc"]) + ("*" if cells[p[0]]["beats_best_baseline"] else "") for p in periods])
    return table


# Who stays when the terminal is narrow (0: always); calibration is the Brier score's reliability part.
COMPARISON_COLUMNS = [Column("model", 0, "left"), Column("AUC", 0), Column("log loss", 1), Column("in 90% MCS", 0),
                      Column("MCS p", 2), Column("Brier", 3), Column("calibration", 4)]


def comparison_table(horizon: int, models: list[Row], width: int) -> Table | None:
    mine = [r for r in models if r["horizon"] == horizon]
    if not mine:
        return None
    cells = [[label(r) + (" (best)" if r["best_baseline"] else ""), number(r["auc"]), number(r["log_loss"], 4),
              "yes" if r["in_mcs"] else "no", number(r["mcs_pvalue"]), number(r["brier"], 4), number(r["brier_reliability"], 4)]
             for r in mine]
    return fitted_table(f"H = {horizon}: pooled test days, model comparison on per-day log loss (best: the best baseline)",
                        COMPARISON_COLUMNS, cells, width)


def print_walk_forward(out: Console, horizon: int, folds: list[Row], models: list[Row]) -> None:
    """The per-fold table (* marks a fold where a budget beats the best baseline) and the comparison."""
    for table in (fold_table(horizon, folds), comparison_table(horizon, models, out.width)):
        if table is not None:
            out.print(table)


def colours_for(rows: list[Row]) -> dict[str, Any]:
    """One colour per model label across every panel of a figure."""
    import matplotlib.pyplot as plt

    names = sorted({label(r) for r in rows})
    return {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(names)}


def plot_folds(folds: list[Row], horizons: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = colours_for(folds)
    fig, axes = plt.subplots(1, len(horizons), figsize=(5.4 * len(horizons), 4.0), sharey=True, squeeze=False)
    for ax, horizon in zip(axes[0], horizons, strict=True):
        mine = [r for r in folds if r["horizon"] == horizon]
        for model in dict.fromkeys(r["model"] for r in mine):
            rows = sorted((r for r in mine if r["model"] == model), key=lambda r: r["fold"])
            study = rows[0]["kind"] == "study"
            ax.plot([r["test_start"] for r in rows], [r["auc"] for r in rows], marker="o" if study else ".",
                    linestyle="-" if study else "--", linewidth=1.6 if study else 1.0, label=label(rows[0]), color=colours[label(rows[0])])
        ax.axhline(0.5, color="grey", linewidth=0.7)
        ax.set_title(f"H = {horizon}")
        ax.set_xlabel("start of the test fold")
        ax.grid(True, alpha=0.3)
        ax.tick_params(axis="x", labelrotation=30)
    axes[0][0].set_ylabel("test AUC on the fold")
    finish_figure(fig, axes, "AUC per walk-forward fold (solid: each budget's answer, mean over seeds; dashed: baselines)", path,
                  bottom=0.12)


def plot_calibration(models: list[Row], horizons: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = colours_for(models)
    fig, axes = plt.subplots(1, len(horizons), figsize=(5.0 * len(horizons), 4.4), squeeze=False)
    for ax, horizon in zip(axes[0], horizons, strict=True):
        mine = [r for r in models if r["horizon"] == horizon]
        for r in mine:
            bins = r["reliability"]
            ax.plot([b["mean_predicted"] for b in bins], [b["observed_rate"] for b in bins], marker="o", markersize=3,
                    linestyle="-" if r["kind"] == "study" else "--", label=label(r), color=colours[label(r)])
        low = min([b["mean_predicted"] for r in mine for b in r["reliability"]] + [b["observed_rate"] for r in mine for b in r["reliability"]], default=0.0)
        high = max([b["mean_predicted"] for r in mine for b in r["reliability"]] + [b["observed_rate"] for r in mine for b in r["reliability"]], default=1.0)
        ax.plot([low, high], [low, high], color="grey", linewidth=0.8)
        ax.set_title(f"H = {horizon}")
        ax.set_xlabel("mean predicted probability (quantile bins)")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("observed positive rate")
    finish_figure(fig, axes, "Calibration on the pooled test days (grey: perfectly calibrated)", path, bottom=0.12)


def html_walk_forward(folds: list[Row], models: list[Row], scaling: list[Row], out_dir: Path) -> str:
    """The per-fold panel, the comparison table and calibration as HTML (figures into out_dir)."""
    esc = html.escape
    folds_png, calibration_png = out_dir / "auc_per_fold.png", out_dir / "calibration.png"
    horizons = [s["horizon"] for s in scaling if s.get("protocol") == "walk-forward"]
    if not horizons or not models:
        folds_png.unlink(missing_ok=True)
        calibration_png.unlink(missing_ok=True)
        return ""
    plot_folds(folds, horizons, folds_png)
    plot_calibration(models, horizons, calibration_png)
    parts = ["<h3>Walk-forward folds</h3>",
             "<p>Each model is re-trained on the days before each fold (early-stopped on the period just before it, purged) "
             "and scored once on the fold; the pooled answer above rests on every fold's days.</p>",
             f"<img src='{folds_png.name}' alt='AUC per walk-forward fold'>"]
    head = ["horizon", "model", "pooled AUC", "log loss", "Brier", "Brier calibration part", "MCS p-value", "in 90% MCS", "SPA p-value"]
    body = [[str(r["horizon"]), label(r) + (" (best baseline)" if r["best_baseline"] else ""), number(r["auc"]), number(r["log_loss"], 4),
             number(r["brier"], 4), number(r["brier_reliability"], 4), number(r["mcs_pvalue"]), "yes" if r["in_mcs"] else "no",
             number(r["spa_pvalue"])] for r in models]
    parts.append("<h3>Model comparison on the pooled days</h3><p>SPA: does some budget's answer have a lower per-day log loss "
                 "than the best baseline (chosen on validation), corrected for trying several budgets? MCS: the models not "
                 "shown worse than the best at 90%.</p>")
    parts.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"
                 + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in body) + "</table>")
    parts.append(f"<h3>Calibration</h3><img src='{calibration_png.name}' alt='reliability curves per horizon'>")
    return "\n".join(parts)
