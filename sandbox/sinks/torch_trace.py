"""Each report in torch's structured trace (``TORCH_TRACE``), where tlparse shows it.

While the user's process writes a structured trace, every report becomes one
``sandbox_compile_report`` artifact under its graph's compile id; otherwise a report costs
one check.
"""

from __future__ import annotations

import json

from sandbox.record.report import CompileReport
from sandbox.sinks.base import Sink
from sandbox.torch_adapter import debug_tools

__all__ = ["REPORT_ARTIFACT", "TorchTraceSink", "report_payload"]

REPORT_ARTIFACT = "sandbox_compile_report"


def report_payload(report: CompileReport) -> str:
    """The report as tlparse shows it: everything but the kernels' source text."""
    d = report.to_dict()
    d["kernels"] = [{k: v for k, v in kernel.items() if k != "source"} for kernel in d.get("kernels", [])]
    return json.dumps(d, sort_keys=True, default=str)


class TorchTraceSink(Sink):
    name = "torch_trace"

    def consume(self, report: CompileReport) -> None:
        if debug_tools.tracing():
            debug_tools.trace_artifact(REPORT_ARTIFACT, report_payload(report), report.compile_id)
