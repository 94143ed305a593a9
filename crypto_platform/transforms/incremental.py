"""An open day's derived partitions extended by the trades of one tick, equal to deriving it anew.

A live tick commits one more raw batch. Instead of deriving the whole day again, bronze takes only
the new batches through `to_bronze` and merges them into the stored bronze (`merge_bronze`), and the
1-minute candles are recomputed only from the first minute the new trades touch (`splice_candles`),
features from the first minute whose candles (own or a peer's) changed (`features_restart`,
`features_tail`). Each result equals the from-scratch derivation exactly (rows, order, dtypes);
where that cannot be guaranteed cheaply the functions return None and the caller derives from
scratch (a conflicting repeat of a stored trade, another instrument's trades, a stored partition of
another lineage: `candles_restart`).

Why bronze merges exactly: validation is row by row over a fixed window, so the rows of the new
batches are rejected for the same reasons; a new row repeating a stored trade with equal traded values
is the later raw row of an identical repeat, which `to_bronze` drops (the first raw row wins); the
rejects stay in raw row order because every new row comes after every stored one; and bronze is in
(ts, natural trade id) order with unique ids, a total order, so inserting the new trades in it gives
the order `to_bronze` sorts to. Candles: a minute's bar depends only on its own trades, and an empty
minute on the close before it, so the bars before the first touched minute are unchanged. Features:
each one is a function of the LOOKBACK_MINUTES before its minute, bit for bit (transforms/features.py
sums every window by itself), so rows before the first changed minute are unchanged too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from crypto_platform.lineage import Lineage
from crypto_platform.schemas import KEYS
from crypto_platform.timeutil import floor_minute
from crypto_platform.transforms.candles import candles_1m
from crypto_platform.transforms.features import LOOKBACK_MINUTES, segmented_features
from crypto_platform.transforms.trades import CONFLICTING_DUPLICATE, IDENTITY, BronzeResult, natural_order

# Bronze columns that must agree for a re-sent trade to be the stored one (TRADE_VALUES, as typed).
BRONZE_VALUES = ("ts", "price", "amount", "side")


@dataclass(frozen=True)
class BronzeMerge:
    """Stored bronze + rejects extended by one tick's raw rows."""

    bronze: pl.DataFrame
    rejects: pl.DataFrame
    added: int  # trades new to bronze
    repeats_dropped: int  # new valid rows identical to a stored trade (re-sent by the overlap re-read)
    changed_from: datetime | None  # earliest ts of an added trade (None: bronze unchanged)


def insert_in_order(stored: pl.DataFrame, rows: pl.DataFrame) -> pl.DataFrame:
    """`rows` inserted into `stored`, both in (ts, natural trade id) order: only the stored rows from
    the first new instant on are re-sorted (the tail a tick's overlap re-read reaches)."""
    if rows.is_empty():
        return stored
    cut = stored.get_column("ts").search_sorted(rows.get_column("ts").min(), side="left")
    tail = pl.concat([stored.slice(cut), rows], how="vertical").sort(pl.col("ts"), *natural_order())
    return pl.concat([stored.slice(0, cut), tail], how="vertical")


@dataclass(frozen=True)
class BronzeDelta:
    """What one tick adds to an open day's bronze and rejects, exactly as a derivation from scratch
    would have them: the trades new to bronze (in order), the tick's rejects (raw row order)."""

    bronze: pl.DataFrame
    rejects: pl.DataFrame
    repeats_dropped: int  # new rows identical to a trade (re-sent by the overlap re-read)
    changed_from: datetime | None  # earliest ts of an added trade (None: bronze unchanged)


def probe_ids(new: BronzeResult) -> pl.DataFrame:
    """The identities of a tick's rows to look up among the stored trades and conflicts (its valid
    trades and its conflicting duplicates): all that `bronze_delta` needs of the stored day."""
    conflicting_new = new.rejects.filter(pl.col("reason") == CONFLICTING_DUPLICATE).select(IDENTITY)
    return pl.concat([new.bronze.select(IDENTITY), conflicting_new], how="vertical")


def id_probe(wanted: pl.Series, column: str = "trade_id") -> pl.Expr:
    """The filter finding stored rows whose id is in `wanted` (not empty) exactly, written so a Parquet
    scan skips the row groups whose id range (column statistics) cannot hold one of them."""
    tid = pl.col(column)
    return tid.is_between(pl.lit(wanted.min()), pl.lit(wanted.max())) & tid.is_in(wanted.implode())


