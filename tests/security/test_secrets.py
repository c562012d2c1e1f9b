"""A PostgreSQL password never shows: not in the CLI's errors, the training process's warning,
the spool's listing, nor any file the spool writes, for every form libpq accepts a location in
(a URL's user info, a ``password=`` query parameter, a keyword string, quoted values) and for
schemes libpq does not know (a typo, a driver suffix), which are refused by name instead of
being taken for a SQLite file.

The server is the ``postgres`` fixture's real PostgreSQL, made to ask for a password
(``scram-sha-256``) so every location here is refused by the server for its wrong password.
The CLI is the real console script; the training process compiles with ``backend="sandbox"``.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from postgres_server import PostgresServer
from support import script_env

from sandbox.store import StoreError, masked, open_store, redact
from sandbox.store.location import WITHHELD, secrets

SCRIPT = Path(sys.executable).with_name("sandbox")
ROLE = "sandbox_team"
SECRET = "Tr0ub4dor-and-3"
SPACED = "open sesame 42 Zq"  # a quoted keyword value with blanks
LEAKS = (SECRET, SPACED, "sesame", "Tr0ub4dor")

# Each form of a location that carries a password (SECRET, or SPACED where quoted). ``real``: libpq
# takes it and the server refuses the password; otherwise the sandbox refuses the location itself.
FORMS = {
    "url": (True, "postgresql://{role}:{secret}@127.0.0.1:{port}/postgres"),
    "postgres-scheme": (True, "postgres://{role}:{secret}@127.0.0.1:{port}/postgres"),
    "no-user-in-url": (True, "postgresql://:{secret}@127.0.0.1:{port}/postgres?user={role}"),
    "query": (True, "postgresql://{role}@127.0.0.1:{port}/postgres?sslmode=disable&password={secret}"),
    "query-first": (True, "postgresql://127.0.0.1:{port}/postgres?password={secret}&user={role}"),
    "query-encoded-key": (True, "postgresql://{role}@127.0.0.1:{port}/postgres?pass%77ord={secret}"),
    "keywords": (True, "host=127.0.0.1 port={port} user={role} password={secret} dbname=postgres"),
    "keywords-spaced": (True, "host=127.0.0.1 port={port} user={role} password = {secret} dbname=postgres"),
    "keywords-quoted": (True, "host=127.0.0.1 port={port} user={role} password='{spaced}' dbname=postgres"),
    "typo-scheme": (False, "postgresq://{role}:{secret}@127.0.0.1:{port}/postgres"),
    "driver-scheme": (False, "postgresql+psycopg://{role}:{secret}@127.0.0.1:{port}/postgres"),
    "typo-no-slashes": (False, "postgresql:{role}:{secret}@127.0.0.1:{port}/postgres"),
}


def form(name: str, port: int) -> str:
    return FORMS[name][1].format(role=ROLE, secret=SECRET, spaced=SPACED, port=port)


def leaked(text: str) -> list[str]:
    return [s for s in LEAKS if s in text]


@pytest.fixture(scope="module")
def guarded(postgres: PostgresServer) -> PostgresServer:
    """The module's server, asking every role but the admin for a password over TCP."""
    import psycopg

    with psycopg.connect(postgres.admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD 'the-right-one'")
    Path(postgres.data, "pg_hba.conf").write_text(
        "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
    )
    with psycopg.connect(postgres.admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
    deadline = time.time() + 30
    while True:  # the reload is asynchronous: wait until a wrong password is refused
        try:
            psycopg.connect(f"postgresql://{ROLE}:wrong@127.0.0.1:{postgres.port}/postgres").close()
        except psycopg.OperationalError as e:
            if "password authentication failed" in str(e):
                return postgres
        assert time.time() < deadline, "the server did not start asking for passwords"
        time.sleep(0.1)


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SANDBOX_", "OTEL_", "PG"))}
    env.update(
        HOME=str(tmp_path / "home"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        SANDBOX_SPOOL=str(tmp_path / "spool"),
        SANDBOX_PRESTART="off",
        PYTHONUNBUFFERED="1",
    )
    return env


def sandbox_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    return subprocess.run(
        [str(SCRIPT), *args], cwd=cwd, env=cli_env(tmp_path) | env, capture_output=True, text=True, timeout=120
    )


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*")) if path.exists() else []


# --- masking, as a function ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FORMS))
def test_masked_hides_the_password_of_every_form(name: str) -> None:
    location = form(name, 5432)
    shown = masked(location)
    assert leaked(shown) == [] and "***" in shown, shown
    assert "127.0.0.1" in shown and ROLE in shown  # the rest still says which store
    assert SECRET in secrets(location) or SPACED in secrets(location)


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("postgresql://team:s3cr@t/x@db/runs", "postgresql://team:***@db/runs"),  # unencoded @ and /
        ("postgresql://db/runs?a=1&sslpassword=s3cret", "postgresql://db/runs?a=1&sslpassword=***"),
        (r"host=db password='it\'s s3cret' dbname=runs", "host=db password=*** dbname=runs"),
        ("host=db password='never closed", "host=db password=***"),
        ("/data/runs.db", "/data/runs.db"),  # a path shows whole
        ("postgresql://team@db:5432/runs", "postgresql://team@db:5432/runs"),  # no password: nothing to hide
    ],
)
def test_masked_edge_cases(location: str, shown: str) -> None:
    assert masked(location) == shown


def test_a_driver_message_quoting_part_of_a_password_is_withheld() -> None:
    """libpq quotes the text around a parse error: half a password is still a leak."""
    location = "postgresql://team:p4ss@word@db/runs"  # libpq ends the user info at the first @
    assert redact('could not translate host name "word@db"', location) == WITHHELD
    assert redact(f"connection to {location} failed", location) == "connection to postgresql://team:***@db/runs failed"
    location = "host=db password=two words dbname=x"  # unquoted: libpq reads "two", then chokes on "words"
    assert redact('missing "=" after "words" in connection info string', location) == WITHHELD


# --- the store's entry point: routing and errors -------------------------------------------------


@pytest.mark.parametrize("name", ["typo-scheme", "driver-scheme", "typo-no-slashes"])
def test_a_mistyped_scheme_is_refused_by_name_and_makes_no_file(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError) as e:
        open_store(form(name, 5432))
    assert "not a store location" in str(e.value) and masked(form(name, 5432)) in str(e.value)
    assert leaked(str(e.value)) == []
    assert files_under(tmp_path) == []


def test_a_keyword_string_goes_to_postgresql_not_to_a_sqlite_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from support import free_port

    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError) as e:
        open_store(f"host=127.0.0.1 port={free_port()} user=team password={SECRET} dbname=runs")
    assert "cannot reach PostgreSQL store" in str(e.value) and "password=***" in str(e.value)
    assert leaked(str(e.value)) == [] and e.value.__cause__ is None
    assert files_under(tmp_path) == []


