"""bench.tick_cost's measuring parts on tiny inputs: fresh-interpreter probes and the report."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bench.report import Machine
from bench.tick_cost import PROJECT, Options, Result, _probe, render


@pytest.mark.slow
def test_probe_takes_the_median_of_fresh_interpreters() -> None:
    code = "import json, os, sys; print(json.dumps({'s': float(len(sys.argv)), 'pid': os.getpid()}))"
    got = _probe(code, ["a", "b"], PROJECT, 3)
    assert got["s"] == 3.0 and isinstance(got["pid"], int)


def test_render_reports_before_and_after() -> None:
    gate = {"import": 4.0, "first": 1.5, "again": 0.5, "ok": True, "rows": 1_080_000}
    fast = {"import": 0.01, "first": 0.2, "again": 0.2, "ok": True, "rows": 1_080_000}
    r = Result(
        Options(before="ffb8baa", repeats=3, mlflow_uri="sqlite:///x.db"),
        datetime(2026, 12, 1, 18, 40, tzinfo=UTC),
        {"s": 3.1, "heavy": []},
        {"s": 8.7, "heavy": ["scipy", "ccxt"]},
        gate,
        fast,
        {"import": 5.0, "load": 2.0, "cached": 0.05, "version": "1", "alias": "challenger"},
        (1.0, 1.0, 1.0),
        (2.0, 2.0, 2.0),
        Machine("cpu", "x86_64", 2, 8.0, "Linux", "3.11.7"),
    )
    md = render(r).splitlines()
    assert "| load the code location (`import crypto_platform.definitions`) | 8.70 | 3.10 |" in md
    assert "| heavy libraries it imports | scipy, ccxt | none |" in md
    assert "| **per live run (import + first)** | **5.50** | **0.21** |" in md
    assert "| again in the same process (alias lookup; cached by version + digest) | 0.05 |" in md
