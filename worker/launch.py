"""The `worker` console script's entry point: the worker's CLI is imported inside `errors.guarded`, so
a Ctrl-C in the seconds that import takes says "interrupted" and exits 130 instead of a traceback."""

from __future__ import annotations

from collections.abc import Callable

from coordinator.errors import guarded


def load_cli() -> Callable[[], None]:
    from worker.cli import main  # heavy: the control plane's store and lifecycle

    return main


def main() -> None:
    guarded(load_cli)
