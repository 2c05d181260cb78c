"""The `coordinator` console script's entry point.

Importing the CLI takes seconds (SQLAlchemy, pandas, Optuna); a Ctrl-C in that time must end like a
Ctrl-C later (one line, exit 130), not with a KeyboardInterrupt traceback. So the one import that
builds the CLI happens here, inside the guard.
"""

from __future__ import annotations

import sys

INTERRUPTED_EXIT = 130  # the shell's code for "stopped by Ctrl-C"


def main() -> None:
    try:
        from coordinator.cli import main as cli_main  # heavy: the whole control plane
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)
    cli_main()
