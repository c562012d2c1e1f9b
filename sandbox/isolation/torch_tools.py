"""torch's own debugging tools, across the process boundary.

People debug compiles with ``TORCH_TRACE`` + ``tlparse``, ``TORCH_LOGS``,
``TORCH_COMPILE_DEBUG=1`` and ``torch.profiler``. A graph compiled in a worker
must show up in all of them as if it had compiled here:

- the parent says, with each job, what its own process would have recorded
  (``request()``): whether it writes a structured trace, the level and propagation
  of each ``torch.*`` logger, whether a debug folder is open;
- the worker records exactly that while the graph compiles (``capture()``): the
  structured trace records, the log records, the debug folder's files; it writes
  no trace file and no debug folder of its own;
- the parent puts them where its own compile would have left them (``replay()``):
  the trace records into its trace log under the graph's compile id, the log
  records through its own logging configuration, in order, with the worker's
  timestamps, the files into its debug folder.

``Regions`` marks the isolated compile's stages for ``torch.profiler``; each report
reaches the trace through its own sink (``sinks/torch_trace.py``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
import traceback
from collections.abc import Iterator
from typing import Any

from torch.autograd.profiler import record_function

from sandbox.torch_adapter import debug_tools

log = logging.getLogger("sandbox")

MAX_DEBUG_BYTES = 256 * 2**20  # a debug folder bigger than this is not carried back

# LogRecord attributes that travel (plain values); the message is formatted in the worker.
_RECORD_FIELDS = (
    "name",
    "levelno",
    "levelname",
    "pathname",
    "filename",
    "module",
    "lineno",
    "funcName",
    "created",
    "msecs",
    "relativeCreated",
    "thread",
    "threadName",
    "process",
    "processName",
)


# --- the parent: what to capture --------------------------------------------------------


def _torch_loggers() -> dict[str, logging.Logger]:
    manager = logging.Logger.manager
    trace_log = debug_tools.trace_logger()  # replayed on its own
    with _logging_lock():
        items = list(manager.loggerDict.items())
    return {
        name: lg
        for name, lg in items
        if isinstance(lg, logging.Logger) and (name == "torch" or name.startswith("torch.")) and lg is not trace_log
    }


def _logging_lock() -> Any:
    """The logging module's own lock (it guards the logger registry), on every Python we support."""
    return getattr(logging, "_lock", None) or contextlib.nullcontext()


def logger_config() -> dict[str, list[Any]]:
    """This process's ``torch.*`` loggers that differ from a fresh logger: name -> [level, propagate]."""
    return {
        name: [lg.level, lg.propagate]
        for name, lg in _torch_loggers().items()
        if lg.level != logging.NOTSET or not lg.propagate
    }


def request() -> dict[str, Any]:
    """What the worker should record for this process, sent with each job ({} - record
    nothing - if this process's state cannot be read: the compile goes on regardless)."""
    try:
        folder = debug_tools.debug_dir()
        return {
            "trace": debug_tools.tracing(),
            "ids": debug_tools.current_trace_fields(),  # with the attempt, which the compile id lacks
            "loggers": logger_config(),
            "artifacts": debug_tools.enabled_artifacts(),
            "debug": debug_tools.debug_config() if folder is not None else None,
            # echoed back: in async mode the result is loaded after this graph's DebugContext closed
            "debug_dir": folder,
        }
    except Exception:
        log.warning("sandbox: torch's logging state could not be read; the worker records none", exc_info=True)
        return {}


# --- the worker: capture --------------------------------------------------------------------


def _plain(record: logging.LogRecord) -> dict[str, Any]:
    out = {k: getattr(record, k, None) for k in _RECORD_FIELDS}
    try:
        msg = record.getMessage()
    except Exception as e:  # a bad format string: what logging itself would print
        msg = f"{record.msg!r} (unformattable: {e})"
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    out.update(msg=msg, args=None, exc_text=record.exc_text, stack_info=record.stack_info)
    return out


