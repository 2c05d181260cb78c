"""What the progress report and the evaluation report draw alike: parameter counts as 2.4M,
panels finished with one shared legend below them (so a legend never hides a point), and terminal
tables that fit the terminal by choosing columns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table


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


@dataclass(frozen=True)
class Column:
    """A table column: `keep` orders who stays when the terminal is narrow (0: always, higher: longer)."""

    label: str
    keep: int
    justify: str = "right"


def fitted_table(title: str, columns: list[Column], cells: list[list[str]], width: int) -> Table:
    """A table that fits `width` terminal columns by leaving out the least needed columns, never by
    cutting a name or a number short; the title says what was left out."""
    keep = list(range(len(columns)))

    def needed(indices: list[int]) -> int:  # each column: its widest cell, a space each side, one rule
        return 1 + sum(max([len(columns[i].label), *(len(row[i]) for row in cells)]) + 3 for i in indices)

    while needed(keep) > width and any(columns[i].keep for i in keep):
        keep.remove(max((i for i in keep if columns[i].keep), key=lambda i: (columns[i].keep, i)))
    left_out = [c.label for i, c in enumerate(columns) if i not in keep]
    note = f" (not shown at {width} columns: {', '.join(left_out)}; --format csv has all)" if left_out else ""
    table = Table(title=title + note, title_justify="left")
    for i in keep:
        table.add_column(columns[i].label, justify=columns[i].justify, no_wrap=True)  # type: ignore[arg-type]
    for row in cells:
        table.add_row(*(row[i] for i in keep))
    return table
