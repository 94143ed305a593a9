"""Drift false-alarm study: which features and thresholds make a useful drift check for crypto?

Run from the repository root:  uv run --frozen python -m bench.drift_study
Writes bench/MONITORING.md (tables + the justification of DRIFT_FEATURES and the default thresholds).

Data (read in place, never copied): ../shared/data/candles/ftx_btcperp_1m_2022-01.csv (January 2022,
FTX BTC-PERP, 1 minute) and ../shared/data/candles/kraken_2023q1/XBTUSDC_1.csv (Kraken XBT/USDC, Q1
2023, 1 minute, sparse). Features come from crypto_platform.transforms.features.build_features.

  (a) the reference against itself (and each January day against the whole of January);
  (b) Kraken Q1 2023, a different market and regime, against the January reference: must fire;
  (c) false alarms: each day against the preceding 7 days (FTX January 2022 and Kraken Q1 2023), for
      naive PSI/KS on all features vs the scale-free DRIFT_FEATURES, over a grid of thresholds;
  (d) candidate thresholds side by side, including planted data faults (bad ticks, feed freeze);
  (e) prediction drift of a toy vol-scaled model, raw vs divided by trailing volatility;
  (f) false alarms of the skill check: the platform's LightGBM model trained on the first part of
      January, `performance.skill_lost` (the `model_skill` check's logic) on each held-out day;
  (g) prediction drift of that model on the held-out days it keeps its skill (skill per day from the
      rolling out-of-sample evaluation), feature thresholds vs thresholds calibrated on the reference's
      day-to-day variation, and planted forecast shifts that must still be caught;
  plus the per-call time of the Great Expectations suites.

(b) is reported twice: on all minutes and on liquid minutes only (empty_frac_60 <= LIQUID_EMPTY_FRAC),
because an empty minute is a flat bar (zero return, oscillators at mid-range) and most Kraken minutes
are empty: the detection on all minutes is mostly a detection of the liquidity regime.

`measure() -> Result` runs the study, `render(Result) -> str` is the report.
"""

from __future__ import annotations

import sys

from bench.drift_study.data import OUT, REPO
from bench.drift_study.markdown import render
from bench.drift_study.measurement import Result, measure
from bench.report import write_report

__all__ = ["Result", "main", "measure", "render"]


def main() -> int:
    """Run the study, write bench/MONITORING.md; exit 1 unless the reference is OK and Kraken is ERROR."""
    result = measure()
    md = render(result)
    write_report(OUT, md)
    print(md)
    print(f"\nwrote {OUT.relative_to(REPO)} in {result.runtime_s:.1f} s", file=sys.stderr)
    return 0 if result.ok else 1
