"""A shared PostgreSQL store that loses nothing: ranks of a job and another job write at
once; the server stops in the middle of the job and starts again; a process that spooled
and exited is uploaded by a later one; a corrupt spool file costs nothing else.

Writers are real processes reporting through the public path (``Runtime.publish`` into
the background writer, ``sandbox.flush()``; ``helpers/script_spool_writer.py``) with
synthetic reports: the store and the spool only see the record. The PostgreSQL server is
real, started by the ``postgres`` fixture (skipped locally without it, a failure with
``CI=true``), and stopped and started here with ``pg_ctl``.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from postgres_server import PostgresServer
from streamlit.testing.v1 import AppTest
from support import HELPERS, ROOT, parse_result

from sandbox.record.report import CompileReport, Run
from sandbox.store import StoreError, masked, open_store
from sandbox.store import spool as spool_module


def pause(server: PostgresServer) -> None:
    server._run("pg_ctl", "-D", server.data, "-m", "fast", "-w", "stop", timeout=60)


def resume(server: PostgresServer) -> None:
    options = f"-p {server.port} -k {server.base} -c listen_addresses=127.0.0.1 -c fsync=off"
    server._run(
        "pg_ctl",
        "-D",
        server.data,
        "-o",
        options,
        "-l",
        os.path.join(server.base, "server.log"),
        "-w",
        "-t",
        "90",
        "start",
    )


def writer_env(
    url: str, spool: Path, job: str | None = None, rank: int | None = None, world: int | None = None
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SANDBOX_", "OTEL_", "TORCHELASTIC_")) and k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")
    }
    env.update(SANDBOX_STORE=url, SANDBOX_SPOOL=str(spool), PYTHONUNBUFFERED="1")
    if job:
        env["SANDBOX_JOB"] = job
    if rank is not None:
        env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    return env


def start_writers(specs: list[dict[str, str]], count: int, interval: float, go: Path) -> list[subprocess.Popen]:
    procs = [
        subprocess.Popen(
            [sys.executable, str(HELPERS / "script_spool_writer.py"), str(count), str(interval), str(go)],
            cwd=str(HELPERS),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for env in specs
    ]
    deadline = time.time() + 180
    while len(list(go.parent.glob(go.name + ".*.ready"))) < len(procs):
        assert time.time() < deadline and all(p.poll() is None for p in procs), "writers did not get ready"
        time.sleep(0.05)
    go.touch()
    return procs


def finish(procs: list[subprocess.Popen]) -> list[dict[str, Any]]:
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"writer failed ({p.returncode}):\n{out[-2000:]}\n{err[-4000:]}"
        result = parse_result(out)
        assert result is not None, out[-2000:] + err[-4000:]
        result["stderr"] = err
        results.append(result)
    return results


def run_writers(specs: list[dict[str, str]], count: int, go: Path) -> list[dict[str, Any]]:
    return finish(start_writers(specs, count, 0.0, go))


def stored_ids(url: str) -> dict[str, list[str]]:
    """run id -> its report ids, as the store has them (none while no writer made the schema)."""
    try:
        store = open_store(url, readonly=True)
    except StoreError as e:
        assert "no run data yet" in str(e), e
        return {}
    try:
        return {r["run_id"]: sorted(x.report_id for x in store.reports(r["run_id"])) for r in store.runs()}
    finally:
        store.close()


def spool_files(spool: Path) -> list[Path]:
    return sorted(p for p in spool.rglob("*") if p.is_file() and p.name != "location.txt")


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sandbox.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_postgresql_stopped_in_the_middle_of_a_job_loses_nothing(
    postgres: PostgresServer,
    tmp_path: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = postgres.new_database()
    spool = tmp_path / "spool"
    count = 80
    specs = [writer_env(url, spool, "nightly-7", rank, 3) for rank in range(3)]
    specs.append(writer_env(url, spool, "experiment-2", 0, 1))  # another job, at the same time
    procs = start_writers(specs, count, 0.1, tmp_path / "go")
    # Stop the server once the job is well under way, keep it down a few seconds, start it again.
    deadline = time.time() + 120
    while sum(len(ids) for ids in stored_ids(url).values()) < 40:
        assert time.time() < deadline and all(p.poll() is None for p in procs), "the writers did not get going"
        time.sleep(0.1)
    pause(postgres)
    try:
        stopped_at = time.time()
        time.sleep(2.5)
        still_writing = sum(p.poll() is None for p in procs)
    finally:
        resume(postgres)
    results = finish(procs)

    assert still_writing == len(procs), "the writers finished before the server came back: no outage in the middle"
    spooled = [r for r in results if "kept in the spool" in r["stderr"]]
    assert spooled, "no writer noticed the outage: " + results[0]["stderr"][-2000:]
    assert sum(r["spooled"] for r in results) > 0
    stored = stored_ids(url)
    for r in results:
        assert stored.get(r["run_id"]) == sorted(r["ids"]), f"rank {r['rank']} of {r['job']}: reports missing"
    assert spool_files(spool) == [], "everything was uploaded, nothing is left in the spool"
    store = open_store(url, readonly=True)
    try:
        ranks = sorted(r["rank"] for r in store.runs(job="nightly-7"))
        kernels = store.reports(results[0]["run_id"], with_sources=True)[-1].kernels
    finally:
        store.close()
    assert ranks == [0, 1, 2]
    assert (
        kernels[0]["source"] == f"// kernel {count - 1} of graph {count - 1}\n"
    )  # spooled reports keep their kernel sources
    print(
        f"outage {stopped_at:.0f}+2.5 s; spooled {[r['spooled'] for r in results]}, uploaded "
        f"{[r['uploaded'] for r in results]}"
    )

    # The job reads back through the CLI from PostgreSQL: three ranks, the same graphs.
    proc = cli("job", "nightly-7", "--store", url, env=writer_env(url, spool))
    assert proc.returncode == 0, proc.stderr
    assert (
        "job nightly-7: 3 ranks (world size 3)" in proc.stdout
        and f"divergence: 0 of {count} graphs differ" in proc.stdout
    )

    # ... and through the dashboard pointed at PostgreSQL.
    monkeypatch.setenv("SANDBOX_STORE", url)
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60)
    at.run()
    at.query_params = {"job": "nightly-7"}
    at.switch_page("pages/job.py").run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Ranks"] == "3 of 3" and metrics["Graphs that diverge"] == f"0 of {count}"


@pytest.mark.slow
def test_a_later_process_uploads_what_an_earlier_one_spooled(postgres: PostgresServer, tmp_path: Path) -> None:
    url = postgres.new_database()
    spool = tmp_path / "spool"
    env = writer_env(url, spool, "job-a", 0, 1)
    pause(postgres)
    try:
        first = run_writers([env], 10, tmp_path / "go1")[0]
        assert "kept in the spool" in first["stderr"] and first["spooled"] == 10 and first["written"] == 0
        files = spool_files(spool)
        assert len(files) == 1 and files[0].name.startswith(first["run_id"])
        listing = cli("spool", "--store", url, env=env)
        assert listing.returncode == 0, listing.stderr
        assert "10 report(s) in 1 spool file(s) waiting for " + url in listing.stdout
    finally:
        resume(postgres)
    assert first["run_id"] not in stored_ids(url)

    later = run_writers([writer_env(url, spool, "job-b", 0, 1)], 5, tmp_path / "go2")[0]
    assert later["written"] == 5 and later["uploaded"] == 10 and "kept in the spool" not in later["stderr"]
    stored = stored_ids(url)
    assert stored[first["run_id"]] == sorted(first["ids"]) and stored[later["run_id"]] == sorted(later["ids"])
    assert spool_files(spool) == []
    store = open_store(url, readonly=True)
    try:
        assert store.get_run(first["run_id"])["job"] == "job-a"  # the run itself came through the spool
    finally:
        store.close()


@pytest.mark.slow
def test_corrupt_spool_file_is_reported_and_nothing_else_is_lost(postgres: PostgresServer, tmp_path: Path) -> None:
    url = postgres.new_database()
    spool = tmp_path / "spool"
    env = writer_env(url, spool)
    pause(postgres)
    try:
        results = run_writers([writer_env(url, spool, "job-c", rank, 2) for rank in range(2)], 8, tmp_path / "go")
    finally:
        resume(postgres)
    files = spool_files(spool)
    assert len(files) == 2
    bad = next(f for f in files if f.name.startswith(results[0]["run_id"]))
    lines = bad.read_bytes().split(b"\n")
    lines.insert(3, b'{"report": {"run_id": tru')  # a torn line in the middle; every report line stays
    bad.write_bytes(b"\n".join(lines))
    corrupt = bad.read_bytes()

    proc = cli("spool", "--upload", "--store", url, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"spool file {bad} is corrupt (line 4:" in proc.stderr and f"kept as {bad}.corrupt" in proc.stderr
    assert "uploaded 16 report(s) and 2 run(s) from 2 spool file(s)" in proc.stdout
    stored = stored_ids(url)
    for r in results:
        assert stored[r["run_id"]] == sorted(r["ids"])
    assert spool_files(spool) == [Path(f"{bad}.corrupt")] and Path(f"{bad}.corrupt").read_bytes() == corrupt

    # Listed, never uploaded again, never touched.
    again = cli("spool", "--upload", "--store", url, env=env)
    assert again.returncode == 0 and "uploaded 0 report(s)" in again.stdout, again.stdout + again.stderr
    listing = cli("spool", "--store", url, env=env)
    assert "0 report(s) in 0 spool file(s)" in listing.stdout and "CORRUPT" in listing.stdout
    assert Path(f"{bad}.corrupt").read_bytes() == corrupt


@pytest.mark.slow
def test_spool_in_a_read_only_place_keeps_reports_in_memory_with_one_warning(tmp_path: Path) -> None:
    """Neither the store nor the spool can be written: the job goes on, and says so once."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    env = writer_env(str(blocker / "runs.db"), blocker / "spool")
    result = run_writers([env], 3, tmp_path / "go")[0]
    assert result["written"] == 0 and result["spooled"] == 0
    assert result["stderr"].count("RuntimeWarning: sandbox: reports are not stored") == 1, result["stderr"][-3000:]
    assert "SANDBOX_SPOOL" in result["stderr"] and "kept in the spool" not in result["stderr"]


