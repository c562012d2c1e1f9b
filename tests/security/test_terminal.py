"""Store text reaches the terminal as text: no escape sequence, C1 control or bidi override from a
run store is obeyed by the terminal that shows ``sandbox runs``, ``show``, ``diff``, ``explain`` or
``job``.

Each command runs as the real console script on a real pseudo-terminal (python's ``pty``, set raw
so the bytes read are exactly the bytes written), against a store written by an attacker
(``hostile_store.py``: every shown field carries clear-screen, window-title and OSC 52 clipboard
sequences, C1 controls, bidi overrides, NUL, DEL, carriage returns and newlines that forge a line).
The only control byte allowed through is the CLI's own newline; the hostile text itself is still
shown, as visible escapes. ``--json`` stays exact: ``json.loads`` gives back the hostile strings as
they were stored, byte for byte. One test compiles a real function through the sandbox, named
and located with the same escapes, and reads that run back.
"""

from __future__ import annotations

import errno
import io
import json
import os
import pty
import subprocess
import sys
import time
import tty
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hostile_store import (
    ARGV,
    BREAK,
    CLIPBOARD,
    CONFIG,
    DEVICE,
    EARLIER_JOB,
    FILE,
    FUNCTION,
    GUARD,
    HOST,
    JOB,
    KERNEL,
    KERNEL_B,
    LOG,
    MESSAGE,
    NAME,
    RUN_ID_C,
    TAG,
    TITLE,
    TORCH,
    HostileStore,
    make_hostile_store,
)
from support import SCRIPT_TIMEOUT_S, fresh_cache_dir, script_env

from sandbox.cli import safe_text

SCRIPT = Path(sys.executable).with_name("sandbox")
TIMEOUT_S = 120

# A line the store tries to forge (hostile_store.FORGED): it must never start a line of output.
FORGED_LINE = "compiled 0 graphs, no failures"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> HostileStore:
    return make_hostile_store(tmp_path_factory.mktemp("hostile") / "runs.db")


# -- a real terminal ------------------------------------------------------------------------------


