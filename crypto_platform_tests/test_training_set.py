"""ml.dataset.build_training_set and training_summary on a hand-made frame: exact rows and figures."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import duckdb
import polars as pl
import pytest

from crypto_platform.ml.dataset import TrainingSetError, build_training_set, training_summary

DAY1, DAY2 = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)
AS_OF = DAY2 + timedelta(minutes=7, seconds=30)  # a 5-minute label is known 5 minutes after its bar


def _m(day: datetime, minute: int) -> datetime:
    return day + timedelta(minutes=minute)


def _features() -> pl.DataFrame:
    bars = [("A", DAY1, m) for m in range(4)] + [("A", DAY2, m) for m in range(2)]
    bars += [("B", DAY1, m) for m in range(2)] + [("B", DAY2, m) for m in range(3)]
    return pl.DataFrame(
        {
            "exchange": ["x"] * len(bars),
            "symbol": [s for s, _, _ in bars],
            "ts": [_m(d, m) for _, d, m in bars],
            "f": [float(i) for i in range(len(bars))],
        }
    )


def _labels() -> pl.DataFrame:
    rows = [  # symbol, bar, horizon, label
        ("A", _m(DAY1, 0), 5, 0.01),
        ("A", _m(DAY1, 1), 5, -0.02),
        ("A", _m(DAY1, 2), 5, 0.03),
        ("A", _m(DAY1, 3), 5, 0.0),
        ("A", _m(DAY1, 0), 15, 0.5),  # another horizon: never in a 5-minute set
        ("B", _m(DAY1, 0), 5, 0.04),
        ("B", _m(DAY1, 1), 5, math.nan),  # not a finite label: dropped from the set
        ("B", _m(DAY2, 0), 5, 0.05),
        ("B", _m(DAY2, 5), 5, 0.06),  # known at 00:10 on day 2, after AS_OF
    ]
    return pl.DataFrame(
        {
            "exchange": ["x"] * len(rows),
            "symbol": [r[0] for r in rows],
            "ts": [r[1] for r in rows],
            "horizon": pl.Series([r[2] for r in rows], dtype=pl.Int32),
            "label": [r[3] for r in rows],
            "label_available_at": [r[1] + timedelta(minutes=r[2]) for r in rows],
        }
    )


def _build(**kw) -> object:
    args = {"horizon": 5, "window_days": 2.0, "as_of": AS_OF, **kw}
    return build_training_set(_features().lazy(), _labels().lazy(), **args)


def test_the_set_holds_the_known_finite_labels_of_the_window_and_is_summarized_per_instrument() -> None:
    ts = _build()
    # the newest known label is B at day 2 00:00, so the window is [day 0 00:01, day 2 00:01)
    assert (ts.start, ts.end) == (_m(DAY1, 1) - timedelta(days=1), _m(DAY2, 1))
    assert ts.rows.select("symbol", "ts", "label").rows() == [
        ("A", _m(DAY1, 0), 0.01),
        ("B", _m(DAY1, 0), 0.04),
        ("A", _m(DAY1, 1), -0.02),
        ("A", _m(DAY1, 2), 0.03),
        ("A", _m(DAY1, 3), 0.0),
        ("B", _m(DAY2, 0), 0.05),
    ]
    assert ts.rows["f"].to_list() == [0.0, 6.0, 1.0, 2.0, 3.0, 8.0]  # the features of those bars
    assert ts.unlabelled.rows() == [("x", "A", date(2024, 1, 2))]  # A's day 2 has features, no label
    s = ts.summary
    assert s.columns == [
        "exchange", "symbol", "rows", "first_ts", "last_ts", "label_mean", "label_std", "share_up",
        "feature_rows", "labelled_share", "horizon", "as_of",
    ]  # fmt: skip
    assert s.select(
        "symbol", "rows", "first_ts", "last_ts", "share_up", "feature_rows", "horizon"
    ).rows() == [
        ("A", 4, _m(DAY1, 0), _m(DAY1, 3), 0.5, 5, 5),
        ("B", 2, _m(DAY1, 0), _m(DAY2, 0), 1.0, 3, 5),
    ]
    assert s["label_mean"].to_list() == pytest.approx([0.005, 0.045], abs=1e-15)
    assert s["label_std"].to_list() == pytest.approx([math.sqrt(0.0013 / 3), math.sqrt(0.00005)], rel=1e-12)
    assert s["labelled_share"].to_list() == pytest.approx([4 / 5, 2 / 3], rel=1e-12)
    assert s["as_of"].to_list() == [AS_OF, AS_OF]


def test_training_summary_agrees_with_duckdb() -> None:
    ts = _build()
    rows, feats = ts.rows, _features().filter(pl.col("ts") < ts.end)
    sql = duckdb.sql(
        "select r.symbol, count(*), avg(label), stddev_samp(label), avg((label > 0)::int), "
        "count(*) / any_value(f.n) from rows r join (select symbol, count(*) n from feats group by 1) f "
        "using (symbol) group by 1 order by 1"
    ).fetchall()
    got = training_summary(rows, feats, horizon=5, as_of=AS_OF)
    cols = ["symbol", "rows", "label_mean", "label_std", "share_up", "labelled_share"]
    for want, have in zip(sql, got.select(cols).rows(), strict=True):
        assert have[:2] == want[:2] and have[2:] == pytest.approx(want[2:], rel=1e-12)


def test_bad_requests_name_the_input() -> None:
    with pytest.raises(TrainingSetError, match=r"horizon_minutes 10 is not one of \[1, 5, 15, 60\]"):
        _build(horizon=10)
    with pytest.raises(TrainingSetError, match="window_days must be > 0, got 0"):
        _build(window_days=0)
    early = DAY1 + timedelta(minutes=2)  # before any 5-minute label is known
    with pytest.raises(TrainingSetError) as err:
        _build(as_of=early, instruments=["x.A"])
    assert str(err.value) == (
        "gold/labels holds no 5-minute label known at 2024-01-01 00:02 UTC for x.A (horizons present: "
        "[5, 15]); materialize gold/labels with 5 among its horizons"
    )
