"""The thin command modules of `coordinator` (wired together in coordinator/cli.py).

Each module parses flags with typer, calls the concern that does the work, and prints. `kit` is
what they share: the global options, the resolved database URL, output formats and progress bars.
Commands may import every layer below them; nothing below imports a command module.
"""
