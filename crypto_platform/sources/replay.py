"""Replay recorded trades from files: Parquet, CSV (incl. Binance bulk dumps), ccxt trade JSON.

The format is detected from the content (magic bytes, first line), the columns from their names
(or, for header-less Binance data.binance.vision dumps, from the column count). Values are kept as
recorded; only unparseable numbers become null. The coverage is the recorded span of the file(s)
intersected with the requested window.

Nothing is dropped silently: every row of the instrument reaches raw, in the fetch whose window holds
its *placement* time, and bronze rejects with a reason what is not a valid trade. A row is placed at
its own timestamp when that is a time inside the partition grid (>= `earliest`, the universe's
start date) and not in the future (the wall clock + 1 day of clock skew); any other row (empty,
'not a time', ambiguous, a stray 1970 or far-future value) is placed with the row before it in the
file (or after it, at the start), so it lands in raw next to its neighbours and bronze rejects it
('timestamp is null' / 'timestamp outside partition window'). Its text stays in the payload.

A file without any row (empty, or a CSV header only) is refused with an error naming it, as is a
file none of whose rows has a usable time, and a CSV line with more or fewer fields than the header
(named by file and line number): such files are broken captures or downloads, never "no trades".
"""

from __future__ import annotations

import glob
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from crypto_platform import schemas
from crypto_platform.settings import Instrument
from crypto_platform.sources.base import SourceError, TradeBatch
from crypto_platform.sources.timestamps import AMBIGUOUS_DATE, timestamp_ms_expr
from crypto_platform.sources.trade_files import NO_ROWS, PAYLOAD, READERS, detect_format
from crypto_platform.timeutil import EPOCH, as_utc, epoch_ms_ceil

# Rows placed by their own time must lie in [earliest, wall clock + CLOCK_SKEW); no crypto trade
# predates the Bitcoin genesis block, the default `earliest` of a source built outside the factory.
GENESIS = datetime(2009, 1, 3, tzinfo=UTC)
CLOCK_SKEW = timedelta(days=1)

# A recording continues across a window edge if it has a trade within this time on the other side.
SESSION_GAP = timedelta(hours=2)


# Accepted column names per field, in priority order, compared lower-case without '_', '-', ' '.
# (`local_ts` of the websocket captures is the capture clock, never the exchange time.)
ALIASES: dict[str, tuple[str, ...]] = {
    "timestamp": ("tsms", "timestamp", "transacttime", "time", "tradetime", "datetime", "date", "ts"),
    "trade_id": ("tradeid", "aggtradeid", "aggregatetradeid", "id"),
    "price": ("price", "px"),
    "amount": ("amount", "qty", "quantity", "size", "baseqty"),
    "cost": ("cost", "quoteqty", "quotequantity", "quoteamount"),
    "side": ("side", "takerside"),
    "maker": ("isbuyermaker", "buyermaker", "buyerismaker"),
    "symbol": ("symbol", "market", "instrument"),
}
# Binance's one-letter wire keys (JSON records), matched case-sensitively when no long name matches.
WIRE_KEYS: dict[str, tuple[str, ...]] = {
    "timestamp": ("T",),
    "trade_id": ("a", "t"),
    "price": ("p",),
    "amount": ("q",),
    "maker": ("m",),
    "symbol": ("s",),
}
REQUIRED = ("timestamp", "trade_id", "price", "amount")
TRUE_TEXT = ("true", "1", "t", "yes", "y")
FALSE_TEXT = ("false", "0", "f", "no", "n")
PLACED = "__placed_ms"  # FileTrades.trades: the time a row is placed at (its own, or its neighbour's)


def _norm(name: str) -> str:
    """Column-name key: lower case without separators ('is_buyer_maker' == 'isBuyerMaker')."""
    return re.sub(r"[\s_\-]", "", name).lower()


def resolve_columns(columns: list[str]) -> dict[str, str]:
    """Map each field (timestamp, trade_id, ...) to the file's column holding it, by alias priority."""
    by_norm: dict[str, str] = {}
    for c in columns:
        by_norm.setdefault(_norm(c), c)
    out: dict[str, str] = {}
    for field, names in ALIASES.items():
        hit = next((by_norm[n] for n in names if n in by_norm), None)
        hit = hit or next((k for k in WIRE_KEYS.get(field, ()) if k in columns), None)
        if hit is not None:
            out[field] = hit
    return out


def side_expr(fields: dict[str, str]) -> pl.Expr:
    """Taker side: the side column as recorded, else from the maker flag (buyer maker => taker sold)."""
    if "side" in fields:
        return pl.col(fields["side"]).cast(pl.String)
    raw = pl.col(fields["maker"]).cast(pl.String)
    flag = raw.str.strip_chars().str.to_lowercase()
    return (
        pl.when(flag.is_in(TRUE_TEXT)).then(pl.lit("sell"))
        .when(flag.is_in(FALSE_TEXT)).then(pl.lit("buy"))
        .otherwise(raw)
    )  # fmt: skip


