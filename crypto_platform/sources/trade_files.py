"""Recorded trade files: format detection (Parquet, CSV incl. Binance bulk dumps, ccxt JSON) and readers
that return the file's original columns lazily; empty and ragged files are refused by name."""

from __future__ import annotations

import csv
import gzip
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from crypto_platform.sources.base import SourceError
from crypto_platform.sources.timestamps import is_number

NO_ROWS = (
    "the file holds no rows (empty, or a header only): a broken capture or download is refused rather "
    "than read as 'no trades'; remove it from the path/glob or record it again"
)


# Header-less Binance bulk dumps (data.binance.vision), told apart by their column count.
BINANCE_TRADES_COLUMNS = ["id", "price", "qty", "quoteQty", "time", "isBuyerMaker", "isBestMatch"]


BINANCE_AGGTRADES_COLUMNS = [
    "aggTradeId", "price", "qty", "firstTradeId", "lastTradeId",
    "transactTime", "isBuyerMaker", "isBestMatch",
]  # fmt: skip


HEADERLESS_LAYOUTS = {len(BINANCE_TRADES_COLUMNS): BINANCE_TRADES_COLUMNS, 8: BINANCE_AGGTRADES_COLUMNS}


PAYLOAD = "__payload"  # precomputed payload column (ccxt JSON: the exchange's own `info` record)


def _raw_bytes(path: Path) -> bytes:
    """The file's content, decompressed when gzip or a one-member zip (bulk dumps come zipped)."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            members = [n for n in zf.namelist() if not n.endswith("/")]
            if len(members) != 1:
                raise SourceError(f"replay: {path}: zip holds {len(members)} files, expected exactly one")
            return zf.read(members[0])
    return data


def _head(path: Path, size: int = 1 << 16) -> bytes:
    """The first bytes of the (decompressed) content, cheaply for plain files."""
    with path.open("rb") as fh:
        start = fh.read(4)
    if start[:2] == b"\x1f\x8b":
        with gzip.open(path, "rb") as gz:
            try:
                return gz.read(size)
            except (OSError, EOFError) as exc:
                raise SourceError(f"replay: {path}: corrupt gzip ({exc})") from exc
    if start == b"PK\x03\x04":
        return _raw_bytes(path)[:size]
    with path.open("rb") as fh:
        return fh.read(size)


def detect_format(path: Path) -> str:
    """'parquet' | 'json' | 'csv', from the content (magic bytes / first character / first line)."""
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic == b"PAR1":
        return "parquet"
    head = _head(path)
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if not text:
        raise SourceError(f"replay: {path}: {NO_ROWS}")
    if text[:1] in (b"[", b"{"):
        return "json"
    first = text.split(b"\n", 1)[0]
    if b"," in first and b"\x00" not in head:
        try:
            first.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return "csv"
    raise SourceError(
        f"replay: {path}: unknown format (not Parquet, CSV or ccxt trade JSON; starts with {head[:16]!r})"
    )


def read_parquet(path: Path) -> pl.LazyFrame:
    """Lazy scan of a Parquet file."""
    return pl.scan_parquet(path, glob=False)


def read_csv(path: Path) -> pl.LazyFrame:
    """Lazy CSV scan, all columns as text (exact as recorded); header-less Binance dumps get names.

    Every line must have as many fields as the first one: a ragged line is refused with its number."""
    first = _head(path).lstrip(b"\xef\xbb\xbf").split(b"\n", 1)[0].decode().strip()
    cells = [c.strip().strip('"') for c in first.split(",")]
    has_header = any(not is_number(c) and c.lower() not in ("true", "false") for c in cells)
    names = None
    if not has_header:
        names = HEADERLESS_LAYOUTS.get(len(cells))
        if names is None:
            raise SourceError(
                f"replay: {path}: header-less CSV with {len(cells)} columns is not a known layout "
                f"(Binance trades dump: 7 columns, aggTrades dump: 8)"
            )
    with path.open("rb") as fh:
        compressed = fh.read(4)[:2] in (b"\x1f\x8b", b"PK")
    source: Path | bytes = _raw_bytes(path) if compressed else path
    stat = path.stat()
    _check_shape_once(str(path), stat.st_size, stat.st_mtime_ns, len(cells), source)
    return pl.scan_csv(source, has_header=has_header, new_columns=names, infer_schema=False, glob=False)


def _check_shape_once(path: str, size: int, mtime_ns: int, fields: int, source: Path | bytes) -> None:
    """`check_csv_shape` once per version (size, mtime) of a file: a run replaying many days of one
    file reads it for each day (a refused file is checked, and refused, each time)."""
    key = (path, size, mtime_ns, fields)
    if key not in _SHAPE_OK:
        check_csv_shape(source, Path(path), fields)
        _SHAPE_OK.add(key)


_SHAPE_OK: set[tuple[str, int, int, int]] = set()


def check_csv_shape(source: Path | bytes, path: Path, fields: int) -> None:
    """Refuse a CSV with a line of more or fewer than `fields` fields, naming the file and line number
    (polars would fill a short line with nulls and stop at a long one without saying where)."""
    lines = pl.scan_csv(
        source, has_header=False, separator="\x1f", quote_char=None, infer_schema=False, new_columns=["t"]
    ).with_row_index("i", offset=1)
    text = pl.col("t").str.strip_chars_end("\r")
    bad = lines.filter(text.is_not_null() & (text.str.count_matches(",", literal=True) != fields - 1))
    quoted = lines.select(pl.col("t").str.contains('"', literal=True).any().alias("quoted"))
    first_bad, has_quotes = pl.collect_all([bad.head(1), quoted])
    if has_quotes.item():  # commas may be quoted: count fields the slow, exact way
        data = source if isinstance(source, bytes) else path.read_bytes()
        reader = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""))
        for row in reader:
            if row and len(row) != fields:
                _ragged(path, reader.line_num, len(row), fields)
    elif first_bad.height:
        number, line = first_bad.row(0)
        _ragged(path, number, line.strip().count(",") + 1, fields)


def _ragged(path: Path, line: int, found: int, fields: int) -> None:
    """Raise the error of a CSV line with the wrong number of fields."""
    raise SourceError(
        f"replay: {path}: line {line} has {found} fields, the header (first line) has {fields}: "
        "a ragged line (a truncated or corrupt capture?) is refused, not guessed"
    )


def read_json(path: Path) -> pl.LazyFrame:
    """ccxt unified trade dicts (or raw exchange records) from a JSON list or JSON lines, as text columns;
    the payload is each record's `info` (the exchange's own record) when present, else the record."""
    text = _raw_bytes(path).decode("utf-8")
    try:
        stripped = text.lstrip()
        if stripped.startswith("["):
            records = json.loads(stripped)
        else:
            records = [json.loads(line) for line in stripped.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise SourceError(f"replay: {path}: invalid JSON ({exc})") from exc
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise SourceError(f"replay: {path}: expected a JSON list of trade objects")
    keys: list[str] = []
    for r in records:
        keys.extend(k for k in r if k != "info" and k not in keys)
    columns: dict[str, list[str | None]] = {k: [_text(r.get(k)) for r in records] for k in keys}
    columns[PAYLOAD] = [json.dumps(r.get("info", r), separators=(",", ":")) for r in records]
    return pl.LazyFrame(columns, schema={k: pl.String for k in columns})


def _text(value: Any) -> str | None:
    """A JSON scalar as text (bools as 'true'/'false'), nested values as JSON; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


READERS: dict[str, Callable[[Path], pl.LazyFrame]] = {
    "parquet": read_parquet,
    "csv": read_csv,
    "json": read_json,
}
