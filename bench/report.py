"""Shared pieces of the bench reports: markdown tables, number formats, percentiles, the machine, the write.

Every bench is `measure(...) -> Result` (plain figures) and `render(result) -> str` (markdown); the
pieces they have in common live here so that a table or a percentile is written one way.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

LoadAvg = tuple[float, float, float]

# -------------------------------------------------------------------------------------- markdown


def row(cells: Sequence[object]) -> str:
    """One markdown table row."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str = "") -> str:
    """A markdown table; `align` holds one 'l' or 'r' per column (default: all left, `---`)."""
    marks = [("---:" if a == "r" else "---") for a in align.ljust(len(header), "l")]
    return "\n".join([row(header), "|" + "|".join(marks) + "|", *(row(r) for r in rows)])


def names(columns: Sequence[str]) -> str:
    """`a`, `b`, `c` (or '-' for none)."""
    return ", ".join(f"`{c}`" for c in columns) or "-"


# ----------------------------------------------------------------------------------------- numbers


def finite(x: float | None) -> bool:
    """True for a real number (not None, NaN or infinite)."""
    return x is not None and math.isfinite(x)


def pct(x: float) -> str:
    """A share as a whole percentage ('n/a' for NaN)."""
    return "n/a" if isinstance(x, float) and math.isnan(x) else f"{100 * x:.0f}%"


def num(x: float | None, fmt: str = "{:.4f}") -> str:
    """A number in `fmt`, 'n/a' when missing or not finite."""
    return fmt.format(x) if finite(x) else "n/a"


def seconds(x: float) -> str:
    """Seconds with one decimal ('n/a' for NaN)."""
    return "n/a" if x != x else f"{x:.1f}"


def ratio(a: float, b: float | None) -> float:
    """a / b, NaN when there is no b."""
    return a / b if b else float("nan")


def loads(avg: LoadAvg) -> str:
    """A load average triple as '1.14 1.32 1.61'."""
    return " ".join(f"{x:.2f}" for x in avg)


def minute(t: datetime) -> str:
    """A report timestamp, '2026-11-23 14:53'."""
    return f"{t:%Y-%m-%d %H:%M}"


# ------------------------------------------------------------------------------------- percentiles


def quantile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile `q` of `xs` (NaN when empty)."""
    s = sorted(xs)
    if not s:
        return float("nan")
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass(frozen=True)
class Summary:
    """Count, median, 95th percentile, maximum and mean of a list of durations."""

    n: int
    p50: float
    p95: float
    max: float
    mean: float

    @classmethod
    def of(cls, xs: Sequence[float]) -> Summary:
        """Summarise `xs` (NaN figures when empty)."""
        nan = float("nan")
        return cls(
            n=len(xs),
            p50=quantile(xs, 0.5),
            p95=quantile(xs, 0.95),
            max=max(xs) if xs else nan,
            mean=statistics.fmean(xs) if xs else nan,
        )

    def cells(self) -> list[str]:
        """n, p50, p95, max and mean as table cells (one decimal)."""
        return [str(self.n), *(seconds(x) for x in (self.p50, self.p95, self.max, self.mean))]


# ------------------------------------------------------------------------------------------ machine


def _proc_field(path: str, prefix: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line
    except OSError:
        pass
    return None


@dataclass(frozen=True)
class Machine:
    """The machine a bench ran on, as the reports print it."""

    cpu: str
    processor: str
    nproc: int
    ram_gib: float
    os: str
    python: str

    @classmethod
    def current(cls) -> Machine:
        """This machine (Linux /proc when available)."""
        cpu_line = _proc_field("/proc/cpuinfo", "model name")
        mem_line = _proc_field("/proc/meminfo", "MemTotal")
        return cls(
            cpu=cpu_line.split(":", 1)[1].strip() if cpu_line else (platform.processor() or "unknown"),
            processor=platform.processor() or platform.machine(),
            nproc=os.cpu_count() or 0,
            ram_gib=int(mem_line.split()[1]) / 1024**2 if mem_line else float("nan"),
            os=platform.platform(),
            python=platform.python_version(),
        )


def machine_section(m: Machine, before: LoadAvg, after: LoadAvg) -> list[str]:
    """A report's closing '## Machine' lines: the machine, and its load average before and after."""
    return [
        "## Machine",
        "",
        f"{m.cpu}, nproc {m.nproc}, {m.os}, Python {m.python}; shared with other work: load average "
        f"(1/5/15 min) before / after: {loads(before)} / {loads(after)}.",
        "",
    ]


# -------------------------------------------------------------------------------------------- write


def command(module: str, flags: Sequence[tuple[str, object]] = (), *, runner: str = "uv run --frozen") -> str:
    """The command line that regenerates a report, e.g. `uv run --frozen python -m bench.x --n 3`."""
    return " ".join([runner, "python -m", module, *(f"{k} {v}" for k, v in flags)])


def write_report(path: Path, text: str) -> None:
    """Write a report atomically (a temp file beside it, then a rename): never a half-written .md."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
