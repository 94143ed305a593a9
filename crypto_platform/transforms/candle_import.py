"""The pure decisions of `import_candles_job`: which instants, which files, which bars, what a day keeps.

Reading and conforming a single OHLCV file is `transforms.ohlcv_import`; this module validates that
bars fit silver/candles_1m (1-minute, on the UTC minute grid), merges several files, and decides per
UTC day what an import writes next to the bars a partition already holds. No Dagster, no lake.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

from crypto_platform import tables
from crypto_platform.settings import PROJECT_DIR, Instrument
from crypto_platform.transforms.ohlcv_import import fill_missing_bars, from_ccxt_ohlcv, read_ohlcv

MINUTE = timedelta(minutes=1)
TRADES_ORIGIN = "trades"  # origin of silver bars built from trades (the better source)
TABLE = tables.CANDLES_1M


class ImportCandlesError(ValueError):
    """The import cannot run as configured; the message names the instrument, source and the fix."""


def parse_instant(text: str, what: str) -> datetime | None:
    """'' -> None; 'YYYY-MM-DD' -> that midnight UTC; ISO datetime (naive = UTC) -> UTC."""
    text = text.strip()
    if not text:
        return None
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ImportCandlesError(f"{what} {text!r} is not YYYY-MM-DD or an ISO datetime") from exc
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def resolve_paths(pattern: str) -> list[Path]:
    """Files matching a path or glob (relative to the project folder), sorted; none is an error."""
    p = Path(pattern).expanduser()
    full = p if p.is_absolute() else PROJECT_DIR / p
    files = sorted(Path(f) for f in glob.glob(str(full)) if Path(f).is_file())
    if not files:
        raise ImportCandlesError(f"no OHLCV file matches {pattern!r} (resolved: {full})")
    return files


def check_minute_bars(df: pl.DataFrame, where: str) -> None:
    """silver/candles_1m holds 1-minute bars on the UTC minute grid, nothing else."""
    ts = df.get_column("ts").sort()
    off = ts.filter(ts.dt.truncate("1m") != ts)
    if len(off):
        raise ImportCandlesError(f"{where}: bar time {off[0]} is not on a whole UTC minute")
    steps = ts.diff().drop_nulls()
    step = steps.min() if len(steps) else MINUTE
    if step != MINUTE:
        raise ImportCandlesError(
            f"{where}: bars are {step} apart; {TABLE} only takes 1-minute bars "
            "(import a 1-minute export, or the exchange's 1m OHLCV through ccxt)"
        )


def read_candle_files(inst: Instrument, paths: list[Path], fmt: str, volume_unit: str) -> pl.DataFrame:
    """CANDLES of one instrument from OHLCV files; absent minutes filled inside each file's own span."""
    frames = []
    for path in paths:
        try:
            raw = read_ohlcv(
                path,
                exchange=inst.exchange,
                symbol=inst.symbol,
                fmt=fmt,  # type: ignore[arg-type]
                volume_unit=volume_unit,  # type: ignore[arg-type]
                fill_gaps=False,
            )
        except ValueError as exc:
            raise ImportCandlesError(str(exc)) from exc
        check_minute_bars(raw, str(path))
        frames.append(fill_missing_bars(raw, MINUTE))  # only within this file: between files is unknown
    return merge_sources(frames, ", ".join(p.name for p in paths))


def merge_sources(frames: list[pl.DataFrame], where: str) -> pl.DataFrame:
    """Concatenate per-file bars; identical bars in several files are kept once, conflicting ones fail."""
    df = pl.concat(frames, how="vertical").sort("ts")
    values = [c for c in df.columns if c != "origin"]
    df = df.unique(subset=values, keep="first", maintain_order=True)
    dupes = df.filter(pl.col("ts").is_duplicated())
    if dupes.height:
        first = dupes.sort("ts").head(2).select("ts", "origin", "open", "close", "volume").rows()
        raise ImportCandlesError(f"{where}: {dupes.height} bars overlap with different values, e.g. {first}")
    return df


def ccxt_candles(inst: Instrument, rows: Sequence[Sequence], since: datetime, end: datetime) -> pl.DataFrame:
    """CANDLES (origin 'import:ccxt', absent minutes as empty bars) from ccxt 1-minute OHLCV rows."""
    if not rows:
        raise ImportCandlesError(f"ccxt {inst.exchange} {inst.symbol}: no 1-minute bars in [{since}, {end})")
    try:
        return from_ccxt_ohlcv(
            [list(r) for r in rows],
            exchange=inst.exchange,
            symbol=inst.symbol,
            timeframe="1m",
            fill_gaps=True,
        )
    except ValueError as exc:
        raise ImportCandlesError(str(exc)) from exc


def outside_grid(day: date, first_day: date, last_day: date) -> str | None:
    """Why a day is not written (outside the partitions [first_day, last_day]); None when it is."""
    if first_day <= day <= last_day:
        return None
    return f"skipped: outside the partitions ({first_day} .. {last_day})"


def require_days_in_grid(
    inst: Instrument, candles: pl.DataFrame, first_day: date, last_day: date, where: str
) -> None:
    """Fail when no day of the bars is inside the partition grid (the import would write nothing)."""
    first, last = candles["ts"].min().date(), candles["ts"].max().date()  # type: ignore[union-attr]
    if last < first_day or first > last_day:
        raise ImportCandlesError(
            f"import_candles {inst.key}: every day of the bars ({first} .. {last}) is outside the "
            f"partitions ({first_day} .. {last_day}), so nothing would be written. Set "
            f"start_date to {first} or earlier in the instruments file ({where}); the "
            "partition grid starts there."
        )


def merge_day(
    existing: pl.DataFrame | None, bars: pl.DataFrame, *, overwrite_trades: bool
) -> tuple[pl.DataFrame | None, str]:
    """(what one partition holds after importing `bars`, status). The partition's bars outside the
    imported span are kept ('merged'; 'replaced' when none are; 'written' when it was empty); bars
    built from trades are never replaced unless `overwrite_trades` (then None and a 'skipped' status)."""
    if existing is None or not existing.height:
        return bars, "written"
    from_trades = existing.filter(pl.col("origin") == TRADES_ORIGIN).height
    if from_trades and not overwrite_trades:
        return None, f"skipped: {from_trades} bars built from trades kept (overwrite_trades is off)"
    lo, hi = bars["ts"].min(), bars["ts"].max()
    kept = existing.filter((pl.col("ts") < lo) | (pl.col("ts") > hi)).select(bars.columns)
    merged = pl.concat([kept, bars], how="vertical").sort("ts")
    return merged, "merged" if kept.height else "replaced"
