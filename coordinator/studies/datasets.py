"""Which dataset version a command works on: always the one named, never silently the latest.

`resolve_dataset(engine, given)`: `--dataset NAME[:VERSION]` when given (NAME alone: its latest
version); else the only registered dataset version; with several registered and none given it
refuses with the list, because "the latest built" changes under a user who builds another one.
Commands that read studies (`status`, `leaderboard`, `report`...) use `select_dataset_rows`.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from coordinator.data.registry import list_datasets
from coordinator.errors import UserError
from coordinator.studies.spec import DatasetRef

ALL = "all"  # `--dataset all`: every dataset, on the commands that read studies


def parse_dataset_arg(text: str) -> tuple[str, int | None]:
    """'spy-a25' -> ('spy-a25', None); 'spy-a25:2' -> ('spy-a25', 2)."""
    name, _, version = text.partition(":")
    if not name:
        raise UserError(f"bad --dataset '{text}': expected NAME or NAME:VERSION, e.g. spy-a25:1")
    if not version:
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise UserError(f"bad --dataset '{text}': the version must be a positive integer")
    return name, int(version)


def registered(engine: sa.Engine) -> list[DatasetRef]:
    """Every registered dataset version, by name then version."""
    return [DatasetRef(r["name"], r["version"], r["sha256"]) for r in list_datasets(engine)]


def listing(refs: list[DatasetRef]) -> str:
    return ", ".join(str(r) for r in refs)


def resolve_dataset(engine: sa.Engine, given: str | None) -> DatasetRef:
    """The dataset version a command should use; UserError (with the list) when ambiguous or unknown."""
    refs = registered(engine)
    if given is None:
        if not refs:
            raise UserError("no dataset registered yet: import a series and run `coordinator data build` first")
        if len(refs) > 1:
            raise UserError(f"{len(refs)} dataset versions are registered ({listing(refs)}): choose one with --dataset NAME[:VERSION]")
        return refs[0]
    name, version = parse_dataset_arg(given)
    mine = [r for r in refs if r.name == name and (version is None or r.version == version)]
    if not mine:
        known = listing(refs) or "none yet"
        raise UserError(f"unknown dataset '{given}' (registered: {known})")
    return max(mine, key=lambda r: r.version)


def select_dataset_rows(rows: list[dict[str, Any]], given: str | None, explicit_studies: bool = False) -> list[dict[str, Any]]:
    """Rows (with dataset_name, dataset_version) of one dataset.

    `given`: NAME[:VERSION] or `all`. Without it, rows of several datasets are refused (with the
    list) unless the studies were picked explicitly by name (`explicit_studies`).
    """
    if given == ALL or (given is None and explicit_studies):
        return rows
    present = sorted({(r["dataset_name"], r["dataset_version"]) for r in rows if r.get("dataset_name") is not None})
    if given is None:
        if len(present) > 1:
            names = ", ".join(f"{n}:{v}" for n, v in present)
            raise UserError(f"these studies use {len(present)} datasets ({names}): choose one with --dataset NAME[:VERSION], or --dataset all")
        return rows
    name, version = parse_dataset_arg(given)
    chosen = [r for r in rows if r.get("dataset_name") == name and (version is None or r.get("dataset_version") == version)]
    if not chosen and rows:
        names = ", ".join(f"{n}:{v}" for n, v in present) or "none"
        raise UserError(f"no study uses dataset '{given}' (datasets in use: {names})")
    return chosen