def number_expr(name: str | None) -> pl.Expr:
    """Float64 of a column as recorded; text that is not a number becomes null."""
    if name is None:
        return pl.lit(None, dtype=pl.Float64)
    return pl.col(name).cast(pl.Float64, strict=False)


def symbol_keys(instrument: Instrument) -> list[str]:
    """Spellings of the instrument in recorded files: 'BTC/USDT:USDT' ~ 'BTCUSDT', 'BTCUSD_PERP', ..."""
    pair = f"{instrument.base}{instrument.quote}".upper()
    keys = {re.sub(r"[^A-Z0-9]", "", instrument.symbol.upper()), pair, pair + "PERP"}
    if ":" in instrument.symbol and "-" in instrument.symbol.split(":")[1]:
        keys.add(pair + instrument.symbol.split("-")[-1])  # dated future 'BTC/USD:BTC-240927'
    return sorted(keys)


def _symbol_key(col: pl.Expr) -> pl.Expr:
    """Row symbol reduced to upper-case letters and digits, for matching against `symbol_keys`."""
    return col.cast(pl.String).str.to_uppercase().str.replace_all(r"[^A-Z0-9]", "")


# ---------------------------------------------------------------------------------------------------
# format detection and readers: each returns the file's original columns as a LazyFrame


# ---------------------------------------------------------------------------------------------------
# normalisation to RAW_TRADES


@dataclass(frozen=True)
class FileTrades:
    """One file's rows of an instrument placed in the window (RAW_TRADES + PLACED), and the file's
    recorded span (ms)."""

    trades: pl.DataFrame
    first_ms: int | None
    last_ms: int | None
    other_symbols: tuple[str, ...] = ()  # symbols the file holds when none is the instrument's


def load_file(
    path: Path,
    instrument: Instrument,
    lo_ms: int,
    hi_ms: int,
    received_at: datetime,
    earliest_ms: int | None = None,
) -> FileTrades:
    """Read one file: the instrument's rows placed in [lo_ms, hi_ms) (see the module doc), plus the
    recorded span of the usable timestamps."""
    raw = READERS[detect_format(path)](path)
    schema = raw.collect_schema()
    originals = [c for c in schema.names() if c != PAYLOAD]
    fields = resolve_columns(originals)
    missing = [f for f in REQUIRED if f not in fields]
    if "side" not in fields and "maker" not in fields:
        missing.append("side (or is_buyer_maker)")
    if missing:
        raise SourceError(f"replay: {path}: missing columns for {missing} (have {originals})")

    ts_col = fields["timestamp"]
    lf = raw.with_columns(timestamp_ms_expr(ts_col, schema[ts_col], path).alias("__ts"))
    if "symbol" in fields:
        lf = lf.filter(_symbol_key(pl.col(fields["symbol"])).is_in(symbol_keys(instrument)))
    lo_bound = epoch_ms_ceil(GENESIS) if earliest_ms is None else earliest_ms
    hi_bound = epoch_ms_ceil(datetime.now(UTC) + CLOCK_SKEW)  # the real clock: no trade is later
    usable = pl.col("__ts").is_between(lo_bound, hi_bound, closed="left")
    own = pl.when(usable).then(pl.col("__ts"))
    lf = lf.with_columns(own.alias("__usable"), own.forward_fill().backward_fill().alias("__at"))
    counts = raw.select(pl.len().alias("rows"))
    span = lf.select(
        pl.col("__usable").min().alias("first"),
        pl.col("__usable").max().alias("last"),
        pl.len().alias("rows"),
        pl.col("__usable").count().alias("usable"),
        pl.col(ts_col).cast(pl.String).first().alias("example"),
    )
    payload = pl.col(PAYLOAD) if PAYLOAD in schema.names() else pl.struct(originals).struct.json_encode()
    window = lf.filter((pl.col("__at") >= lo_ms) & (pl.col("__at") < hi_ms)).select(
        pl.lit(instrument.exchange).alias("exchange"),
        pl.lit(instrument.symbol).alias("symbol"),
        pl.col(fields["trade_id"]).cast(pl.String).alias("trade_id"),
        pl.col("__ts").alias("timestamp_ms"),
        number_expr(fields["price"]).alias("price"),
        number_expr(fields["amount"]).alias("amount"),
        number_expr(fields.get("cost")).alias("cost"),
        side_expr(fields).alias("side"),
        payload.alias("payload"),
        pl.lit(f"replay:{path.name}").alias("source"),
        pl.lit(received_at).cast(schemas.UTC_TS).alias("received_at"),
        pl.col("__at").alias(PLACED),
    )
    counts_df, span_df, trades = pl.collect_all([counts, span, window])
    if counts_df.item() == 0:
        raise SourceError(f"replay: {path}: {NO_ROWS}")
    first, last, rows, usable_rows, example = span_df.row(0)
    if rows and not usable_rows:  # no row can be placed in any partition: refuse rather than lose them
        why = f"not a timestamp between {from_ms(lo_bound).date()} and now"
        if re.match(AMBIGUOUS_DATE, str(example or "")):
            why = "an ambiguous day/month-order date, not a timestamp (01/02 is 1 February or 2 January)"
        raise SourceError(
            f"replay: {path}: none of the {rows} rows of {instrument.symbol} has a usable time in column "
            f"{ts_col!r}: the first value {example!r} is {why}; supported: epoch s/ms/us/ns numbers and "
            "ISO 8601 text"
        )
    others: tuple[str, ...] = ()
    if not rows and "symbol" in fields:
        found = raw.select(pl.col(fields["symbol"]).cast(pl.String).unique(maintain_order=True).head(5))
        others = tuple(str(v) for v in found.collect().to_series().to_list())
    return FileTrades(trades, first, last, others)