def in_terminal(*argv: str, env: dict[str, str] | None = None) -> tuple[int, bytes]:
    """``sandbox ARGV`` with stdin, stdout and stderr on a new pseudo-terminal, set raw (no
    newline translation): its exit code and every byte it wrote to the terminal."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    try:
        proc = subprocess.Popen(
            [str(SCRIPT), *argv],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env or {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")},
            close_fds=True,
        )
    finally:
        os.close(slave)
    chunks = []
    deadline = time.time() + TIMEOUT_S
    try:
        while time.time() < deadline:
            try:
                chunk = os.read(master, 65536)
            except OSError as e:  # EIO: the terminal's last writer closed it
                if e.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            chunks.append(chunk)
        rc = proc.wait(timeout=max(deadline - time.time(), 1))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return rc, b"".join(chunks)


def shown(raw: bytes) -> str:
    """What the terminal got, checked: valid UTF-8 (no stray C1 byte), and no character a terminal
    obeys or that reorders text (C0 but the CLI's newline, DEL, C1, bidi and other format
    characters, separators): everything else is printable text."""
    text = raw.decode("utf-8")  # strict: a lone 0x9b byte would be a C1 CSI to some terminals
    bad = sorted({f"U+{ord(ch):04X} {unicodedata.category(ch)}" for ch in text if not (ch.isprintable() or ch == "\n")})
    assert not bad, f"control or format characters reached the terminal: {bad}"
    assert b"\x1b" not in raw and b"\x07" not in raw and b"\r" not in raw
    forged = [line for line in text.splitlines() if line.strip().startswith(FORGED_LINE)]
    assert not forged, f"store text started a line of its own: {forged}"
    return text


def visible(s: str) -> str:
    """A hostile string as the CLI shows it: every control character as its escape."""
    return safe_text.printable(s)


# -- every command, in a terminal -------------------------------------------------------------


def test_runs_shows_store_text_as_text(hostile: HostileStore) -> None:
    rc, raw = in_terminal("--store", str(hostile.path), "runs")
    text = shown(raw)
    assert rc == 0, text
    # the hostile text is there, as visible escapes (cut to the column's width)
    assert visible(NAME)[:21] in text and visible(TAG)[:21] in text
    assert "run-name\\x1b[2J" in text and "c0ffee\\x1b]0" in text
    assert len(text.splitlines()) == 2 + 5  # the header, its rule, one line per run


def test_show_shows_store_text_as_text(hostile: HostileStore) -> None:
    rc, raw = in_terminal("--store", str(hostile.path), "show", hostile.runs["b"])
    text = shown(raw)
    assert rc == 0, text
    assert visible(HOST) in text and visible(TORCH) in text and visible(DEVICE) in text
    assert visible(f"job {JOB} rank 0/2") in text
    assert visible(MESSAGE)[:100] in text and visible(LOG)[:100] in text
    assert "1 failure(s):" in text and "ran in-process: in-process-reason\\x1b[2J" in text
    # the window-title and clipboard sequences, shown not obeyed
    assert visible(TITLE) in text and visible(CLIPBOARD) in text
    assert "argv train.py argv\\x1b[2J" in text


def test_show_of_a_run_whose_id_is_hostile(hostile: HostileStore) -> None:
    rc, raw = in_terminal("--store", str(hostile.path), "show", "c0ffee")
    text = shown(raw)
    assert rc == 0, text
    assert text.startswith("run " + visible(RUN_ID_C) + "  " + repr(NAME))


def test_diff_shows_store_text_as_text(hostile: HostileStore) -> None:
    rc, raw = in_terminal("--store", str(hostile.path), "diff", hostile.runs["a"], hostile.runs["b"])
    text = shown(raw)
    assert rc == 0, text
    assert "why:" in text and "kernel changes:" in text
    assert f"  inductor_config.{visible(CONFIG)}: " in text
    assert visible(KERNEL_B)[:60] in text and visible(FUNCTION)[:40] in text
    assert "graph break at " in text and "recompiled " + visible(FUNCTION)[:40] in text


def test_explain_shows_store_text_as_text(hostile: HostileStore) -> None:
    rc, raw = in_terminal("--store", str(hostile.path), "explain", hostile.runs["b"])
    text = shown(raw)
    assert rc == 0, text
    assert "why it compiled like this, largest first:" in text
    assert "graph break at " in text and "recompiled " in text
    assert "graph-break-reason\\x1b" in text and "guard\\x1b" in text


def test_job_shows_store_text_as_text(hostile: HostileStore) -> None:
    rc, raw = in_terminal("--store", str(hostile.path), "job")
    text = shown(raw)
    assert rc == 0, text
    assert "job\\x1b[2J" in text and "earlier-job\\x1b[2J" in text

    rc, raw = in_terminal("--store", str(hostile.path), "job", "job", "--against", "earlier", "--all")
    text = shown(raw)
    assert rc == 0, text
    assert text.startswith("job " + visible(JOB) + ": 2 ranks (world size 2) on 2 host(s): ")
    assert "against earlier job " + visible(EARLIER_JOB) + ": slowest rank" in text
    assert visible(HOST)[:20] in text and "divergence: " in text


def test_an_error_naming_store_text_is_text(hostile: HostileStore) -> None:
    """stderr too: ``sandbox job nope`` lists the store's jobs in its error."""
    rc, raw = in_terminal("--store", str(hostile.path), "job", "nope")
    text = shown(raw)
    assert rc == 1 and text.startswith("sandbox job: no job 'nope'; jobs: "), text
    assert "job\\x1b[2J" in text


def test_export_trace_message_is_text(hostile: HostileStore, tmp_path: Path) -> None:
    rc, raw = in_terminal("--store", str(hostile.path), "export-trace", "c0ffee", "-o", str(tmp_path / "t.json"))
    text = shown(raw)
    assert rc == 0 and "events of run c0ffee\\x1b]0" in text, text


# -- --json: exact ---------------------------------------------------------------------------------


def json_in_terminal(*argv: str) -> Any:
    rc, raw = in_terminal(*argv)
    assert rc == 0, raw[-2000:]
    assert all(b == 0x0A or 0x20 <= b < 0x7F for b in raw), "JSON output is printable ASCII and newlines"
    return json.loads(raw)


