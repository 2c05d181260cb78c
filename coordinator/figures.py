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
