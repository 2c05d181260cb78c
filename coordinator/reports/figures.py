"""What the progress report and the evaluation report draw alike: parameter counts as 2.4M, and
panels finished with one shared legend below them (so a legend never hides a point)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def format_count(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def finish_figure(fig: Any, axes: Any, title: str, path: Path, bottom: float) -> None:
    """One legend for all panels of the first row, the title, then save and close the figure."""
    import matplotlib.pyplot as plt

    handles: dict[str, Any] = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=False):
            handles.setdefault(label, handle)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), 4), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, bottom + 0.04 * ((len(handles) - 1) // 4), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


BASELINE_STYLES = [("#444444", "--"), ("#9467bd", "-."), ("#8c564b", ":"), ("#e377c2", "--")]


def plot_auc_vs_params(points: list[dict[str, Any]], board: list[dict[str, Any]], lines: list[dict[str, Any]], path: Path) -> None:
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
