"""A client of the host's compile service that compiles nothing: it connects (starting the
service if none runs, ``SANDBOX_SERVICE=on``), prints what its pool says of the service, and
stays connected until the test closes its stdin."""

import sys

import common
from sandbox import runtime
from sandbox.options import Options

p = runtime.current().get_pool(Options.resolve(), started_by="test")
status = p.status()
common.emit(
    {
        "service_pid": p.service_pid,
        "started_service": p.started_service,
        "broken": p.broken,
        "clients": [c.get("pid") for c in (status or {}).get("clients", [])],
    }
)
sys.stdin.read()