class _Recorder(logging.Handler):
    def __init__(self, into: list[dict[str, Any]], structured: bool = False) -> None:
        super().__init__(logging.NOTSET)
        self.into = into
        self.structured = structured

    def emit(self, record: logging.LogRecord) -> None:
        try:
            d = _plain(record)
            if self.structured:
                metadata, payload = debug_tools.trace_record_parts(record)
                d["metadata"] = json.loads(json.dumps(metadata, default=str))
                d["payload"] = payload
            self.into.append(d)
        except Exception:  # never break the compile for a record
            pass

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        pass


class Capture:
    """What one job recorded in the worker; ``reply()`` is plain values."""

    def __init__(self) -> None:
        self.trace: list[dict[str, Any]] = []
        self.logs: list[dict[str, Any]] = []
        self.debug_root: str | None = None
        self.debug_files: dict[str, bytes] = {}
        self.debug_error: str | None = None
        self.ids: dict[str, int] = {}
        self.debug_dir: str | None = None  # the parent's folder for this graph, echoed back

    def reply(self) -> dict[str, Any]:
        return {
            "trace": self.trace,
            "logs": self.logs,
            "debug_root": self.debug_root,
            "debug_files": self.debug_files,
            "debug_error": self.debug_error,
            "ids": self.ids,
            "debug_dir": self.debug_dir,
        }


_capture_lock = threading.Lock()  # one job at a time per worker; loggers are process-wide


@contextlib.contextmanager
def capture(req: dict[str, Any] | None) -> Iterator[Capture]:
    """Worker side: record what the parent would have recorded for this compile."""
    cap = Capture()
    req = req or {}
    with _capture_lock, contextlib.ExitStack() as stack:
        try:
            cap.ids = {str(k): int(v) for k, v in (req.get("ids") or {}).items()}
            stack.enter_context(
                _capture_logs(dict(req.get("loggers") or {}), set(req.get("artifacts") or ()), cap.logs)
            )
            stack.enter_context(_capture_trace(cap.trace) if req.get("trace") else _no_trace())
            if req.get("debug"):
                cap.debug_dir = str(req.get("debug_dir") or "") or None
                cap.debug_root = tempfile.mkdtemp(prefix="sandbox-debug-")
                stack.callback(_collect_debug, cap)
                stack.enter_context(debug_tools.debug_dir_root(cap.debug_root))
                stack.enter_context(debug_tools.inductor_config(dict(req["debug"])))
        except Exception:  # record less, never fail the compile for it
            traceback.print_exc()
        yield cap


@contextlib.contextmanager
def _capture_logs(config: dict[str, list[Any]], artifacts: set[str], into: list[dict[str, Any]]) -> Iterator[None]:
    """Give every ``torch.*`` logger the parent's level and propagation, and record what
    reaches each logger that does not propagate (each record once, where the parent's
    own handlers would have seen it). A logger the parent does not list is a fresh one
    there, or - an artifact logger of a module only the worker imported - configured as
    the parent's TORCH_LOGS would configure it."""
    wanted = {str(name): (int(level), bool(propagate)) for name, (level, propagate) in config.items()}
    for name in wanted:
        logging.getLogger(name)
    loggers = _torch_loggers()
    saved = {name: (lg.level, lg.propagate, list(lg.handlers)) for name, lg in loggers.items()}
    recorder = _Recorder(into)
    try:
        for name, lg in loggers.items():
            lg.level, lg.propagate = wanted.get(name) or _unlisted(lg, artifacts)  # not setLevel: see below
            if not lg.propagate or name == "torch":
                # The worker's own handlers (its log file) stay; the recorder carries
                # the record to the parent, whose handlers decide where it goes.
                lg.addHandler(recorder)
        _levels_changed()  # once, where setLevel would clear every logger's cache per logger
        yield
    finally:
        for name, (level, propagate, handlers) in saved.items():
            lg = loggers[name]
            lg.handlers[:] = handlers
            lg.level = level
            lg.propagate = propagate
        _levels_changed()


