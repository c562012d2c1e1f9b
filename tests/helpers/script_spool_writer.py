"""A training process that reports through the public path while the store may go away:
the store comes from ``SANDBOX_STORE`` (a PostgreSQL URL), the job and rank from
``SANDBOX_JOB`` / ``RANK`` / ``WORLD_SIZE``, the spool from ``SANDBOX_SPOOL``. It publishes
``count`` synthetic reports (the store only sees the record), one every ``interval``
seconds, flushing every few, after the file ``go`` appears.

argv: count interval go
"""

import hashlib
import os
import sys
import time

import common
import sandbox
from sandbox import runtime
from sandbox.options import Options
from sandbox.record.context import distributed
from sandbox.record.report import CompileReport

count, interval, go = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
runtime.current().configure(Options.resolve())
run = runtime.current().run()
open(f"{go}.{os.getpid()}.ready", "w").close()
deadline = time.time() + 120
while not os.path.exists(go) and time.time() < deadline:
    time.sleep(0.01)
ids = []
for i in range(count):
    source = f"// kernel {i} of graph {i}\n"  # the same on every rank: the ranks compile the same graphs
    kernels = [
        {
            "name": f"cpp_fused_{i}",
            "kind": "cpp",
            "source": source,
            "lines": 1,
            "source_hash": hashlib.sha256(source.encode()).hexdigest(),
        }
    ]
    r = CompileReport(
        run_id=run.run_id,
        compile_id=f"{i}/0",
        graph_kind="forward",
        outcome="isolated",
        co_name="forward",
        filename="/src/model.py",
        line=10 + i,
        duration_s=0.01,
        kernels=kernels,
        graph={"hash": f"graph-{i}"},
        **distributed(),
    )
    runtime.current().publish(r)
    ids.append(r.report_id)
    if i % 5 == 4:
        assert sandbox.flush(120), "flush timed out"
    time.sleep(interval)
assert sandbox.flush(120), "flush timed out"
sink = runtime.current().sink("store")
common.emit(
    {
        "run_id": run.run_id,
        "ids": ids,
        "job": run.job,
        "rank": run.rank,
        "written": sink.written,
        "spooled": sink.spooled,
        "uploaded": sink.uploaded,
    }
)
