"""bench.s3_lake on a tiny run (moto on loopback): every contender measured, the two committed designs
never return a mixed or stale version, and the report renders the figures."""

from __future__ import annotations

import pytest

from bench.s3_lake import Options, measure, render


@pytest.mark.slow
def test_the_s3_lake_bench_measures_every_contender() -> None:
    result = measure(Options(replacements=3, rows=2000, readers=2, reads=12))
    own, delta, control = result.figures
    assert [f.name for f in result.figures] == [own.name, delta.name, control.name]
    for f in (own, delta):
        assert (f.wrong_sequential, f.mixed, f.errors) == (0, 0, 0) and f.old_or_new == f.reads >= 12
        assert 0 < f.write_p50 <= f.write_p95 and 0 < f.read_p50 <= f.read_p95
    assert own.objects_after > 1 and control.objects_after == 1  # versions kept until the sweep
    text = render(result)
    assert "| own manifest (platform lake) |" in text and "| Delta Lake" in text and "--reads 12" in text