def _unlisted(lg: logging.Logger, artifacts: set[str]) -> tuple[int, bool]:
    artifact = debug_tools.artifact_name(lg)
    if artifact is None:
        return logging.NOTSET, True
    return (logging.DEBUG, True) if artifact in artifacts else (logging.NOTSET, False)


def _levels_changed() -> None:
    """What ``Logger.setLevel`` does after a change: forget the cached ``isEnabledFor`` answers."""
    with _logging_lock():
        for lg in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
            cache = getattr(lg, "_cache", None)
            if isinstance(cache, dict):
                cache.clear()


@contextlib.contextmanager
def _capture_trace(into: list[dict[str, Any]]) -> Iterator[None]:
    """Only the recorder writes the structured trace meanwhile: no trace file of the worker's own."""
    trace_log = debug_tools.trace_logger()
    saved = list(trace_log.handlers)
    trace_log.handlers[:] = [_Recorder(into, structured=True)]
    try:
        yield
    finally:
        trace_log.handlers[:] = saved


@contextlib.contextmanager
def _no_trace() -> Iterator[None]:
    """The parent writes no trace: neither does the worker, and it builds no records."""
    trace_log = debug_tools.trace_logger()
    saved = list(trace_log.handlers)
    trace_log.handlers[:] = []
    try:
        yield
    finally:
        trace_log.handlers[:] = saved


def _collect_debug(cap: Capture) -> None:
    """The files of the debug folder(s) this job made: ``<root>/run_*/torchinductor/<graph>.<n>/...``."""
    root = cap.debug_root
    if root is None:
        return
    total = 0
    try:
        for dirpath, _, files in os.walk(root):
            for f in files:
                path = os.path.join(dirpath, f)
                parts = os.path.relpath(path, root).split(os.sep)
                # run_<time>-pid_<pid> / torchinductor / <graph>.<n> / rest
                if len(parts) < 4 or parts[1] != "torchinductor":
                    continue
                size = os.path.getsize(path)
                total += size
                if total > MAX_DEBUG_BYTES:
                    cap.debug_error = f"debug folder larger than {MAX_DEBUG_BYTES >> 20} MiB: not carried back"
                    cap.debug_files.clear()
                    return
                with open(path, "rb") as fh:
                    cap.debug_files["/".join(parts[3:])] = fh.read()
    except OSError as e:
        cap.debug_error = f"could not read the worker's debug folder: {e}"
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- the parent: replay ----------------------------------------------------------------------


def replay(reply: dict[str, Any] | None, compile_id: str | None) -> None:
    """Put what the worker recorded where this process's own compile would have left it.
    Never raises: a debugging aid must not cost the user a compiled graph."""
    if not reply:
        return
    for step in (_replay_debug_files, _replay_trace, _replay_logs):
        try:
            step(reply, compile_id)
        except Exception:
            log.warning("sandbox: could not replay the worker's %s", step.__name__[8:], exc_info=True)


def _replay_trace(reply: dict[str, Any], compile_id: str | None) -> None:
    records = reply.get("trace") or []
    if not records or not debug_tools.tracing():
        return
    trace_log = debug_tools.trace_logger()
    strings: dict[int, int] = {}  # the worker's string-table ids -> this process's
    ids = reply.get("ids") or _compile_id_fields(compile_id)
    for d in records:
        md = d.get("metadata") or {}
        if "str" in md:
            s, worker_id = md["str"]
            strings[worker_id] = debug_tools.intern_string(s)
            continue
        _remap_strings(md, strings)
        if ids:
            # The parent's compile id and attempt (a compile restarted after a graph
            # break is attempt 1; the worker only knew the compile id).
            for k in ("compiled_autograd_id", "frame_id", "frame_compile_id", "attempt"):
                md.pop(k, None)
            md.update(ids)
        trace_log.handle(_record(d))