def bronze_delta(
    hits: pl.DataFrame, stored_conflicts: pl.DataFrame, new: BronzeResult, *, exchange: str, symbol: str
) -> BronzeDelta | None:
    """A tick's `to_bronze` result as a delta on the stored day (None: derive from scratch), given only
    `hits`, the stored trades (IDENTITY + BRONZE_VALUES) whose identity is among `probe_ids(new)`, and
    `stored_conflicts`, the identities stored as conflicting duplicates (at least those among them).

    None when a new row shares a trade id with a stored trade but not its traded values, repeats a
    trade already rejected as a conflicting duplicate, or belongs to another instrument: those move
    stored rows between bronze and rejects, which only a derivation from scratch orders exactly.
    """
    added = new.bronze
    mine = (pl.col("exchange") == exchange) & (pl.col("symbol") == symbol)
    if added.height and not added.select(mine.all()).item():
        return None
    ids = probe_ids(new)
    if ids.is_empty():
        return BronzeDelta(added, new.rejects, new.duplicates_dropped, None)
    if stored_conflicts.height and ids.join(stored_conflicts, on=list(IDENTITY), how="semi").height:
        return None
    hits = hits.join(ids.unique(), on=list(IDENTITY), how="semi")
    conflicting_new = new.rejects.filter(pl.col("reason") == CONFLICTING_DUPLICATE).select(IDENTITY)
    if hits.height and conflicting_new.join(hits, on=list(IDENTITY), how="semi").height:
        return None
    repeats = added.join(hits, on=list(IDENTITY), how="inner", suffix="_stored")
    same = pl.all_horizontal(pl.col(c) == pl.col(f"{c}_stored") for c in BRONZE_VALUES)
    if repeats.height and not repeats.select(same.all()).item():
        return None
    fresh = added.join(hits.select(IDENTITY), on=list(IDENTITY), how="anti", maintain_order="left")
    changed = fresh.get_column("ts").min() if fresh.height else None
    return BronzeDelta(fresh, new.rejects, new.duplicates_dropped + repeats.height, changed)


def merge_bronze(
    stored: pl.DataFrame, stored_rejects: pl.DataFrame, new: BronzeResult, *, exchange: str, symbol: str
) -> BronzeMerge | None:
    """Stored bronze/rejects + `to_bronze` of the batches committed since (None: derive from scratch,
    see `bronze_delta`), as one table each in from-scratch order."""
    ids = probe_ids(new).get_column("trade_id")
    hits = stored.filter(pl.col("trade_id").is_in(ids.implode()))
    conflicts = stored_rejects.filter(pl.col("reason") == CONFLICTING_DUPLICATE).select(IDENTITY)
    delta = bronze_delta(hits, conflicts, new, exchange=exchange, symbol=symbol)
    if delta is None:
        return None
    bronze = insert_in_order(stored, delta.bronze)
    rejects = pl.concat([stored_rejects, delta.rejects], how="vertical")
    return BronzeMerge(bronze, rejects, delta.bronze.height, delta.repeats_dropped, delta.changed_from)


BRONZE_INPUT = "bronze"  # the name candles record their bronze's id under (Lineage.inputs)


def restart_after(seen: str | None, current: Lineage) -> datetime | bool | None:
    """How an input changed since a partition was computed from the version with id `seen`: False
    when it is that version, the instant its rows changed from when it extended that version, True
    when it cannot tell (derived from scratch since, or extended more than once)."""
    if seen is not None and seen == current.id:
        return False
    if seen is not None and current.base == seen and current.changed_from is not None and current.current:
        return current.changed_from
    return True


def candles_restart(
    stored: Lineage | None, bronze: Lineage | None, start: datetime, end: datetime
) -> datetime | None:
    """First minute the stored 1-minute candles must be recomputed from on top of `bronze`, or None
    when they cannot be extended (not built from this bronze or the one it extended; another span
    start; older code): then derive them from scratch."""
    if stored is None or bronze is None or not (stored.current and bronze.current):
        return None
    if stored.covered_from != start or stored.covered_to is None or stored.covered_to > end:
        return None
    changed = restart_after(stored.input(BRONZE_INPUT), bronze)
    if changed is True:
        return None
    first = floor_minute(stored.covered_to)
    return min(first, floor_minute(changed)) if changed else first