def from_ms(ms: int) -> datetime:
    """UTC datetime of epoch milliseconds."""
    return EPOCH + timedelta(milliseconds=ms)


class ReplaySource:
    """Recorded trades from a file or glob (Parquet, CSV, Binance bulk-dump CSV, ccxt JSON[.gz])."""

    def __init__(
        self,
        path: str | Path,
        now: Callable[[], datetime] | None = None,
        earliest: datetime | None = None,
    ) -> None:
        """`earliest`: the start of the partition grid; a row timed before it is placed with its
        neighbours (and rejected by bronze) instead of in a partition that never runs."""
        self.path = str(path)
        self._now = now or (lambda: datetime.now(UTC))
        self._earliest_ms = None if earliest is None else epoch_ms_ceil(as_utc(earliest))

    def files(self) -> list[Path]:
        """The files the path or glob names (sorted); none is an error naming the path."""
        if glob.has_magic(self.path):
            found = sorted(Path(p) for p in glob.glob(self.path, recursive=True) if Path(p).is_file())
        else:
            found = [Path(self.path)] if Path(self.path).is_file() else []
        if not found:
            raise SourceError(f"replay: no recorded trade file matches {self.path}")
        return found

    def _load(
        self, instrument: Instrument, lo_ms: int, hi_ms: int, received_at: datetime
    ) -> list[FileTrades]:
        """Every file's trades of the instrument in [lo_ms, hi_ms), with unreadable files named."""
        parts: list[FileTrades] = []
        for path in self.files():
            try:
                parts.append(load_file(path, instrument, lo_ms, hi_ms, received_at, self._earliest_ms))
            except SourceError:
                raise
            except (pl.exceptions.PolarsError, OSError, ValueError, zipfile.BadZipFile) as exc:
                raise SourceError(
                    f"replay: {path}: cannot read trades ({type(exc).__name__}: {exc})"
                ) from exc
        return parts

    def fetch(self, instrument: Instrument, start: datetime, end: datetime) -> TradeBatch:
        """Recorded trades in [start, end), covered where the recording is continuous (see below)."""
        start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
        end = end.replace(tzinfo=UTC) if end.tzinfo is None else end.astimezone(UTC)
        if end < start:
            raise SourceError(f"replay: {instrument.key}: window end {end} is before start {start}")
        lo_ms, hi_ms = epoch_ms_ceil(as_utc(start)), epoch_ms_ceil(as_utc(end))
        received_at = self._now()
        # One read for the window and the SESSION_GAP on each side (coverage looks across the edges).
        gap_ms = int(SESSION_GAP.total_seconds() * 1000)
        parts = self._load(instrument, lo_ms - gap_ms, hi_ms + gap_ms, received_at)
        others = sorted({sym for p in parts for sym in p.other_symbols})
        if others and all(p.first_ms is None for p in parts):  # trades recorded, none of this symbol
            raise SourceError(
                f"replay: {self.path}: no trades of {instrument.symbol} "
                f"(looked for {symbol_keys(instrument)}); "
                f"the file(s) hold symbols {others}"
            )
        rows = pl.concat([p.trades for p in parts])
        at, ts = pl.col(PLACED), pl.col("timestamp_ms")
        trades = rows.filter((at >= lo_ms) & (at < hi_ms))
        trades = trades.sort("timestamp_ms", maintain_order=True, nulls_last=True)
        trades = schemas.conform(trades, schemas.RAW_TRADES, name=f"raw trades (replay {self.path})")
        # Coverage: the recording vouches for a window edge only if it continues across it (a trade
        # within SESSION_GAP on the other side); otherwise it ends at the first/last recorded trade.
        # So separate sessions days apart never vouch for the days between them as empty.
        timed = rows.filter(ts == at)  # the rows placed at their own time
        before = timed.select(((ts >= lo_ms - gap_ms) & (ts < lo_ms)).any()).item()
        after = timed.select(((ts >= hi_ms) & (ts < hi_ms + gap_ms)).any()).item()
        stamps = trades.get_column("timestamp_ms").drop_nulls()
        stamps = stamps.filter((stamps >= lo_ms) & (stamps < hi_ms))
        if stamps.is_empty():
            covered = (start, end) if before and after else (start, start)
            return TradeBatch(trades, covered_from=covered[0], covered_to=covered[1])
        covered_from = start if before else max(start, from_ms(int(stamps.min())))
        covered_to = end if after else min(end, from_ms(int(stamps.max()) + 1))
        return TradeBatch(trades, covered_from=covered_from, covered_to=covered_to)
