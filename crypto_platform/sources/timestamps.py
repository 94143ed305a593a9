"""Timestamps of recorded trades: each value parsed by itself and strictly (epoch numbers by magnitude,
ISO 8601 text); anything else is not a time (null), and ambiguous day/month dates are never guessed."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from crypto_platform.sources.base import SourceError

# Timestamps (TIMESTAMPS): every value is parsed by itself, strictly; never by the first row's format.
# * numbers (Int64 exactly; decimals and exponents as floats): epoch time, the unit told by the
#   magnitude of each value: |v| >= 1e17 ns, >= 1e14 µs, >= 1e11 ms, else seconds (seconds reach
#   year 5138, milliseconds start 1973-03-03; Binance dumps moved from ms to µs in 2025);
# * ISO 8601 text ISO_TIMESTAMP: 'YYYY-MM-DD' 'T' or ' ' 'HH:MM[:SS[.fraction]]' [Z | ±HH[:MM] | ±HHMM],
#   without a zone taken as UTC; fractions beyond the millisecond are truncated;
# * Parquet/Arrow datetimes (naive = UTC) and numbers as above.
# Anything else is not a time (null; bronze rejects the row). Day/month-order dates such as
# '01/01/2024 12:01:15' (AMBIGUOUS_DATE) are never guessed: '01/02/2024' is 1 February or 2 January.
ISO_TIMESTAMP = (
    r"^(?<date>\d{4}-\d{2}-\d{2})[T ](?<hm>\d{2}:\d{2})(?::(?<s>\d{2})(?:[.,](?<frac>\d{1,9}))?)?"
    r"(?<zone>Z|z|[+-]\d{2}(?::?\d{2})?)?$"
)


AMBIGUOUS_DATE = r"^\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}"


def _ms_by_magnitude(v: pl.Expr, scale: float | int) -> pl.Expr:
    """Epoch s/ms/µs/ns -> ms, the unit told by magnitude per value (see TIMESTAMPS)."""
    a = v.abs()
    return (
        pl.when(a >= 10**17 * scale).then(v // (10**6 * scale))
        .when(a >= 10**14 * scale).then(v // (10**3 * scale))
        .when(a >= 10**11 * scale).then(v // scale)
        .otherwise(v * 1000 // scale)
    )  # fmt: skip


def epoch_ms_from_number(col: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Epoch numbers (or their text) in s/ms/µs/ns -> Int64 ms; integers exactly, non-numbers -> null."""
    if dtype.is_integer():
        return _ms_by_magnitude(col.cast(pl.Int64), 1)
    as_float = _ms_by_magnitude(col.cast(pl.Float64, strict=False), 1.0).floor().cast(pl.Int64, strict=False)
    if dtype.is_float():
        return as_float
    return pl.coalesce(_ms_by_magnitude(col.cast(pl.Int64, strict=False), 1), as_float)


def iso_ms(text: pl.Expr) -> pl.Expr:
    """Epoch ms of ISO 8601 text (ISO_TIMESTAMP), null for anything else or an impossible date/time."""
    g = text.str.extract_groups(ISO_TIMESTAMP)
    zone = g.struct.field("zone")
    zone = (
        pl.when(zone.is_null() | zone.is_in(["Z", "z"])).then(pl.lit("+00:00"))
        .when(zone.str.len_bytes() == 3).then(zone + ":00")
        .when(zone.str.len_bytes() == 5).then(zone.str.slice(0, 3) + ":" + zone.str.slice(3, 2))
        .otherwise(zone)
    )  # fmt: skip
    canonical = pl.concat_str(
        g.struct.field("date"),
        pl.lit("T"),
        g.struct.field("hm"),
        pl.lit(":"),
        g.struct.field("s").fill_null("00"),
        pl.lit("."),
        g.struct.field("frac").fill_null("0"),
        zone,
    )
    parsed = canonical.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%:z", strict=False, time_unit="us")
    return parsed.dt.epoch("ms")


def text_timestamp_ms(text: pl.Expr) -> pl.Expr:
    """Epoch ms of timestamp text, each value parsed by itself and strictly (see TIMESTAMPS); else null."""
    text = text.str.strip_chars()
    integer = text.str.contains(r"^[+-]?\d+$")
    decimal = text.str.contains(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
    return (
        pl.when(integer).then(_ms_by_magnitude(text.cast(pl.Int64, strict=False), 1))
        .when(decimal).then(epoch_ms_from_number(text.cast(pl.Float64, strict=False), pl.Float64()))
        .otherwise(iso_ms(text))
    )  # fmt: skip


def timestamp_ms_expr(name: str, dtype: pl.DataType, file: Path) -> pl.Expr:
    """Expression turning the file's timestamp column into epoch ms (Int64, null where not a time)."""
    col = pl.col(name)
    if isinstance(dtype, pl.Datetime):
        return col.dt.epoch("ms")
    if dtype.is_numeric():
        return epoch_ms_from_number(col, dtype)
    if dtype == pl.String:
        return text_timestamp_ms(col)
    raise SourceError(f"replay: {file}: timestamp column {name!r} has unsupported type {dtype}")


def is_number(text: str) -> bool:
    """True when the text parses as a number."""
    try:
        float(text)
    except ValueError:
        return False
    return True