def test_spool_root_and_masked_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SANDBOX_SPOOL", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert spool_module.spool_root() == str(tmp_path / "xdg" / "torch-compile-sandbox" / "spool")
    monkeypatch.setenv("SANDBOX_SPOOL", str(tmp_path / "mine"))
    assert spool_module.spool_root() == str(tmp_path / "mine")
    assert masked("postgresql://team:s3cret@db:5432/runs") == "postgresql://team:***@db:5432/runs"
    a, b = spool_module.spool_dir("postgresql://a/x"), spool_module.spool_dir("postgresql://a/y")
    assert a != b and os.path.dirname(a) == str(tmp_path / "mine")


def test_a_spool_file_in_use_is_left_to_its_writer(tmp_path: Path) -> None:
    """An uploader never takes a file whose writer still has it open (it would keep appending
    to a deleted file); once the writer lets go, the next upload takes it whole."""
    location = str(tmp_path / "runs.db")
    root = str(tmp_path / "spool")
    run = Run(job="j", rank=0)
    reports = [
        CompileReport(run_id=run.run_id, compile_id=f"{i}/0", graph_kind="forward", outcome="isolated")
        for i in range(3)
    ]
    writer = spool_module.Spool(location, root)
    writer.append(run.to_dict(), [r.to_dict() for r in reports[:2]])
    store = open_store(location)
    try:
        busy = spool_module.upload(store, location, root)
        assert (busy.busy, busy.reports, busy.files) == (1, 0, 0)
        writer.append(run.to_dict(), [reports[2].to_dict()])  # still writing
        assert [p["reports"] for p in spool_module.pending(location, root)] == [3]
        writer.close()
        done = spool_module.upload(store, location, root)
        assert (done.busy, done.runs, done.reports, done.files) == (0, 1, 3, 1)
        assert sorted(r.report_id for r in store.reports(run.run_id)) == sorted(r.report_id for r in reports)
        assert store.get_run(run.run_id)["job"] == "j"
    finally:
        store.close()
    assert spool_module.pending(location, root) == []
    assert (tmp_path / "spool" / os.path.basename(writer.dir) / "location.txt").read_text().strip() == location


