"""A tiny code location for run-fault tests: a run that blocks until killed, and a quick one.

`faults/blocks` writes $CRYPTO_FAULTS_MARKER (so a test knows the run has started) and then sleeps;
the test kills its process. In-process executor: the run is one process, as a killed CLI run is.
"""

import os
import time
from pathlib import Path

import dagster as dg


@dg.asset(key=["faults", "blocks"])
def blocks() -> None:
    Path(os.environ["CRYPTO_FAULTS_MARKER"]).write_text(str(os.getpid()))
    time.sleep(120)


@dg.asset(key=["faults", "quick"])
def quick() -> int:
    return 1


quick_job = dg.define_asset_job("quick_job", selection=[quick])

defs = dg.Definitions(assets=[blocks, quick], jobs=[quick_job], executor=dg.in_process_executor)
