"""A build cache in front of g++ for the test session: the same C++ source with the same flags
compiles once, and every later build of it copies the first one's output.

Every scenario starts from an empty Inductor cache, so without this each of them compiled the
same handful of kernels again (a tiny kernel costs seconds of g++ on a slow CPU). Inductor calls
``$CXX`` (``torch._inductor.config.cpp.cxx``), and the suite points it at a shim that runs this
file. The key is the compiler binary, the flags, and the content (never the path) of every input
file and ``-include``d header, so a changed source or flag always compiles. Anything that is not
one file built into one ``-o`` output (``--version``, probes, precompiled headers) goes straight to
the compiler. A failed build stores nothing. The wrapper forwards SIGTERM and SIGINT to the
compiler, so a killed build looks as it would without the cache.

Environment: ``TEST_CXX_REAL`` the real compiler, ``TEST_CXX_CACHE`` the folder of outputs (unset:
the compiler runs as it is). Uses the standard library only: the shim runs it with ``python -S``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

# Options whose value is the next argument (g++ also accepts most of them attached).
_WITH_VALUE = {"-D", "-U", "-I", "-L", "-l", "-isystem", "-MF", "-MT", "-MQ", "-Xlinker"}
_SOURCES = (".c", ".cc", ".cpp", ".cxx", ".h", ".hpp")


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def cache_key(real: str, args: list[str]) -> tuple[str, str] | None:
    """(key, output path) for a build of one file into one ``-o`` output, else None."""
    if "-o" not in args or "-x" in args or "-" in args:
        return None
    stat = os.stat(real)
    parts = [real, str(stat.st_size), str(stat.st_mtime_ns)]
    out = None
    sources = 0
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-o":
            out = args[i + 1]
            parts += ["-o", os.path.splitext(out)[1]]
            i += 2
            continue
        if arg == "-include":
            parts += ["-include", _digest(args[i + 1])]
            i += 2
            continue
        if arg in _WITH_VALUE:
            parts += [arg, args[i + 1]]
            i += 2
            continue
        if not arg.startswith("-"):
            if not (arg.endswith(_SOURCES) and os.path.isfile(arg)):
                return None  # an object file or library to link: not one source's build
            parts.append("source:" + _digest(arg))
            sources += 1
        else:
            parts.append(arg)
        i += 1
    if out is None or sources != 1:
        return None
    return hashlib.sha256("\0".join(parts).encode()).hexdigest(), out


def _put(src: str, dest: str) -> None:
    """Copy whole or not at all: a reader never sees half a file."""
    tmp = f"{dest}.{os.getpid()}.part"
    shutil.copy2(src, tmp)
    os.replace(tmp, dest)


def _log(cache: str, line: str) -> None:
    with open(os.path.join(cache, "log"), "a") as f:
        f.write(line + "\n")


def main(args: list[str]) -> int:
    real = os.environ.get("TEST_CXX_REAL") or "g++"
    cache = os.environ.get("TEST_CXX_CACHE")
    try:
        found = cache_key(real, args) if cache and os.path.isdir(cache) else None
    except (OSError, IndexError):  # an input it cannot read: the compiler says what is wrong
        found = None
    if found is None:
        os.execvp(real, [real, *args])
    key, out = found
    stored = os.path.join(cache, key)
    if os.path.exists(stored):
        _put(stored, out)
        _log(cache, f"hit {key}")
        return 0
    start = time.monotonic()
    proc = subprocess.Popen([real, *args])
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, _f: proc.send_signal(s))
    rc = proc.wait()
    if rc < 0:  # the compiler died of a signal: so does its stand-in
        signal.signal(-rc, signal.SIG_DFL)
        os.kill(os.getpid(), -rc)
    if rc == 0 and os.path.isfile(out):
        _put(out, stored)
        _log(cache, f"miss {key} {time.monotonic() - start:.2f}")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