def test_a_forked_child_does_not_hold_the_parents_spool_file(tmp_path: Path) -> None:
    """A DataLoader worker forked while the parent spools: once the parent lets go of its
    file, an upload takes it, though the child is still alive."""
    location = str(tmp_path / "runs.db")
    root = str(tmp_path / "spool")
    run = Run()
    writer = spool_module.Spool(location, root)
    writer.append(
        run.to_dict(),
        [CompileReport(run_id=run.run_id, compile_id="0/0", graph_kind="forward", outcome="isolated").to_dict()],
    )
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child waits, holding whatever it inherited, until the parent is done
        os.close(write)
        os.read(read, 1)
        os._exit(0)
    try:
        os.close(read)
        writer.close()
        store = open_store(location)
        try:
            # Another thread of this process may be starting a subprocess (its child holds a copy
            # of every descriptor until it execs): busy for a moment is not the forked child
            # holding the file, which would stay busy until the child is told to exit.
            deadline = time.time() + 3
            done = spool_module.upload(store, location, root)
            while done.busy and time.time() < deadline:
                time.sleep(0.1)
                done = spool_module.upload(store, location, root)
        finally:
            store.close()
        assert (done.busy, done.reports, done.files) == (0, 1, 1)
    finally:
        os.write(write, b"x")
        os.close(write)
        os.waitpid(child, 0)


