"""Predicted vs realized returns on a holdout: equal-count bins by forecast rank, as a table and a PNG.

Bins are cut by the forecast's rank (ordinal: ties broken by row order), so every bin holds
n/bins rows even when a shallow model gives many rows the same forecast; quantile cuts on the
values would merge tied rows and leave bins empty or lopsided. Adjacent bins can therefore share
a mean forecast. The PNG is drawn only when matplotlib is importable (it is not a declared
dependency of the platform); callers get None otherwise and say so.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import polars as pl

BP = 1e4  # basis points per unit of log return
PNG_EMBED_LIMIT = 100_000  # bytes: larger images are only linked, never inlined into metadata
CALIBRATION_PNG = "plots/predicted_vs_realized.png"  # artifact of each model's MLflow run


def rank_bins(
    holdout: pl.DataFrame, bins: int = 10, *, overlap: int = 1, pred_col: str = "prediction"
) -> pl.DataFrame:
    """Per forecast-rank bin (1 = lowest): rows, mean forecast and realized return (bp), share up, s.e.

    The standard error of the realized mean uses n / overlap observations (an h-minute label every
    minute overlaps h - 1 others), like the hit-rate test in `evaluation`.
    """
    if bins < 1:
        raise ValueError(f"rank_bins: bins must be >= 1, got {bins}")
    missing = [c for c in (pred_col, "label") if c not in holdout.columns]
    if missing:
        raise ValueError(f"rank_bins: holdout lacks columns {missing}")
    df = holdout.filter(pl.col(pred_col).is_finite() & pl.col("label").is_finite())
    if df.height < bins:
        raise ValueError(f"rank_bins: {df.height} scored rows is too few for {bins} bins")
    rank = pl.col(pred_col).rank("ordinal") - 1
    return (
        df.with_columns((rank * bins // pl.len() + 1).cast(pl.Int32).alias("bin"))
        .group_by("bin")
        .agg(
            pl.len().alias("n"),
            (pl.col(pred_col).mean() * BP).alias("predicted_bp"),
            (pl.col("label").mean() * BP).alias("realized_bp"),
            (pl.col("label").std() * BP / (pl.len() / max(1, overlap)).sqrt()).alias("realized_se_bp"),
            (pl.col("label") > 0).mean().alias("share_up"),
        )
        .sort("bin")
    )


def bins_markdown(table: pl.DataFrame, label: str = "bin") -> str:
    """The bins as a markdown table (mean forecast and realized return in bp, share of up moves)."""
    lines = [
        f"| {label} | rows | predicted (bp) | realized (bp) | ± s.e. (bp) | share up |",
        "|---|---|---|---|---|---|",
    ]
    width = len(str(table.height))
    for b, n, p, r, se, up in table.select(
        "bin", "n", "predicted_bp", "realized_bp", "realized_se_bp", "share_up"
    ).iter_rows():
        name = f"{label[0].upper()}{b:0{width}d}"
        lines.append(f"| {name} | {n:,} | {p:+.2f} | {r:+.2f} | {se:.2f} | {up:.3f} |")
    return "\n".join(lines)


def calibration_png(holdout: pl.DataFrame, table: pl.DataFrame, *, title: str = "") -> bytes | None:
    """PNG: forecast vs realized scatter and the binned means with ±1 s.e. (None without matplotlib)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    pred = holdout["prediction"].cast(pl.Float64).to_numpy() * BP
    real = holdout["label"].cast(pl.Float64).to_numpy() * BP
    ok = np.isfinite(pred) & np.isfinite(real)
    fig = Figure(figsize=(9, 3.6), dpi=80)  # no pyplot: no global figure state, safe in any process
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.scatter(pred[ok], real[ok], s=2, alpha=0.25, linewidths=0, rasterized=True)
    ax1.axhline(0, color="grey", lw=0.6)
    ax1.axvline(0, color="grey", lw=0.6)
    lim = np.nanpercentile(np.abs(real[ok]), 99) if ok.any() else 1.0
    ax1.set_ylim(-lim, lim)
    ax1.set_xlabel("forecast (bp)")
    ax1.set_ylabel("realized (bp)")
    ax1.set_title("every holdout row (99% of |realized|)", fontsize=9)
    x = table["bin"].to_numpy()
    ax2.errorbar(
        x,
        table["realized_bp"].to_numpy(),
        yerr=table["realized_se_bp"].to_numpy(),
        fmt="o-",
        capsize=3,
        label="realized ± 1 s.e.",
    )
    ax2.plot(x, table["predicted_bp"].to_numpy(), "s--", label="forecast")
    ax2.axhline(0, color="grey", lw=0.6)
    ax2.set_xticks(x)
    ax2.set_xlabel(f"forecast rank bin (equal counts, {int(table['n'].sum()):,} rows)")
    ax2.set_ylabel("mean return (bp)")
    ax2.set_title("binned by forecast rank", fontsize=9)
    ax2.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def calibration_markdown(bins: pl.DataFrame, png: bytes | None, run_id: str) -> str:
    """Predicted vs realized by forecast-rank decile (equal counts), with the PNG when there is one
    (inlined below `PNG_EMBED_LIMIT`, always linked as the run's `CALIBRATION_PNG` artifact)."""
    parts = [bins_markdown(bins, label="decile")]
    if png is None:
        parts.append("(no PNG: matplotlib is not importable in this environment)")
    else:
        parts.append(f"PNG: `runs:/{run_id}/{CALIBRATION_PNG}` ({len(png) / 1e3:.0f} kB)")
        if len(png) < PNG_EMBED_LIMIT:
            parts.append(f"![predicted vs realized](data:image/png;base64,{base64.b64encode(png).decode()})")
    return "\n\n".join(parts)
