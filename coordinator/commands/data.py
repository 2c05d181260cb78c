"""`coordinator data ...`: raw series in (import, fetch, synth), datasets built and listed."""

from __future__ import annotations

import csv
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Optional

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table

from coordinator.commands.kit import OutputFormat, open_engine, progress_bar
from coordinator.data import features, registry, series
from coordinator.data.labels import THRESHOLD, positive_rate, threshold_label
from coordinator.data.synth import synthetic_series
from coordinator.errors import UserError, require_extra

SUMMARY_HORIZONS = (1, 3, 5)

data_app = typer.Typer(help="Data: import, fetch or synthesise raw series; build and list datasets.", no_args_is_help=True)

RepairOhlc = Annotated[
    bool, typer.Option("--repair-ohlc", help="Widen High/Low to the Open/Close envelope where they are inconsistent.")
]


def engine_for(ctx: typer.Context) -> sa.Engine:
    return open_engine(ctx)


# Tier names exactly as `data list` prints them: the feature tier, with `-vix8` when VIX joins it.
Tier = StrEnum("Tier", {name: name for tier in features.TIERS for name in (tier, f"{tier}-vix8")})


def short(sha: str) -> str:
    return sha[:12]


def report_series(entry: registry.SeriesVersion, bars: series.Bars) -> None:
    frame = bars.frame
    if not entry.created:
        typer.echo(
            f"unchanged: {entry.symbol} v{entry.version} already holds this content (sha256 {short(entry.sha256)}); "
            "nothing registered"
        )
        return
    volume = "with volume" if bars.has_volume else "no volume"
    typer.echo(
        f"registered {entry.symbol} v{entry.version}: {len(frame)} rows, {frame.index[0].date()} .. "
        f"{frame.index[-1].date()}, {volume}, {bars.repaired_rows} repaired rows, sha256 {short(entry.sha256)}"
    )


@data_app.command("import")
def import_command(
    ctx: typer.Context,
    symbol: Annotated[str, typer.Argument(help="Symbol to register the series under, e.g. SPY.")],
    file: Annotated[Path, typer.Argument(help="CSV or parquet file of daily bars.")],
    repair_ohlc: RepairOhlc = False,
) -> None:
    """Import daily bars from a CSV or parquet file (Yahoo, CBOE or pandas layout, any header case)."""
    symbol = registry.normalise_symbol(symbol)
    bars = series.read_bars(file, repair_ohlc=repair_ohlc)
    for note in bars.notes:
        typer.echo(f"note: {note}")
    engine = engine_for(ctx)
    try:
        report_series(registry.register_series(engine, symbol, bars, source=str(file.resolve())), bars)
    finally:
        engine.dispose()


@data_app.command("fetch")
def fetch_command(
    ctx: typer.Context,
    symbols: Annotated[list[str], typer.Argument(help="Yahoo symbols, e.g. SPY ^VIX.")],
    repair_ohlc: RepairOhlc = False,
) -> None:
    """Download full daily histories with yfinance; registers nothing unless every download works."""
    require_extra("yfinance", "fetch", "`data fetch`")
    fetched = [(registry.normalise_symbol(s), series.fetch_bars(s, repair_ohlc=repair_ohlc)) for s in symbols]
    engine = engine_for(ctx)
    try:
        for symbol, bars in fetched:
            for note in bars.notes:
                typer.echo(f"note: {symbol}: {note}")
            report_series(registry.register_series(engine, symbol, bars, source="yfinance"), bars)
    finally:
        engine.dispose()


@data_app.command("synth")
def synth_command(
    ctx: typer.Context,
    symbol: Annotated[str, typer.Argument(help="Symbol to register the synthetic series under.")],
    days: Annotated[int, typer.Option("--days", min=300, max=100_000, help="Number of business days (300..100000).")] = 2500,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same bars.")] = 0,
) -> None:
    """Register a seeded synthetic market (GARCH volatility clustering, OHLCV)."""
    symbol = registry.normalise_symbol(symbol)
    bars = synthetic_series(days, seed)
    engine = engine_for(ctx)
    try:
        report_series(registry.register_series(engine, symbol, bars, source=f"synth seed={seed} days={days}"), bars)
    finally:
        engine.dispose()


@data_app.command("build")
def build_command(
    ctx: typer.Context,
    symbol: Annotated[str, typer.Option("--symbol", help="Main series, e.g. SPY.")],
    vix: Annotated[Optional[str], typer.Option("--vix", help="VIX series to add tier vix8, e.g. VIX.")] = None,
    tier: Annotated[Optional[Tier], typer.Option("--tier", help="Feature tier as `data list` shows it; a -vix8 tier needs --vix (default VIX).")] = None,
) -> None:
    """Compute features from the latest series versions and register a dataset version."""
    base, with_vix = tier_parts(tier.value if tier is not None else None, vix)
    if with_vix and vix is None:
        vix = "VIX"
    engine = engine_for(ctx)
    try:
        with progress_bar() as bar:
            task = bar.add_task(f"building {symbol.upper()} {base}{'-vix8' if with_vix else ''}", total=1)
            dataset, created = registry.build_dataset(engine, symbol, vix=vix, tier=base)
            bar.advance(task)
    finally:
        engine.dispose()
    print_dataset_summary(dataset, created)


