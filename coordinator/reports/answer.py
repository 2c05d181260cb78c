"""The evaluated answer for people: a terminal table per horizon and the report's headline section.

Reads the views `final_results` and `scaling`, the table `evaluation_baselines` and the runs'
learning curves (`evaluation_runs.epochs`), for ONE dataset version: panels and lines never mix
datasets. Nothing here writes to the database.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from coordinator.reports.figures import finish_figure, format_count
from coordinator.store import engines

Row = dict[str, Any]


def has_evaluation(engine: sa.Engine) -> bool:
    """Whether the database has the evaluation views (an older schema may not)."""
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT to_regclass('scaling') IS NOT NULL AND to_regclass('final_results') IS NOT NULL")).scalar_one()


def answer_rows(engine: sa.Engine, dataset_name: str, dataset_version: int) -> tuple[list[Row], list[Row], list[Row]]:
    """(scaling rows, final_results rows, evaluation_baselines rows) of one dataset version."""
    if not has_evaluation(engine):
        return [], [], []
    key = {"n": dataset_name, "v": dataset_version}
    scaling = engines.read_rows(engine, "SELECT * FROM scaling WHERE dataset_name = :n AND dataset_version = :v ORDER BY horizon", **key)
    final = engines.read_rows(engine, "SELECT * FROM final_results WHERE dataset_name = :n AND dataset_version = :v "
                         "ORDER BY horizon, budget_params, rank", **key)
    baselines = engines.read_rows(engine, "SELECT * FROM evaluation_baselines WHERE dataset_name = :n AND dataset_version = :v "
                             "ORDER BY horizon, val_auc DESC", **key)
    return scaling, final, baselines


def ci(value: float | None, low: float | None, high: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(value)} [{f.format(low)}, {f.format(high)}]"


def horizon_table(horizon: int, final: list[Row], baselines: list[Row]) -> Table:
    table = Table(title=f"H = {horizon}: test AUC, mean over seeds, 95% CI (block bootstrap over test days x seeds)", title_justify="left")
    for name in ("model", "params", "test AUC [95% CI]", "seed sd", "PR-AUC [95% CI]", "vs best baseline", "flags"):
        table.add_column(name, justify="left" if name in ("model", "flags") else "right", no_wrap=name == "model")
    for r in final:
        if r["horizon"] != horizon or not r["chosen"]:
            continue
        flags = f"{r['under_trained_runs']}/{r['n_seeds']} under-trained" if r["under_trained_runs"] else ""
        table.add_row(f"{r['budget']} #{r['trial_number']} x{r['n_seeds']}", format_count(r["n_params"]),
                      ci(r["test_auc"], r["test_auc_low"], r["test_auc_high"]),
                      "-" if r["test_auc_sd"] is None else f"{r['test_auc_sd']:.3f}",
                      ci(r["test_pr_auc"], r["test_pr_auc_low"], r["test_pr_auc_high"]),
                      ci(r["vs_best_baseline"], r["vs_best_baseline_low"], r["vs_best_baseline_high"], signed=True), flags)
    for b in baselines:
        if b["horizon"] != horizon:
            continue
        table.add_row(b["model"] + (" (best)" if b["best"] else ""), "-", ci(b["test_auc"], b["test_auc_low"], b["test_auc_high"]), "-",
                      ci(b["test_pr_auc"], b["test_pr_auc_low"], b["test_pr_auc_high"]), "-", "")
    return table


def print_answer(engine: sa.Engine, dataset_name: str, dataset_version: int, out: Console) -> bool:
    """Per horizon: the table and the verdict sentence. False when nothing is evaluated yet."""
    scaling, final, baselines = answer_rows(engine, dataset_name, dataset_version)
    if not scaling:
        return False
    if not out.is_terminal and out.width < 170:
        out = Console(file=out.file, width=170)  # a log file: never squeeze the table
    out.print(f"[bold]the answer on {dataset_name}:{dataset_version}[/] (test split, scored once per run; "
              "model: budget, search trial #, seeds; best: the baseline with the best validation AUC)")
    for s in scaling:
        out.print(horizon_table(s["horizon"], final, baselines))
        out.print(f"[bold]verdict:[/] {s['sentence']}")
        for note in s["notes"]:
            out.print(f"[yellow]note:[/] {note}")
    b = scaling[0]
    out.print(f"intervals: {b['method']} bootstrap over {b['n_test']} test days, block length {b['block_length']} "
              f"(at least H), {b['replicates']} replicates; seeds resampled with the days")
    return True


# --------------------------------------------------------------------------------------------------
# The report's headline section


def plot_answer(final: list[Row], baselines: list[Row], scaling: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    horizons = [s["horizon"] for s in scaling]
    fig, axes = plt.subplots(1, len(horizons), figsize=(5.4 * len(horizons), 4.6), sharey=True, squeeze=False)
    colours = {"logistic_regression": "#1f77b4", "gradient_boosting": "#2ca02c", "volatility": "#d62728"}
    for ax, horizon in zip(axes[0], horizons, strict=True):
        for b in (b for b in baselines if b["horizon"] == horizon and b["model"] != "base_rate"):
            colour = colours.get(b["model"], "#7f7f7f")
            ax.axhspan(b["test_auc_low"], b["test_auc_high"], color=colour, alpha=0.12, linewidth=0)
            ax.axhline(b["test_auc"], color=colour, linestyle="--", linewidth=1.1,
                       label=f"baseline {b['model']}" + (" (best on val)" if b["best"] else ""))
        ax.axhline(0.5, color="grey", linewidth=0.7, label="base rate (AUC 0.5)")
        mine = [r for r in final if r["horizon"] == horizon]
        for chosen, style in ((False, {"fmt": "o", "mfc": "none", "alpha": 0.5, "color": "black", "markersize": 5}),
                              (True, {"fmt": "o", "color": "black", "markersize": 7})):
            pts = [r for r in mine if r["chosen"] == chosen]
            if pts:
                ax.errorbar([r["n_params"] for r in pts], [r["test_auc"] for r in pts],
                            yerr=[[r["test_auc"] - r["test_auc_low"] for r in pts], [r["test_auc_high"] - r["test_auc"] for r in pts]],
                            capsize=3, label="transformer: the study's answer" if chosen else "other top-k configurations", **style)
        chosen_pts = sorted((r for r in mine if r["chosen"]), key=lambda r: r["n_params"])
        if len(chosen_pts) > 1:
            ax.plot([r["n_params"] for r in chosen_pts], [r["test_auc"] for r in chosen_pts], color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: format_count(int(round(x)))))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("parameters (real count, log scale)")
        ax.set_title(f"H = {horizon}")
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel("test AUC (mean over seeds, 95% CI)")
    finish_figure(fig, axes, "Test AUC vs real parameter count (bands: baselines' 95% intervals)", path, bottom=0.08)


def plot_curves(runs: list[Row], horizons: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(horizons), figsize=(5.4 * len(horizons), 4.0), sharey=True, squeeze=False)
    budgets = sorted({(r["budget_params"], r["budget"]) for r in runs})
    colours = {label: plt.get_cmap("tab10")(i % 10) for i, (_, label) in enumerate(budgets)}
    for ax, horizon in zip(axes[0], horizons, strict=True):
        for r in (r for r in runs if r["horizon"] == horizon):
            epochs = [e["epoch"] for e in r["epochs"]]
            ax.plot(epochs, [e["val_auc"] for e in r["epochs"]], color=colours[r["budget"]], alpha=0.6, linewidth=1,
                    label=f"{r['budget']}")
            best = r["epochs"][r["best_epoch"] - 1]
            ax.plot([best["epoch"]], [best["val_auc"]], marker="*" if r["best_epoch"] < r["epochs_run"] else "X",
                    color=colours[r["budget"]], markersize=8)
        ax.set_title(f"H = {horizon}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("validation AUC")
    handles: dict[str, Any] = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=False):
            handles.setdefault(label, handle)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.suptitle("Learning curves of the evaluation runs (star: best epoch; X: best epoch was the last, under-trained)", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def html_section(engine: sa.Engine, dataset_name: str, dataset_version: int, out_dir: Path) -> str:
    """The evaluated answer as HTML (figures written into out_dir); an explanation when there is none."""
    esc = html.escape
    scaling, final, baselines = answer_rows(engine, dataset_name, dataset_version)
    answer_png, curves_png = out_dir / "test_auc_vs_params.png", out_dir / "evaluation_curves.png"
    if not scaling:
        answer_png.unlink(missing_ok=True)
        curves_png.unlink(missing_ok=True)
        return ("<h2>The answer</h2><p class='note'>Not evaluated yet: run <code>coordinator evaluate</code> "
                "(re-trains the best configurations with fresh seeds and scores them once on the test split).</p>")
    runs = engines.read_rows(engine, """
        SELECT e.study_name, e.rank, e.seed, e.best_epoch, e.epochs_run, e.max_epochs, e.epochs, sp.horizon, sp.budget, sp.budget_params
        FROM evaluation_runs e JOIN study_specs sp ON sp.study_name = e.study_name
        JOIN evaluation_protocols p ON p.study_name = e.study_name AND p.protocol_sha256 = e.protocol_sha256
        WHERE sp.dataset_name = :n AND sp.dataset_version = :v ORDER BY sp.horizon, sp.budget_params, e.rank, e.seed""",
                n=dataset_name, v=dataset_version)
    plot_answer(final, baselines, scaling, answer_png)
    plot_curves(runs, [s["horizon"] for s in scaling], curves_png)
    parts = [f"<h2>The answer on {esc(dataset_name)}:{dataset_version}</h2>"]
    parts += [f"<p><b>{esc(s['sentence'])}</b></p>" + "".join(f"<p class='note'>{esc(n)}</p>" for n in s["notes"]) for s in scaling]
    b = scaling[0]
    parts.append(
        f"<p>Each study's best configurations were re-trained with fresh seeds by the trial recipe and scored once on the test "
        f"split. Intervals: {esc(b['method'])} bootstrap over the {b['n_test']} test days (block length {b['block_length']}, at "
        f"least H), seeds resampled with the days, {b['replicates']} replicates; differences and slopes are paired (the same "
        f"resampled days for every model). The study's answer and the best baseline are chosen on validation.</p>")
    parts.append(f"<img src='{answer_png.name}' alt='test AUC vs parameter count per horizon'>")
    head = ["horizon", "model", "params", "seeds", "test AUC [95% CI]", "sd", "test PR-AUC [95% CI]", "vs best baseline", "under-trained runs"]
    body = []
    for r in final:
        body.append([str(r["horizon"]), f"{r['budget']} {r['study_name']} #{r['trial_number']} (rank {r['rank']}{', answer' if r['chosen'] else ''})",
                     format_count(r["n_params"]), str(r["n_seeds"]), ci(r["test_auc"], r["test_auc_low"], r["test_auc_high"]),
                     "-" if r["test_auc_sd"] is None else f"{r['test_auc_sd']:.3f}",
                     ci(r["test_pr_auc"], r["test_pr_auc_low"], r["test_pr_auc_high"]),
                     ci(r["vs_best_baseline"], r["vs_best_baseline_low"], r["vs_best_baseline_high"], signed=True),
                     str(r["under_trained_runs"])])
    for bl in baselines:
        body.append([str(bl["horizon"]), f"baseline {bl['model']}" + (" (best on validation)" if bl["best"] else ""), "-", "-",
                     ci(bl["test_auc"], bl["test_auc_low"], bl["test_auc_high"]), "-",
                     ci(bl["test_pr_auc"], bl["test_pr_auc_low"], bl["test_pr_auc_high"]), "-", "-"])
    parts.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"
                 + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in body) + "</table>")
    under = [r for r in runs if r["best_epoch"] == r["epochs_run"]]
    if under:
        parts.append("<h3>Under-trained runs (best epoch was the last one)</h3><p>More epochs might have helped these:</p><ul>"
                     + "".join(f"<li>{esc(r['study_name'])} rank {r['rank']} seed {r['seed']}: best epoch {r['best_epoch']} "
                               f"of {r['epochs_run']} (max {r['max_epochs']})</li>" for r in under) + "</ul>")
    parts.append(f"<h3>Learning curves of the evaluation runs</h3><img src='{curves_png.name}' alt='learning curves'>")
    return "\n".join(parts)


def with_test_auc(engine: sa.Engine, board: list[Row]) -> list[Row]:
    """Leaderboard rows plus the study's evaluated test AUC and interval (its answer configuration),
    once evaluated: keys test_auc, test_auc_low, test_auc_high, test_auc_ci (None before)."""
    found: dict[str, Row] = {}
    if board and has_evaluation(engine):
        found = {r["study_name"]: r for r in engines.read_rows(engine, "SELECT study_name, test_auc, test_auc_low, test_auc_high FROM final_results "
                                                          "WHERE chosen AND study_name = ANY(:names)", names=[b["study_name"] for b in board])}
    out = []
    for b in board:
        r = found.get(b["study_name"])
        out.append({**b, "test_auc": r and r["test_auc"], "test_auc_low": r and r["test_auc_low"], "test_auc_high": r and r["test_auc_high"],
                    "test_auc_ci": ci(r["test_auc"], r["test_auc_low"], r["test_auc_high"]) if r else None})
    return out
