"""`coordinator study extend|cancel`: change a study after creation, recorded as an amendment.

A study's spec never changes. Extending adds search slots (the target grows) and cancelling takes
its waiting slots out of the target (running trials finish; every trial stays queryable); both
write a `study_amendments` row with the time, which `study_progress` and `trial_results` reflect.
"""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
import typer

from coordinator import db, records
from coordinator.errors import UserError
from coordinator.lifecycle import ledger
from coordinator.studies import MAX_TRIALS

study_app = typer.Typer(help="Change a study after creation: extend its target, cancel it.", no_args_is_help=True)


def locked_study(conn: sa.Connection, name: str) -> None:
    """The study's row lock (the claims' lock): no claim of it runs while its slots change."""
    t = records.study_specs
    if conn.execute(sa.select(t.c.study_name).where(t.c.study_name == name).with_for_update(key_share=True)).first() is None:
        raise UserError(f"no study named {name!r} (see `coordinator status`)")


def extend(url: str, name: str, trials: int) -> tuple[int, int]:
    """Raise the study's target to `trials`; returns (old target, slots added)."""
    engine = db.connect(url)
    try:
        db.require_writer(engine, "extend a study")
        with engine.begin() as conn:
            locked_study(conn, name)
            current = ledger.slot_count(conn, ledger.SEARCH, name)
            if trials <= current:
                raise UserError(f"study {name} already has a target of {current} trials: --trials must be larger to extend it")
            added = ledger.extend_search(conn, name, trials)
    finally:
        engine.dispose()
    return current, added


def cancel(url: str, name: str) -> int:
    engine = db.connect(url)
    try:
        db.require_writer(engine, "cancel a study")
        with engine.begin() as conn:
            locked_study(conn, name)
            return ledger.cancel_study(conn, name)
    finally:
        engine.dispose()


@study_app.command("extend")
def extend_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The study's name.")],
    trials: Annotated[int, typer.Option("--trials", min=1, max=MAX_TRIALS, help=f"The new target (more than the current one, at most {MAX_TRIALS:,}).")],
) -> None:
    """Raise a study's target trial count; recorded as an amendment, the spec is unchanged."""
    from coordinator.app import database_url

    before, added = extend(database_url(ctx), name, trials)
    typer.echo(f"study {name}: target {before} -> {trials} ({added} slots added)")


@study_app.command("cancel")
def cancel_command(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The study's name.")]) -> None:
    """Cancel a study's waiting trials (running ones finish); its trials stay queryable."""
    from coordinator.app import database_url

    cancelled = cancel(database_url(ctx), name)
    typer.echo(f"study {name}: {cancelled} waiting trial(s) cancelled")
