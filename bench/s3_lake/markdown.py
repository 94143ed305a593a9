"""bench/S3LAKE.md from a Result."""

from __future__ import annotations

from bench.report import command, loads, minute, table
from bench.s3_lake.measurement import Result


def _ms(x: float) -> str:
    return f"{1000 * x:.0f}"


def render(r: Result) -> str:
    o = r.options
    flags = [
        ("--replacements", o.replacements),
        ("--rows", o.rows),
        ("--readers", o.readers),
        ("--reads", o.reads),
    ]
    rows = [
        [
            f.name,
            _ms(f.write_p50),
            _ms(f.write_p95),
            _ms(f.read_p50),
            _ms(f.read_p95),
            f.wrong_sequential,
            f.reads,
            f.old_or_new,
            f.mixed,
            f.errors,
            f.replacements_meanwhile,
            f.objects_after,
        ]
        for f in r.figures
    ]
    own, delta = r.figures[0], r.figures[1]
    header = [
        "contender",
        "write p50 ms",
        "write p95 ms",
        "read p50 ms",
        "read p95 ms",
        "stale reads",
        "reads under replacement",
        "old or new",
        "mixed",
        "errors",
        "replacements meanwhile",
        "objects after",
    ]
    return f"""# S3 lake: the platform's own manifest commit vs Delta Lake

Command: `{command("bench.s3_lake", flags)}` ({minute(r.started)} UTC, {r.seconds:.0f} s; load average
{loads(r.load)}; {r.machine.cpu}, {r.machine.nproc} cores). One S3-compatible server (moto on
127.0.0.1, in memory), one bucket per contender. One (instrument, day) partition of {o.rows:,} rows
(two columns) is replaced {o.replacements} times and read back after each replace (latency, and
"stale reads": a read that did not return the version just written); then {o.readers} reader
threads read it {o.reads} times while one writer replaces it as fast as it can, alternating two known
versions, and every read is compared with both ("mixed": neither of them; "errors": the read failed,
e.g. the object changed between two of its range requests).

{table(header, rows, "lrrrrrrrrrrr")}

Write/read ratio, Delta over own manifest: writes {delta.write_p50 / own.write_p50:.1f}x, reads
{delta.read_p50 / own.read_p50:.1f}x (medians).

**What the platform uses: its own manifest commit.** Both give readers exactly the old or the new
version (0 mixed reads above) because both never rewrite an object: a version is new immutable
objects, committed by one conditional PUT (own: the partition's pointer, `If-Match`; Delta: the next
log entry, `If-None-Match`). The in-place control shows why that matters: its reads under
replacement fail or mix versions. The own commit is kept
because it does the same with less: no new runtime dependency (deltalake stays a bench-only dev
dependency), one request to find a partition's current file instead of reading the table log, the
lake's layout and its raw manifest (batches + coverage, which bronze's lineage checks use) unchanged
on both stores, and DuckDB views that need only httpfs (a Delta table would need DuckDB's `delta`
extension as well). Delta would be the choice for time travel, schema evolution or other engines
(Spark) writing the same tables; none is a requirement here. "objects after" is what garbage
collection has to remove: both keep every superseded version until `lake_sweep_job` (own) or
`VACUUM` (Delta) removes it.
"""