def test_a_line_the_store_cannot_take_is_corrupt_too(tmp_path: Path) -> None:
    """Valid JSON that is not a run or a report (a report without its id) never reaches the
    store, where it would fail every upload: the file is corrupt, the rest is uploaded."""
    location = str(tmp_path / "runs.db")
    root = str(tmp_path / "spool")
    run = Run()
    good = CompileReport(run_id=run.run_id, compile_id="0/0", graph_kind="forward", outcome="isolated")
    writer = spool_module.Spool(location, root)
    writer.append(run.to_dict(), [good.to_dict()])
    path = Path(writer.path)
    writer.close()
    broken = good.to_dict()
    del broken["report_id"]
    with open(path, "a") as f:
        f.write(json.dumps({"report": broken}) + "\n" + json.dumps([1, 2]) + "\n")
    store = open_store(location)
    try:
        done = spool_module.upload(store, location, root)
        assert (done.runs, done.reports, done.files) == (1, 1, 0)
        assert done.corrupt == [
            f"spool file {path} is corrupt (line 3: neither a run nor a report (and 1 more)); its 1 "
            f"readable reports were uploaded and it was kept as {path}.corrupt: inspect it, then delete it"
        ]
        assert [r.report_id for r in store.reports(run.run_id)] == [good.report_id]
    finally:
        store.close()


# --- trust: private files, this user's regular files only, nothing replaced ----------------------


def spool_with(location: str, root: str, reports: list[CompileReport], run: Run) -> Path:
    """A closed spool file holding ``run`` and ``reports``, as a writer that exited leaves it."""
    writer = spool_module.Spool(location, root)
    writer.append(run.to_dict(), [r.to_dict() for r in reports])
    path = Path(writer.path)
    writer.close()
    return path


def test_spool_folders_and_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    location = "postgresql://team:s3cret@db/runs?password=s3cret"
    root = tmp_path / "spool"
    run = Run()
    old = os.umask(0)
    try:
        path = spool_with(
            location,
            str(root),
            [CompileReport(run_id=run.run_id, compile_id="0/0", graph_kind="forward", outcome="isolated")],
            run,
        )
    finally:
        os.umask(old)
    label = path.parent / "location.txt"
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in (root, path.parent, path, label)}
    assert modes == {root: 0o700, path.parent: 0o700, path: 0o600, label: 0o600}, modes
    assert label.read_text() == "postgresql://team:***@db/runs?password=***\n"
    assert "s3cret" not in path.parent.name  # nor its hash: the folder is named after the masked location
    assert path.parent.name == spool_module.spool_dir("postgresql://team:other@db/runs?password=x", str(root))[-16:]

    # A folder an earlier version left open to others is closed before it is written again.
    path.parent.chmod(0o755)
    spool_with(
        location,
        str(root),
        [CompileReport(run_id=run.run_id, compile_id="0/0", graph_kind="forward", outcome="isolated")],
        run,
    )
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_only_regular_files_of_this_user_are_listed_or_uploaded(tmp_path: Path) -> None:
    location = str(tmp_path / "runs.db")
    root = str(tmp_path / "spool")
    run = Run()
    mine = spool_with(
        location,
        root,
        [CompileReport(run_id=run.run_id, compile_id="0/0", graph_kind="forward", outcome="isolated")],
        run,
    )
    folder = mine.parent
    # Spool lines planted outside the spool, linked in; a FIFO that would block a reader.
    planted_run = Run()
    planted = spool_with(
        str(tmp_path / "elsewhere.db"),
        str(tmp_path / "other-spool"),
        [CompileReport(run_id=planted_run.run_id, compile_id="0/0", graph_kind="forward", outcome="isolated")],
        planted_run,
    )
    (folder / "link.jsonl").symlink_to(planted)
    os.mkfifo(folder / "fifo.jsonl")
    foreign = None
    if os.geteuid() == 0:  # only root can give a file to another user; elsewhere this part is not run
        stranger_run = Run()
        foreign = folder / "stranger.jsonl"
        shutil.copy(spool_with(location, str(tmp_path / "s2"), [], stranger_run), foreign)
        os.chown(foreign, 65534, 65534)

    assert [Path(p["path"]) for p in spool_module.pending(location, root)] == [mine]
    store = open_store(location)
    try:
        done = spool_module.upload(store, location, root)
        assert (done.files, done.runs, done.reports) == (1, 1, 1)
        assert [r["run_id"] for r in store.runs()] == [run.run_id]  # nothing planted got in
    finally:
        store.close()
    assert (folder / "link.jsonl").is_symlink() and planted.exists() and (folder / "fifo.jsonl").exists()
    assert foreign is None or foreign.exists()