def candles_unchanged(stored: Lineage | None, bronze: Lineage | None, start: datetime, end: datetime) -> bool:
    """The stored candles were computed from this very bronze over the same span: nothing to redo
    (re-running a partition rewrites nothing)."""
    if stored is None or bronze is None or not stored.current or bronze.id is None:
        return False
    return stored.input(BRONZE_INPUT) == bronze.id and (stored.covered_from, stored.covered_to) == (
        start,
        end,
    )


def leading_close_changed(stored: pl.DataFrame, prev_close: float | None) -> bool:
    """Whether the stored candles' leading empty minutes carry another previous-day close than
    `prev_close` (the day before was re-derived since): then they are recomputed too."""
    if stored.is_empty() or not stored.get_column("is_empty")[0]:
        return False
    return stored.get_column("close")[0] != prev_close


def splice_candles(
    stored: pl.DataFrame,
    bronze: pl.DataFrame,
    covered_from: datetime,
    covered_to: datetime,
    restart: datetime,
    *,
    prev_close: float | None,
    exchange: str,
    symbol: str,
) -> tuple[pl.DataFrame, int]:
    """`candles_1m` of [covered_from, covered_to) from the stored bars before minute `restart` and bars
    recomputed from `restart` on (bronze in (ts, id) order); also returns how many bars were kept."""
    first = max(floor_minute(restart), floor_minute(covered_from))
    kept = stored.slice(0, stored.get_column("ts").search_sorted(first, side="left"))
    carried = kept.get_column("close")[-1] if kept.height else prev_close
    cut = bronze.get_column("ts").search_sorted(first, side="left")
    tail = candles_1m(
        bronze.slice(cut),
        max(first, covered_from),
        covered_to,
        prev_close=carried,
        exchange=exchange,
        symbol=symbol,
    )
    return pl.concat([kept, tail], how="vertical"), kept.height


@dataclass(frozen=True)
class InputStamp:
    """One candle partition a feature day reads: its name, what identifies its content, its lineage."""

    name: str
    stamp: str  # the lineage id, or for a partition written without one (imports) a content hash
    lineage: Lineage | None


def stamp_of(df: pl.DataFrame | None, lineage: Lineage | None) -> str:
    """What identifies a stored partition's content: its lineage id, else a hash of its rows."""
    if lineage is not None and lineage.id:
        return lineage.id
    if df is None:
        return "absent"
    return f"rows:{df.height}:{hash(tuple(df.hash_rows(seed=0).to_list()))}"


def features_restart(stored: Lineage | None, inputs: list[InputStamp]) -> datetime | bool:
    """First minute stored features must be recomputed from, given the candle partitions they read now:
    False when none changed, True when they must be computed from scratch (inputs they did not see
    just before, older code, no stored features)."""
    if stored is None or not stored.current:
        return True
    seen = dict(stored.inputs)
    if set(seen) != {i.name for i in inputs}:
        return True
    first: datetime | bool = False
    for item in inputs:
        if seen[item.name] == item.stamp:
            continue
        changed = True if item.lineage is None else restart_after(seen[item.name], item.lineage)
        if changed is True or changed is False:
            return True  # a new id that is not a tick on top of the one seen
        first = changed if first is False else min(first, changed)  # type: ignore[type-var]
    return first


def features_tail(candles: pl.DataFrame, since: datetime) -> pl.DataFrame:
    """`segmented_features(candles)` rows at or after `since`, computed from the LOOKBACK_MINUTES before
    it on only (the market instrument and cross features still decided by all of `candles`)."""
    recent = candles.filter(pl.col("ts") >= since - timedelta(minutes=LOOKBACK_MINUTES))
    features = segmented_features(recent, instruments=candles.select(KEYS).unique())
    return features.filter(pl.col("ts") >= since)


def splice_rows(stored: pl.DataFrame, fresh: pl.DataFrame, since: datetime) -> tuple[pl.DataFrame, int]:
    """The stored rows before `since` (one instrument, in ts order), then `fresh`; and how many were kept."""
    kept = stored.slice(0, stored.get_column("ts").search_sorted(since, side="left"))
    return pl.concat([kept, fresh], how="vertical"), kept.height
