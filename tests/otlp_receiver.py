"""A real OTLP receiver for the tests: ``rotel`` (PyPI ``rotel``, its ``rotel-agent`` binary),
listening on free loopback ports and printing every span it receives (trace id, parent id,
attributes), which :func:`parse_rotel` reads back. The ``receiver`` fixture of ``conftest.py``
starts one per test module; ``sinks/test_collector.py`` chains two of its own.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from support import IN_CI, free_port

__all__ = ["ATTRIBUTE", "SPAN_FIELD", "Receiver", "free_port", "parse_rotel", "rotel_binary", "unavailable"]


def rotel_binary() -> str | None:
    try:
        import rotel
    except ImportError:
        return None
    path = Path(rotel.__file__).parent / "rotel-agent"
    return str(path) if path.exists() else shutil.which("rotel-agent")


def unavailable(why: str) -> None:
    message = (
        f"OTLP receiver unavailable: {why}. Install it with `pip install rotel` (its rotel-agent "
        f"binary needs libpython3.11: `apt-get install libpython3.11` on Debian)."
    )
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


class Receiver:
    """A running rotel-agent; ``spans()`` parses what it printed so far."""

    def __init__(self, proc: subprocess.Popen, log: Path, grpc_port: int, http_port: int) -> None:
        self.proc, self.log, self.grpc_port, self.http_port = proc, log, grpc_port, http_port

    def endpoint(self, protocol: str) -> str:
        return f"http://127.0.0.1:{self.grpc_port if protocol == 'grpc' else self.http_port}"

    def spans(self) -> list[dict[str, Any]]:
        return parse_rotel(self.log.read_text(errors="replace"))

    def wait_for(self, predicate: Any, what: str, within: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.time() + within
        while True:
            spans = [s for s in self.spans() if predicate(s)]
            done = bool(spans)
            if done or time.time() > deadline:
                assert done, f"the receiver got no {what} within {within} s ({len(self.spans())} spans in all)"
                return spans
            time.sleep(0.5)


SPAN_FIELD = re.compile(r"^\s+(Trace ID|Parent ID|ID|Name|Kind)\s*:\s?(.*)$")
ATTRIBUTE = re.compile(r"^\s+-> ([^:]+): (\w+)\((.*)\)$")


def parse_rotel(text: str) -> list[dict[str, Any]]:
    """rotel's ``--debug-log-verbosity detailed`` output -> one dict per span:
    trace_id, parent_id ('' for a root), span_id, name, attributes, and the
    ``service.name`` of the resource (the TracerProvider) that sent it."""
    spans: list[dict[str, Any]] = []
    span: dict[str, Any] | None = None
    in_attributes = in_resource = False
    service = ""
    for line in text.splitlines():
        if line.startswith("Span #"):
            span = {"trace_id": "", "parent_id": "", "span_id": "", "name": "", "attributes": {}, "service": service}
            spans.append(span)
            in_attributes = in_resource = False
            continue
        if line.startswith("ResourceSpans #"):
            service = ""
        if line.startswith("Resource attributes:"):
            in_resource = True
            continue
        if line.startswith(("ResourceSpans #", "ScopeSpans #", "Resource ", "InstrumentationScope")):
            span, in_attributes, in_resource = None, False, False
            continue
        if in_resource:
            m = ATTRIBUTE.match(line)
            if m and m.group(1) == "service.name":
                service = m.group(3)
            continue
        if span is None:
            continue
        m = SPAN_FIELD.match(line)
        if m:
            key = {"Trace ID": "trace_id", "Parent ID": "parent_id", "ID": "span_id", "Name": "name", "Kind": "kind"}[
                m.group(1)
            ]
            span[key] = m.group(2).strip()
            continue
        if line.strip() == "Attributes:":
            in_attributes = True
            continue
        if line.strip().endswith(":") and not line.strip().startswith("->"):  # Events:, Links:
            in_attributes = False
            continue
        m = ATTRIBUTE.match(line)
        if m and in_attributes:
            kind, value = m.group(2), m.group(3)
            span["attributes"][m.group(1)] = int(value) if kind == "Int" else value
    return spans
