"""Metadata for the UI, shared by assets and checks: per-partition totals and markdown tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import dagster as dg
import polars as pl

# Metadata key every monitoring check sets: does the judged window include the newest data of the
# table? The retraining sensor ignores failures about history (e.g. a backfill of old partitions).
ABOUT_LATEST_DATA = "about_latest_data"


def summarize(rows: Sequence[dict[str, Any]], *, sums: Sequence[str] = ("rows", "bytes")) -> dict[str, Any]:
    """Totals over per-partition stats, and the stats as a markdown table for the UI."""
    meta: dict[str, Any] = {"partitions": len(rows)}
    for key in sums:
        total = sum(int(r.get(key) or 0) for r in rows)
        meta[key] = dg.MetadataValue.int(total)
    starts = [r["from"] for r in rows if r.get("from")]
    ends = [r["to"] for r in rows if r.get("to")]
    if starts and ends:
        meta["time_from"] = str(min(starts))
        meta["time_to"] = str(max(ends))
    if rows:
        cols = list(rows[0].keys())
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows[:200]]
        if len(rows) > 200:
            lines.append(f"| … {len(rows) - 200} more partitions |")
        meta["per_partition"] = dg.MetadataValue.md("\n".join(lines))
    return meta


def _fmt(v: Any) -> str:
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, float):
        return f"{v:,.6g}"
    return "" if v is None else str(v)


def md_table(rows: Sequence[Mapping[str, Any]], limit: int = 100) -> str:
    """Rows of dicts as a markdown table (first `limit` rows) for check metadata."""
    if not rows:
        return "(none)"
    cols = list(rows[0].keys())
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"| … {len(rows) - limit} more |" + " |" * (len(cols) - 1))
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M")
    return "" if v is None else str(v).replace("|", "/")


def frame_markdown(df: pl.DataFrame, floats: str = "{:.6g}") -> str:
    """A small frame as a markdown table for the UI (every row; floats formatted with `floats`)."""
    cols = df.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.iter_rows():
        lines.append(
            "| " + " | ".join(floats.format(v) if isinstance(v, float) else str(v) for v in row) + " |"
        )
    return "\n".join(lines)