# --- the CLI, against the real server ------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FORMS))
def test_cli_errors_never_show_the_password(name: str, guarded: PostgresServer, tmp_path: Path) -> None:
    real, _ = FORMS[name]
    location = form(name, guarded.port)
    for args in (["runs"], ["spool", "--upload"]):
        proc = sandbox_cli(tmp_path, *args, "--store", location)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 1, (args, output)
        assert leaked(output) == [], (args, output)
        assert masked(location) in proc.stderr, (args, output)
        assert "password in --store is visible to other users" in proc.stderr, (args, output)
        if real:  # it reached the server, which refused the wrong password
            assert "password authentication failed" in proc.stderr, (args, output)
        else:
            assert "not a store location" in proc.stderr, (args, output)
    assert files_under(tmp_path / "cwd") == []  # no SQLite file named after the location
    assert not (tmp_path / "cache").exists()  # nor the default store


def test_a_password_from_the_environment_gets_no_command_line_warning(tmp_path: Path) -> None:
    """SANDBOX_STORE is the way the --store warning points to: it says nothing there (the port is
    closed, so the command fails on the connection, with the password masked)."""
    proc = sandbox_cli(tmp_path, "runs", SANDBOX_STORE=f"postgresql://someone:{SECRET}@127.0.0.1:1/runs")
    assert proc.returncode == 1, proc.stderr
    assert "visible to other users" not in proc.stderr
    assert leaked(proc.stdout + proc.stderr) == [], proc.stderr


