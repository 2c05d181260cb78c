"""Versioned raw series and datasets, with their content, in PostgreSQL.

A version is immutable. Registering content that equals the latest version of the same symbol (or
dataset name, built from the same source series) returns that version and writes nothing; any
other content becomes version latest + 1. Content is stored as parquet bytes; `sha256` is taken
over a canonical byte form (series.content_sha256), so it is stable across runs and library
versions, and it is checked again on every load. A worker therefore needs only the database URL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from coordinator.data import features
from coordinator.data.series import Bars, content_sha256, from_parquet_bytes, read_bars, to_parquet_bytes
from coordinator.errors import UserError
from coordinator.store.tables import datasets_table, series_table


@dataclass(frozen=True)
class SeriesVersion:
    id: int
    symbol: str
    version: int
    sha256: str
    frame: pd.DataFrame
    created: bool = False  # True when this call registered it


@dataclass(frozen=True)
class Dataset:
    name: str
    version: int
    sha256: str
    frame: pd.DataFrame  # DatetimeIndex `date`; raw OHLCV and feature columns, float64
    input_columns: list[str]
    meta: dict = field(default_factory=dict)


def normalise_symbol(symbol: str) -> str:
    clean = symbol.strip().upper()
    if not clean or not all(ch.isalnum() or ch in "^.-=_" for ch in clean):
        raise UserError(f"bad symbol {symbol!r}: letters, digits and ^ . - = _ only")
    return clean


def lock(conn: sa.Connection, key: str) -> None:
    """Serialise writers of one symbol or dataset name until the transaction ends."""
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"scalesweep.data.{key}"})


def missing_tables_hint(exc: sa.exc.ProgrammingError) -> UserError:
    return UserError(f"the data tables are missing: run `coordinator db init` first ({exc.orig.__class__.__name__})")


def newest_version(
    conn: sa.Connection, lock_key: str, table: sa.Table, where: sa.ColumnElement[bool], *columns: sa.Column
) -> tuple[sa.Row | None, int]:
    """The newest version's row under `where` (None when there is none) and the number the next one gets.

    Versions are immutable: the caller reuses the newest when its content is the same, else stores
    the next. The lock on `lock_key` (held to the end of the transaction) keeps two writers from
    taking the same number."""
    lock(conn, lock_key)
    latest = conn.execute(sa.select(table.c.version, *columns).where(where).order_by(table.c.version.desc()).limit(1)).first()
    return latest, 1 if latest is None else latest.version + 1


def register_series(engine: sa.Engine, symbol: str, bars: Bars, source: str) -> SeriesVersion:
    """Store bars as the next version of `symbol`, unless they equal its latest version."""
    symbol = normalise_symbol(symbol)
    frame = bars.frame
    sha = content_sha256(frame)
    t = series_table
    try:
        with engine.begin() as conn:
            latest, version = newest_version(conn, f"series.{symbol}", t, t.c.symbol == symbol, t.c.id, t.c.sha256)
            if latest is not None and latest.sha256 == sha:
                return SeriesVersion(latest.id, symbol, latest.version, sha, frame, created=False)
            new_id = conn.execute(
                t.insert()
                .values(
                    symbol=symbol,
                    version=version,
                    sha256=sha,
                    rows=len(frame),
                    start_date=frame.index[0].date(),
                    end_date=frame.index[-1].date(),
                    source=source,
                    has_volume=bars.has_volume,
                    repaired_rows=bars.repaired_rows,
                    content=to_parquet_bytes(frame),
                )
                .returning(t.c.id)
            ).scalar_one()
    except sa.exc.ProgrammingError as exc:
        raise missing_tables_hint(exc) from None
    return SeriesVersion(new_id, symbol, version, sha, frame, created=True)


def latest_series(engine: sa.Engine, symbol: str) -> SeriesVersion:
    """The latest version of a symbol, its hash verified."""
    symbol = normalise_symbol(symbol)
    t = series_table
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.select(t).where(t.c.symbol == symbol).order_by(t.c.version.desc()).limit(1)
            ).first()
    except sa.exc.ProgrammingError as exc:
        raise missing_tables_hint(exc) from None
    if row is None:
        raise UserError(f"no series {symbol!r} registered: import it first (coordinator data import {symbol} FILE)")
    frame = from_parquet_bytes(row.content)
    verify(frame, row.sha256, f"series {symbol} v{row.version}")
    return SeriesVersion(row.id, symbol, row.version, row.sha256, frame)


def verify(frame: pd.DataFrame, expected: str, what: str) -> None:
    actual = content_sha256(frame)
    if actual != expected:
        raise UserError(f"{what}: stored content does not match its sha256 ({actual[:12]} != {expected[:12]})")


def dataset_name(symbol: str, tier: str, with_vix: bool) -> str:
    return f"{symbol.lower()}-{tier}" + ("-vix8" if with_vix else "")


def source_entry(role: str, series: SeriesVersion) -> dict:
    return {"role": role, "symbol": series.symbol, "version": series.version, "sha256": series.sha256, "series_id": series.id}


def compute_dataset_frame(main: pd.DataFrame, tier: str, vix: pd.DataFrame | None) -> tuple[pd.DataFrame, dict]:
    """Features on every day, minus the leading warm-up rows and any later row with a gap.

    Later gaps only come from VIX days missing for more than one day; they are counted, not hidden.
    """
    full = features.compute_features(main, tier=tier, vix=vix)
    complete = np.isfinite(full.to_numpy()).all(axis=1)
    if not complete.any():
        raise UserError(f"no day has every {tier} feature: the series is shorter than the warm-up (SMA 200)")
    first = int(np.argmax(complete))
    kept = full.iloc[first:][complete[first:]]
    info = {"warmup_rows_dropped": first, "gap_rows_dropped": int((~complete[first:]).sum())}
    return kept, info


def dataset_from_file(path: str | Path, tier: str = "a25") -> Dataset:
    """A dataset built straight from one bars file, never registered (benchmarks and tests).

    Its sha256 is the real content hash, so it compares equal to the registered build of the same file.
    """
    bars = read_bars(Path(path))
    frame, info = compute_dataset_frame(bars.frame, tier, None)
    name = dataset_name(Path(path).stem, tier, with_vix=False)
    return Dataset(name, 0, content_sha256(frame), frame, [str(c) for c in frame.columns], info)


def build_dataset(engine: sa.Engine, symbol: str, vix: str | None = None, tier: str = "a25") -> tuple[Dataset, bool]:
    """Features from the latest version of each series, registered as a dataset version.

    Returns the dataset and whether this call created a new version.
    """
    if tier not in features.TIERS:
        raise UserError(f"unknown tier {tier!r}: choose from {', '.join(features.TIERS)}")
    main = latest_series(engine, symbol)
    if "volume" not in main.frame.columns:
        raise UserError(f"tier {tier} needs volume, and series {main.symbol} v{main.version} has none")
    sources = [source_entry("main", main)]
    vix_frame = None
    if vix is not None:
        vix_series = latest_series(engine, vix)
        sources.append(source_entry("vix", vix_series))
        vix_frame = vix_series.frame
    frame, info = compute_dataset_frame(main.frame, tier, vix_frame)
    name = dataset_name(main.symbol, tier, vix is not None)
    meta = {
        "tier": tier + ("-vix8" if vix is not None else ""),
        "features_version": features.FEATURES_VERSION,
        "sources": sources,
        **info,
    }
    return register_dataset(engine, name, frame, meta)


def register_dataset(engine: sa.Engine, name: str, frame: pd.DataFrame, meta: dict) -> tuple[Dataset, bool]:
    sha = content_sha256(frame)
    columns = [str(c) for c in frame.columns]
    t = datasets_table
    with engine.begin() as conn:
        latest, version = newest_version(conn, f"dataset.{name}", t, t.c.name == name, t.c.sha256, t.c.sources, t.c.meta, t.c.created_at)
        if latest is not None and latest.sha256 == sha and latest.sources == meta["sources"]:
            stored_meta = {**latest.meta, "created_at": latest.created_at.isoformat()}
            return Dataset(name, latest.version, sha, frame, columns, stored_meta), False
        created_at = conn.execute(
            t.insert()
            .values(
                name=name,
                version=version,
                sha256=sha,
                tier=meta["tier"],
                rows=len(frame),
                start_date=frame.index[0].date(),
                end_date=frame.index[-1].date(),
                input_columns=columns,
                sources=meta["sources"],
                meta=meta,
                content=to_parquet_bytes(frame),
            )
            .returning(t.c.created_at)
        ).scalar_one()
    return Dataset(name, version, sha, frame, columns, {**meta, "created_at": created_at.isoformat()}), True


def load_dataset(engine: sa.Engine, name: str, version: int | None = None) -> Dataset:
    """A registered dataset version (the latest when version is None), its sha256 verified."""
    t = datasets_table
    query = sa.select(t).where(t.c.name == name)
    query = query.order_by(t.c.version.desc()).limit(1) if version is None else query.where(t.c.version == version)
    try:
        with engine.connect() as conn:
            row = conn.execute(query).first()
            if row is None:
                latest = conn.execute(sa.select(sa.func.max(t.c.version)).where(t.c.name == name)).scalar()
                names = conn.execute(sa.select(t.c.name).distinct().order_by(t.c.name)).scalars().all()
    except sa.exc.ProgrammingError as exc:
        raise missing_tables_hint(exc) from None
    if row is None:
        if latest is None:
            known = ", ".join(names) or "none yet"
            raise UserError(f"unknown dataset {name!r} (registered: {known}; build one with `coordinator data build`)")
        raise UserError(f"dataset {name!r} has no version {version} (latest is {latest})")
    frame = from_parquet_bytes(row.content)
    verify(frame, row.sha256, f"dataset {name} v{row.version}")
    if list(frame.columns) != list(row.input_columns):
        raise UserError(f"dataset {name} v{row.version}: stored columns differ from its registered column list")
    meta = {**row.meta, "created_at": row.created_at.isoformat()}
    return Dataset(row.name, row.version, row.sha256, frame, list(row.input_columns), meta)


def list_series(engine: sa.Engine) -> list[dict]:
    t = series_table
    columns = [c for c in t.c if c.name != "content"]
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(*columns).order_by(t.c.symbol, t.c.version)).mappings().all()
    except sa.exc.ProgrammingError as exc:
        raise missing_tables_hint(exc) from None
    return [dict(r) for r in rows]


def list_datasets(engine: sa.Engine) -> list[dict]:
    t = datasets_table
    columns = [c for c in t.c if c.name not in ("content", "meta")]
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(*columns).order_by(t.c.name, t.c.version)).mappings().all()
    except sa.exc.ProgrammingError as exc:
        raise missing_tables_hint(exc) from None
    return [dict(r) for r in rows]
