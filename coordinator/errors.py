"""One exception type for everything a user can get wrong.

The CLI turns a UserError into a single line on stderr and a non-zero exit, never a traceback.
Raise it for bad input (files, flags, names) and unreachable services; let real bugs raise anything else.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import typer


class UserError(Exception):
    """A problem the user can fix; its message is shown as-is on one line."""

    exit_code = 2


def first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run_app(typer_app: typer.Typer, prog_name: str, argv: list[str] | None = None) -> None:
    """Run a Typer app with one-line user errors; shared by the `coordinator` and `worker` entry points."""
    command = typer.main.get_command(typer_app)
    try:
        result: Any = command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.TyperException as exc:  # bad flags, missing arguments
        print(f"error: {exc.format_message()} (see `{prog_name} --help`)", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)


def require_extra(module: str, extra: str, what: str) -> None:
    """One line naming the extra to install when an optional dependency is missing."""
    if importlib.util.find_spec(module) is None:
        raise UserError(f"{what} needs the '{extra}' extra: pip install 'scalesweep[{extra}]'")