# --- the training process, its spool and the listing ----------------------------------------------

TRAINING = r"""
import json, time
import torch
import sandbox

model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
step = torch.compile(model, backend="sandbox")
x = torch.randn(4, 8)
correct = torch.allclose(step(x), model(x))
print(json.dumps({"correct": correct, "flushed": sandbox.flush(60), "reports": len(sandbox.reports())}))
"""

# Publishes through the public path only (no compile): quicker, for the other forms.
WRITER = r"""
import json
import sandbox
from sandbox import runtime
from sandbox.options import Options
from sandbox.record.report import CompileReport

runtime.current().configure(Options.resolve())
run = runtime.current().run()
runtime.current().publish(CompileReport(run_id=run.run_id, compile_id="0/0", graph_kind="forward", outcome="isolated"))
print(json.dumps({"flushed": sandbox.flush(60), "reports": 1}))
"""


def check_spool(spool: Path, locations: list[str]) -> None:
    """Private modes, no password in any name or byte, one masked label per location."""
    labels = []
    for path in [spool, *files_under(spool)]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert leaked(path.name) == [], path
        if path.is_dir():
            assert path == spool or mode == 0o700, (path, oct(mode))
            continue
        assert mode == 0o600, (path, oct(mode))
        text = path.read_text()
        assert leaked(text) == [], (path, text[:500])
        if path.name == "location.txt":
            labels.append(text)
    assert sorted(labels) == sorted(masked(location) + "\n" for location in locations)


@pytest.mark.slow
def test_training_warning_spool_and_listing_never_show_the_password(
    guarded: PostgresServer, tmp_path: Path, cache_dir: Path
) -> None:
    spool = tmp_path / "spool"
    location = form("url", guarded.port)
    proc = subprocess.run(
        [sys.executable, "-c", TRAINING],
        env=script_env(cache_dir, {"SANDBOX_STORE": location, "SANDBOX_SPOOL": str(spool)}),
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["correct"] and result["flushed"] and result["reports"] >= 1, result
    assert proc.stderr.count("RuntimeWarning: sandbox:") == 1, proc.stderr[-4000:]
    assert f"the run store {masked(location)} cannot be written" in proc.stderr, proc.stderr[-4000:]
    assert "password authentication failed" in proc.stderr and "kept in the spool" in proc.stderr
    assert leaked(proc.stdout + proc.stderr) == []

    # More processes, through other forms: each spools under its own masked label.
    others = [form(name, guarded.port) for name in ("keywords-quoted", "query", "typo-scheme")]
    for other in others:
        writer = subprocess.run(
            [sys.executable, "-c", WRITER],
            env=script_env(cache_dir, {"SANDBOX_STORE": other, "SANDBOX_SPOOL": str(spool)}),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert writer.returncode == 0, writer.stderr[-4000:]
        assert writer.stderr.count("RuntimeWarning: sandbox:") == 1 and leaked(writer.stdout + writer.stderr) == [], (
            writer.stderr[-4000:]
        )
    check_spool(spool, [location, *others])

    listing = sandbox_cli(tmp_path, "spool", "--store", location)
    assert listing.returncode == 0, listing.stderr
    assert f"waiting for {masked(location)}" in listing.stdout, listing.stdout
    for other in others:
        assert f"also spooled: {masked(other)}" in listing.stdout, listing.stdout
    assert leaked(listing.stdout + listing.stderr) == []


def test_a_label_an_earlier_version_wrote_is_masked_when_listed(tmp_path: Path) -> None:
    """Earlier versions masked only ``user:password@``: their labels may show a query password."""
    import hashlib

    old = f"postgresql://team@db:5432/runs?password={SECRET}"
    folder = tmp_path / "spool" / hashlib.sha256(old.encode()).hexdigest()[:16]
    folder.mkdir(parents=True, mode=0o700)
    (folder / "location.txt").write_text(old + "\n")
    listing = sandbox_cli(tmp_path, "spool", "--store", str(tmp_path / "other.db"))
    assert listing.returncode == 0, listing.stderr
    assert f"also spooled: {masked(old)}" in listing.stdout and leaked(listing.stdout) == [], listing.stdout
