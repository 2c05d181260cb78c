"""The `worker` console script's entry point: a Ctrl-C while the worker's modules are still being
imported says "interrupted" and exits 130, like a Ctrl-C later, instead of a traceback."""

from __future__ import annotations

import sys

INTERRUPTED_EXIT = 130  # the shell's code for "stopped by Ctrl-C"


def main() -> None:
    try:
        from worker.cli import main as cli_main  # heavy: the control plane's store and lifecycle
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)
    cli_main()
