"""Terminal tables that fit the terminal by choosing columns.

At 80 columns a table keeps what identifies a row (a study's name, a dataset's name and version)
and the numbers most asked for; the rest is left out whole and named in the title. Names and
numbers are never cut short ("spy…" identifies nothing), and `--format csv` always has every column.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

PIPED_WIDTH = 220  # piped without $COLUMNS (a log file): wide enough that every column stays


@dataclass(frozen=True)
class Column:
    """A table column: `keep` orders who stays when the terminal is narrow (0: always, higher: left out sooner)."""

    label: str
    keep: int
    justify: str = "right"


def terminal_console() -> Console:
    """The terminal's width ($COLUMNS when set, as rich reads it); piped without $COLUMNS, wide."""
    terminal = Console()
    return terminal if terminal.is_terminal or os.environ.get("COLUMNS") else Console(width=PIPED_WIDTH)


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
