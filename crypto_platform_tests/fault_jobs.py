"""A tiny code location for run-fault tests: a run that blocks until killed, and one that waits for a gate.

`faults/blocks` writes $CRYPTO_FAULTS_MARKER (so a test knows the run has started) and then sleeps;
the test kills its process. `faults/gated` returns once $CRYPTO_FAULTS_GATE exists (at most 60 s), so
a test can look at the run while it is alive. In-process executor: each run is one process.
"""

import os
import time
from pathlib import Path

import dagster as dg


@dg.asset(key=["faults", "blocks"])
def blocks() -> None:
    Path(os.environ["CRYPTO_FAULTS_MARKER"]).write_text(str(os.getpid()))
    time.sleep(120)


@dg.asset(key=["faults", "gated"])
def gated() -> int:
    gate, deadline = Path(os.environ["CRYPTO_FAULTS_GATE"]), time.monotonic() + 60
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return 1


gated_job = dg.define_asset_job("gated_job", selection=[gated])

defs = dg.Definitions(assets=[blocks, gated], jobs=[gated_job], executor=dg.in_process_executor)