def test_json_gives_back_the_hostile_strings_exactly(hostile: HostileStore) -> None:
    store = ("--store", str(hostile.path))
    runs = json_in_terminal(*store, "runs", "--json")
    assert {r["run_id"] for r in runs} == set(hostile.runs.values())
    assert RUN_ID_C in {r["run_id"] for r in runs}
    assert all(r["name"] == NAME and r["tags"] == [TAG, "ci"] and r["device"] == DEVICE for r in runs)
    assert {r["hostname"] for r in runs} == {HOST, "node-1"}

    shown_b = json_in_terminal(*store, "show", hostile.runs["b"], "--json", "--sources")
    assert shown_b["run"]["argv"] == ["train.py", ARGV] and shown_b["run"]["job"] == JOB
    reports = {r["graph_index"]: r for r in shown_b["reports"]}
    assert reports[0]["co_name"] == FUNCTION and reports[0]["filename"] == FILE
    assert [k["name"] for k in reports[0]["kernels"]] == [KERNEL, KERNEL_B]
    assert reports[0]["compile_reason"]["reason"] == BREAK
    assert reports[1]["failure"]["message"] == MESSAGE + "\nsecond line " + MESSAGE
    assert reports[1]["failure"]["log_tail"] == [LOG, LOG]
    assert reports[2]["recompile"]["reason"] == "0/0: " + GUARD

    d = json_in_terminal(*store, "diff", hostile.runs["a"], hostile.runs["b"], "--json")
    assert f"inductor_config.{CONFIG}" in d["environment"]
    assert any(BREAK[:40] in c["text"] for c in d["verdict"])  # a cause quotes the reason's start

    found = json_in_terminal(*store, "explain", hostile.runs["b"], "--json")
    assert any(FUNCTION in c["text"] for c in found)

    jobs = json_in_terminal(*store, "job", "--json")
    assert {j["job"] for j in jobs} == {JOB, EARLIER_JOB}
    assert json_in_terminal(*store, "job", "job", "--json")["job"] == JOB


# -- the boundary itself -------------------------------------------------------------------------

UNSAFE = ("Cc", "Cf", "Zl", "Zp", "Cs")


def test_printable_escapes_every_control_and_format_character() -> None:
    missed = [
        f"U+{cp:04X}"
        for cp in range(sys.maxunicode + 1)
        if unicodedata.category(chr(cp)) in UNSAFE and safe_text.printable(chr(cp)) == chr(cp)
    ]
    assert not missed
    assert safe_text.printable("a\x1b]52;c;eA==\x07b") == "a\\x1b]52;c;eA==\\x07b"
    assert safe_text.printable("\u202egnp.exe\n\t\x9b\x00") == "\\u202egnp.exe\\n\\t\\x9b\\x00"
    assert safe_text.printable("naïve 中文 …") == "naïve 中文 …"  # printable text is untouched
    assert safe_text.printable(4242) == "4242"


def test_the_writer_keeps_only_the_layout() -> None:
    buffer = io.StringIO()
    out = safe_text.wrap(buffer)
    assert safe_text.wrap(out) is out
    print("a\tb\x1b[2Jc", "\u2066d\r", sep="\n", file=out)
    out.write('{"x": "\\u001b"}\n')  # JSON's own escapes are plain text
    assert buffer.getvalue() == 'a\tb\\x1b[2Jc\n\\u2066d\\r\n{"x": "\\u001b"}\n'

    ascii_only = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    safe_text.wrap(ascii_only).write("caf\u00e9 \u202e")
    ascii_only.flush()
    assert ascii_only.buffer.getvalue() == b"caf\\xe9 \\u202e"


# -- a real compile, named and located by an attacker ------------------------------------------------

COMPILE = """
import importlib.util, sys
import torch, sandbox
spec = importlib.util.spec_from_file_location("hostile_module", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
torch.compile(module.step, backend="sandbox")(torch.randn(8))
assert sandbox.flush(60), "reports not stored"
"""


@pytest.mark.slow
def test_a_real_compile_with_a_hostile_name_and_location(tmp_path: Path, probe_seed: Path) -> None:
    """``SANDBOX_RUN_NAME`` with escape sequences, and the compiled function in a file whose name
    carries them: ``sandbox runs`` and ``show`` of that real run show both as text."""
    source = tmp_path / ("model" + TITLE + "\u202e" + CLIPBOARD + ".py")
    source.write_text("import torch\n\n\ndef step(x):\n    return torch.sin(x) * 2 + 1\n")
    cache = fresh_cache_dir(tmp_path, probe_seed)
    name = "nightly" + TITLE + CLIPBOARD + "\x9b2J\u202e"
    env = script_env(cache, {"SANDBOX_RUN_NAME": name})
    proc = subprocess.run(
        [sys.executable, "-c", COMPILE, str(source)], env=env, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = env["SANDBOX_STORE"]
    cli_env = {k: v for k, v in env.items() if k != "SANDBOX_STORE"}

    rc, raw = in_terminal("--store", store, "runs", env=cli_env)
    text = shown(raw)
    assert rc == 0 and "nightly\\x1b]0;owned\\x" in text, text

    rc, raw = in_terminal("--store", store, "show", "latest", env=cli_env)
    text = shown(raw)
    assert rc == 0 and repr(name) in text, text
    assert "step (" + visible(source.name)[:25] in text  # the code location (cut to its column), escaped

    rc, raw = in_terminal("--store", store, "show", "latest", "--json", env=cli_env)
    assert rc == 0
    data = json.loads(raw)
    assert data["run"]["name"] == name
    assert {r["filename"] for r in data["reports"]} == {str(source)}
