"""Materialization metadata shared by the layer assets: totals plus a per-partition table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import dagster as dg


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