def _compile_id_fields(compile_id: str | None) -> dict[str, int]:
    """``"0/1"``, ``"0/1_2"`` (attempt), ``"!3/0/1"`` (compiled autograd) -> trace metadata."""
    if not compile_id:
        return {}
    out: dict[str, int] = {}
    cid = compile_id
    if cid.startswith("!"):
        head, _, cid = cid[1:].partition("/")
        out["compiled_autograd_id"] = int(head)
    frame, _, rest = cid.partition("/")
    compile_n, _, attempt = rest.partition("_")
    try:
        out["frame_id"], out["frame_compile_id"] = int(frame), int(compile_n)
        out["attempt"] = int(attempt or 0)
    except ValueError:
        return {}
    return out


def _remap_strings(md: dict[str, Any], strings: dict[int, int]) -> None:
    """Stack frames name their files by string-table id: use this process's ids."""
    if not strings:
        return
    stacks = [md.get("stack")] + [v.get("stack") for v in md.values() if isinstance(v, dict)]
    for frames in stacks:
        for frame in frames if isinstance(frames, list) else []:
            if isinstance(frame, dict) and isinstance(frame.get("filename"), int):
                frame["filename"] = strings.get(frame["filename"], frame["filename"])


def _record(d: dict[str, Any]) -> logging.LogRecord:
    fields = {k: v for k, v in d.items() if k not in ("metadata", "payload")}
    if "metadata" in d:
        return debug_tools.make_trace_record(fields, d["metadata"], d.get("payload"))
    return logging.makeLogRecord(fields)


def _replay_logs(reply: dict[str, Any], compile_id: str | None) -> None:
    debug_root = reply.get("debug_root")
    for d in reply.get("logs") or []:
        if debug_root and debug_root in str(d.get("msg", "")):
            continue  # the worker's "debug trace: <its folder>": this process announces its own
        logger = logging.getLogger(d["name"])
        if logger.disabled:
            continue
        logger.handle(_record(d))


def _replay_debug_files(reply: dict[str, Any], compile_id: str | None) -> None:
    files = reply.get("debug_files") or {}
    if reply.get("debug_error"):
        log.warning("sandbox: graph %s: %s", compile_id, reply["debug_error"])
    target = reply.get("debug_dir") or debug_tools.debug_dir()
    if not files or not target or not os.path.isdir(target):
        return
    root = os.path.realpath(target)
    for rel, data in files.items():
        path = os.path.realpath(os.path.join(root, rel))
        if not path.startswith(root + os.sep):
            continue  # never outside this graph's folder
        if os.path.exists(path):
            continue  # this process's own file (debug.log, info.log): it has the replayed records
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)


# --- torch.profiler --------------------------------------------------------------------------


class Regions:
    """Named ``torch.profiler`` regions for one isolated compile: ``sandbox.wait_for_worker``
    until the job is sent, then ``sandbox.compile_in_worker`` until the reply is back
    (``sent()`` switches), or one ``first`` region (``sandbox.load``). Created only while a
    profiler records, so they cost nothing otherwise."""

    def __init__(self, compile_id: str | None, first: str = "wait_for_worker") -> None:
        self.label = f" [{compile_id}]" if compile_id else ""
        self.first = first
        self.on = debug_tools.profiler_enabled()
        self._open: Any = None

    def __enter__(self) -> Regions:
        self.enter(self.first)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.exit()

    def sent(self) -> None:
        self.enter("compile_in_worker")

    def enter(self, stage: str) -> None:
        if not self.on:
            return
        self.exit()
        self._open = record_function(f"sandbox.{stage}{self.label}")
        self._open.__enter__()

    def exit(self) -> None:
        if self._open is not None:
            region, self._open = self._open, None
            region.__exit__(None, None, None)