def tier_parts(tier: str | None, vix: str | None) -> tuple[str, bool]:
    """('a25-vix8', None) -> ('a25', True); ('a25', 'VIX') is refused: the names must agree."""
    if tier is None:
        return features.TIERS[0], vix is not None
    base, _, extra = tier.partition("-")
    with_vix = extra == "vix8"
    if vix is not None and not with_vix:
        raise UserError(f"--tier {tier} has no VIX features: use --tier {base}-vix8 with --vix {vix}")
    return base, with_vix


def print_dataset_summary(dataset: registry.Dataset, created: bool) -> None:
    frame = dataset.frame
    status = "registered" if created else "unchanged (same sources and content; nothing registered):"
    typer.echo(f"{status} dataset {dataset.name} v{dataset.version}, sha256 {short(dataset.sha256)}")
    sources = ", ".join(f"{s['symbol']} v{s['version']} ({short(s['sha256'])})" for s in dataset.meta["sources"])
    typer.echo(f"  sources  {sources}")
    dropped = dataset.meta.get("warmup_rows_dropped", 0)
    gaps = dataset.meta.get("gap_rows_dropped", 0)
    typer.echo(
        f"  rows     {len(frame)} ({frame.index[0].date()} .. {frame.index[-1].date()}); "
        f"dropped {dropped} warm-up rows and {gaps} gap rows"
    )
    typer.echo(f"  columns  {len(dataset.input_columns)}: {', '.join(dataset.input_columns)}")
    close, high = frame["close"].to_numpy(), frame["high"].to_numpy()
    rates = "  ".join(
        f"H={h} {positive_rate(threshold_label(close, high, h, THRESHOLD)):.1%}" for h in SUMMARY_HORIZONS
    )
    typer.echo(f"  labels   positive rate at threshold {THRESHOLD:.0%}: {rates}")


@data_app.command("list")
def list_command(
    ctx: typer.Context,
    format: Annotated[OutputFormat, typer.Option("--format", help="table for people; csv or json for programs.")] = OutputFormat.table,
) -> None:
    """Show registered series and datasets."""
    engine = engine_for(ctx)
    try:
        all_series = registry.list_series(engine)
        all_datasets = registry.list_datasets(engine)
    finally:
        engine.dispose()
    if format == OutputFormat.json:
        typer.echo(json.dumps({"series": [plain(s) for s in all_series], "datasets": [plain(d) for d in all_datasets]}, indent=2))
        return
    if format == OutputFormat.csv:
        # One table per call keeps CSV rectangular: the datasets (what commands take as --dataset).

        columns = ["name", "version", "tier", "rows", "start_date", "end_date", "sha256", "sources", "created_at"]
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for d in all_datasets:
            writer.writerow({**plain(d), "sources": " ".join(f"{x['symbol']}:{x['version']}" for x in d["sources"])})
        return
    console = Console() if Console().is_terminal else Console(width=160)  # pipes and logs get full rows
    table = Table(title="series")
    for column in ("symbol", "version", "rows", "from", "to", "volume", "repaired", "sha256", "source", "created"):
        table.add_column(column, no_wrap=True)
    for s in all_series:
        table.add_row(
            s["symbol"], str(s["version"]), str(s["rows"]), str(s["start_date"]), str(s["end_date"]),
            "yes" if s["has_volume"] else "no", str(s["repaired_rows"]), short(s["sha256"]), Path(s["source"]).name,
            f"{s['created_at']:%Y-%m-%d %H:%M}",
        )  # fmt: skip
    console.print(table)
    table = Table(title="datasets")
    for column in ("name", "version", "tier", "rows", "from", "to", "columns", "sha256", "sources", "created"):
        table.add_column(column, no_wrap=True)
    for d in all_datasets:
        sources = ", ".join(f"{s['symbol']} v{s['version']}" for s in d["sources"])
        table.add_row(
            d["name"], str(d["version"]), d["tier"], str(d["rows"]), str(d["start_date"]), str(d["end_date"]),
            str(len(d["input_columns"])), short(d["sha256"]), sources, f"{d['created_at']:%Y-%m-%d %H:%M}",
        )  # fmt: skip
    console.print(table)
    if not all_series:
        typer.echo("nothing registered yet: start with `coordinator data import SYMBOL FILE`")


def plain(row: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready values (dates as ISO strings)."""
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
