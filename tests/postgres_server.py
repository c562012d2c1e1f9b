"""A throw-away PostgreSQL server for the tests, from Debian's ``postgresql`` package
(``initdb`` + ``pg_ctl`` in a temporary directory, on a free port, as a non-root user when
run as root). The ``postgres`` fixture of ``conftest.py`` starts one per test module."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

from support import free_port


class PostgresServer:
    """A throw-away PostgreSQL cluster: initdb in a temp dir, a free port, trust auth."""

    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        # PostgreSQL refuses to run as root: run it as the postgres user (or nobody).
        self.user: dict[str, Any] = {}
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                pw = pwd.getpwnam("nobody")
            self.user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        self.base = tempfile.mkdtemp(prefix="sandbox-pg-")
        if self.user:
            os.chown(self.base, self.user["user"], self.user["group"])
        self.data = os.path.join(self.base, "data")
        self.port = free_port()
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *cmd: str, timeout: float = 120) -> None:
        proc = subprocess.run(
            [os.path.join(self.bindir, cmd[0]), *cmd[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.base,
            **self.user,
        )
        if proc.returncode != 0:
            log = Path(self.base, "server.log")
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{tail}")

    def start(self) -> None:
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl",
            "-D",
            self.data,
            "-o",
            options,
            "-l",
            os.path.join(self.base, "server.log"),
            "-w",
            "-t",
            "90",
            "start",
        )

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop", timeout=60)
        except Exception:
            pass
        shutil.rmtree(self.base, ignore_errors=True)

    def new_database(self) -> str:
        import psycopg

        name = "sandbox_" + uuid.uuid4().hex[:10]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"
