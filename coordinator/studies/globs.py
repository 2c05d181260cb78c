"""Choosing studies by name: `--studies '*-h1,*-h5'` (comma-separated globs) everywhere it exists."""

from __future__ import annotations

import fnmatch

from coordinator.errors import UserError


def split_globs(text: str | None) -> list[str] | None:
    """'*-h1, *-h5' -> ['*-h1', '*-h5']; None for no filter. An empty list is refused."""
    if text is None:
        return None
    globs = [g.strip() for g in text.split(",") if g.strip()]
    if not globs:
        raise UserError(f"bad --studies '{text}': expected one or more comma-separated globs, e.g. '*-h1,*-h5'")
    return globs


def matches(name: str, globs: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, g) for g in globs)