def test_an_upload_never_replaces_what_the_store_has(tmp_path: Path) -> None:
    """A spool file is older than the store, or someone else's idea of it: a run or report whose
    id the store has is skipped, whatever the file says."""
    location = str(tmp_path / "runs.db")
    root = str(tmp_path / "spool")
    run = Run(name="real")
    stored = CompileReport(run_id=run.run_id, compile_id="0/0", graph_kind="forward", outcome="isolated", duration_s=1)
    store = open_store(location)
    try:
        store.put_run(run)
        store.put_reports([stored])
        changed = CompileReport.from_dict(dict(stored.to_dict(), outcome="failed", duration_s=99.0))
        fresh = CompileReport(run_id=run.run_id, compile_id="1/0", graph_kind="forward", outcome="isolated")
        spool_with(location, root, [changed, fresh], Run.from_dict(dict(run.to_dict(), name="forged")))
        done = spool_module.upload(store, location, root)
        assert (done.files, done.runs, done.reports, done.skipped) == (1, 0, 1, 2)
        kept = {r.report_id: r for r in store.reports(run.run_id)}
        assert kept[stored.report_id].outcome == "isolated" and kept[stored.report_id].duration_s == 1
        assert fresh.report_id in kept and store.get_run(run.run_id)["name"] == "real"
    finally:
        store.close()


def test_uploading_for_a_mistyped_location_creates_nothing(tmp_path: Path) -> None:
    root = str(tmp_path / "spool")
    typo = tmp_path / "typo" / "runs.db"
    with pytest.raises(StoreError, match="no store at"):
        spool_module.upload_location(str(typo), root)
    assert not typo.parent.exists()
    # With reports waiting for it, the location is the writer's own: the store is made.
    run = Run()
    spool_with(
        str(typo),
        root,
        [CompileReport(run_id=run.run_id, compile_id="0/0", graph_kind="forward", outcome="isolated")],
        run,
    )
    done = spool_module.upload_location(str(typo), root)
    assert (done.files, done.reports) == (1, 1) and typo.exists()


def test_a_spool_folder_not_this_users_own_is_never_written(tmp_path: Path) -> None:
    """A link planted where the folder goes (to somewhere others read), or, as root, a folder
    given to another user: the writer refuses it (the job goes on: the store sink warns)."""
    location = str(tmp_path / "runs.db")
    root = tmp_path / "spool"
    folder = Path(spool_module.spool_dir(location, str(root)))
    root.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    folder.symlink_to(elsewhere)
    with pytest.raises(spool_module.SpoolError, match="not a directory of this user"):
        spool_with(location, str(root), [], Run())
    assert list(elsewhere.iterdir()) == []
    if os.geteuid() == 0:  # only root can give a folder to another user; elsewhere this part is not run
        folder.unlink()
        folder.mkdir()
        os.chown(folder, 65534, 65534)
        with pytest.raises(spool_module.SpoolError, match="not a directory of this user"):
            spool_with(location, str(root), [], Run())
        assert list(folder.iterdir()) == []
