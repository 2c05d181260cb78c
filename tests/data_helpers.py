"""Helpers shared by the data-layer tests (test_data_*.py)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`coordinator ARGS...` in-process: (exit code, stdout, stderr)."""
    from coordinator.cli import main

    capsys.readouterr()  # drop anything printed before
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    code = exit_info.value.code
    return (0 if code is None else int(code)), captured.out, captured.err


def count_rows(url: str, table: str) -> int:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()
