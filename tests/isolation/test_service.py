"""One compile service per host and one compile per graph (sandbox/isolation/service.py,
service_client.py, service_key.py, single_flight.py).

* The compatibility key: what splits services (torch, Triton, the sandbox, Inductor's and
  Triton's environment, the user) and what does not (the cache folders, the rank).
* Real client processes: the first starts the service, the next connects to it; a client whose
  package metadata says another torch gets a service of its own; the service refuses a hello
  of another version; with every client gone it exits after its grace period.
* A real ``torchrun --nproc-per-node 2`` job (gloo, CPU): each graph compiles once for both
  ranks, the reports say who compiled it and whom it served.
* The same job with the service killed (SIGKILL) while both ranks wait for the forward graph:
  that graph fails on each rank (a worker crash, run eagerly), the backward graph compiles in
  each rank's own worker, the job trains on.
* A real ``redis-server``: a lease holder killed mid-compile (a "host" gone) is taken over when
  its lease expires, and the other waiting host loads the new holder's reply from Redis.

redis-server from Debian and the redis package from PyPI (``apt-get install -y
--no-install-recommends redis-server``, ``pip install redis``): missing, the Redis test skips
locally and fails in CI (``CI=true``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest
from support import HELPERS, MARK, ROOT, SCRIPT_TIMEOUT_S, fresh_cache_dir, script_env, wait_gone

from sandbox.cli.main import main as cli_main
from sandbox.isolation import protocol, service_client, service_key, single_flight, sizing

GRACE_S = 2.0
APP = ROOT / "dashboard" / "app.py"


@pytest.fixture
def services() -> Iterator[Path]:
    """A short private folder for the services' sockets: a Unix socket's path holds at most 107
    bytes, and pytest's tmp_path under pytest-xdist is longer than that can take."""
    path = Path(tempfile.mkdtemp(prefix="svc-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# --- the compatibility key and the folder (pure) ---------------------------------------------------


def test_compatibility_key_splits_versions_and_settings_not_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"PATH": "/usr/bin", "TORCHINDUCTOR_CACHE_DIR": "/a", "RANK": "0", "LOCAL_RANK": "0"}
    key = service_key.key_hash(service_key.compatibility(base))
    # The rank, its cache folders and unrelated settings do not split the host's service.
    same = {**base, "TORCHINDUCTOR_CACHE_DIR": "/b", "TRITON_CACHE_DIR": "/c", "RANK": "1", "LOCAL_RANK": "1"}
    assert service_key.key_hash(service_key.compatibility(same)) == key
    # What Inductor and Triton read when a worker starts does, and so does the visible GPU set.
    for extra in ({"TORCHINDUCTOR_MAX_AUTOTUNE": "1"}, {"TRITON_PTXAS_PATH": "/x"}, {"CUDA_VISIBLE_DEVICES": "1"}):
        assert service_key.key_hash(service_key.compatibility({**base, **extra})) != key, extra
    # Another torch (its package metadata), another Triton, another sandbox: another service.
    real = service_key.versions()
    assert real["torch"][0] and real["sandbox"][0]
    for name, value in (("torch", ["2.12.0", real["torch"][1]]), ("sandbox", ["9.9", *real["sandbox"][1:]])):
        monkeypatch.setattr(service_key, "versions", lambda name=name, value=value: {**real, name: value})
        assert service_key.key_hash(service_key.compatibility(base)) != key, name
    monkeypatch.undo()
    assert service_key.key_hash(service_key.compatibility(base)) == key


def test_service_folder_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "services"
    assert service_key.service_dir({"SANDBOX_SERVICE_DIR": str(mine)}) == str(mine)
    assert (mine.stat().st_mode & 0o777) == 0o700
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o755)
    os.chmod(open_dir, 0o755)
    with pytest.raises(service_key.ServiceUnavailable, match="not a private folder"):
        service_key.service_dir({"SANDBOX_SERVICE_DIR": str(open_dir)})
    link = tmp_path / "link"
    link.symlink_to(mine)
    with pytest.raises(service_key.ServiceUnavailable, match="not a private folder"):
        service_key.service_dir({"SANDBOX_SERVICE_DIR": str(link)})
    with pytest.raises(service_key.ServiceUnavailable, match="too long"):
        service_key.paths("/tmp/" + "x" * 100, {"uid": 0})
    assert not service_client.wanted("auto", {"LOCAL_WORLD_SIZE": "1"})
    assert service_client.wanted("auto", {"LOCAL_WORLD_SIZE": "2"})
    assert service_client.wanted("on", {}) and not service_client.wanted("off", {"LOCAL_WORLD_SIZE": "8"})


def test_one_pool_on_the_host_shares_its_cores() -> None:
    """Part 3: a shared pool's workers split the cores between them only; a rank's own pool,
    between the host's ranks and its workers; every job carries the share (a worker started
    before the pool grew shrinks its compile pool), and a user's setting stays the user's."""
    assert sizing.job_threads(1, {}, cores=16, shared=True) == 16
    assert sizing.job_threads(2, {"LOCAL_WORLD_SIZE": "8"}, cores=16, shared=True) == 8
    assert sizing.job_threads(2, {"LOCAL_WORLD_SIZE": "8"}, cores=16) == 1
    assert sizing.job_threads(2, {"TORCHINDUCTOR_COMPILE_THREADS": "3"}, cores=16) is None
    assert sizing.service_worker_env(4, {"LOCAL_WORLD_SIZE": "4"}, cores=16) == {"TORCHINDUCTOR_COMPILE_THREADS": "4"}
    assert sizing.service_worker_env(4, {"TORCHINDUCTOR_COMPILE_THREADS": "3"}, cores=16) == {}
    for workers, cores in [(1, 2), (2, 2), (3, 16), (2, 15), (5, 4)]:
        threads = sizing.job_threads(workers, {}, cores=cores, shared=True)
        assert workers * threads <= max(cores, workers)


def test_report_entry_says_who_compiled_for_whom() -> None:
    me = {"pid": 1, "rank": 0, "host": "h"}
    flight = {"key": "k1", "why_not": None}
    assert single_flight.describe(flight, None, None, me) is None  # no sharing in play
    served = {"role": "compiled", "via": "service", "compiled_by": me, "served": [{"pid": 2, "rank": 1}]}
    assert single_flight.describe(flight, served, None, me) == {**served, "key": "k1"}
    no_key = {"key": None, "why_not": "the FX graph cache bypasses this graph: x"}
    entry = single_flight.describe(no_key, {"role": "compiled", "via": "service"}, None, me)
    assert (entry["role"], entry["reason"]) == ("alone", "the FX graph cache bypasses this graph: x")
    entry = single_flight.describe(flight, None, "the compile service 9 went away", me)
    assert (entry["role"], entry["reason"], entry["compiled_by"]) == ("alone", "the compile service 9 went away", me)
    lease = {"lease": {"role": "took_over", "waited_s": 3.0, "served": [{"pid": 5}]}}
    entry = single_flight.describe({**flight, "rank_specific": "inputs on cuda:1"}, lease, None, me)
    assert (entry["role"], entry["via"], entry["waited_s"], entry["served"]) == ("compiled", "redis", 3.0, [{"pid": 5}])
    assert entry["rank_specific"] == "inputs on cuda:1"


# --- real processes ------------------------------------------------------------------------------------


def _start(name: str, args: list[str], env: dict[str, str], **kw: Any) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(HELPERS / name), *args],
        cwd=str(HELPERS),
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _emitted(proc: subprocess.Popen, within: float) -> dict[str, Any]:
    """The JSON a still-running helper printed (the first result line)."""
    deadline = time.time() + within
    assert proc.stdout is not None
    while time.time() < deadline:
        line = proc.stdout.readline()
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
        if not line and proc.poll() is not None:
            break
    proc.kill()
    pytest.fail(f"no result within {within} s (rc {proc.poll()}):\n{proc.stderr.read()[-4000:] if proc.stderr else ''}")


def _services(folder: Path) -> dict[str, dict[str, Any]]:
    """The services described in ``folder``: socket hash -> {pid, started, socket}."""
    out = {}
    for info in folder.glob("*.json"):
        try:
            out[info.stem] = json.loads(info.read_text())
        except (OSError, ValueError):
            continue
    return out


def _status(socket_path: str) -> dict[str, Any]:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(socket_path)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 10, 0))
        protocol.send(s.fileno(), {"op": "status", "seq": 1})
        return protocol.recv(s.fileno())


@pytest.mark.slow
def test_first_client_starts_the_service_others_share_it_other_versions_do_not(
    tmp_path: Path, services: Path, probe_seed: Path
) -> None:
    folder = services
    base = {"SANDBOX_SERVICE": "on", "SANDBOX_SERVICE_DIR": str(folder), "SANDBOX_SERVICE_GRACE_S": str(GRACE_S)}
    env = script_env(fresh_cache_dir(tmp_path, probe_seed), base)
    pythonpath = os.pathsep.join(p for p in (str(HELPERS / "fake_torch_version"), env.get("PYTHONPATH")) if p)
    fake = dict(env, FAKE_TORCH_VERSION="2.12.0", PYTHONPATH=pythonpath)
    clients = [_start("script_service_client.py", [], env), _start("script_service_client.py", [], env)]
    other = _start("script_service_client.py", [], fake)
    try:
        seen = [_emitted(p, 120) for p in clients]
        theirs = _emitted(other, 120)
        # The two clients of this torch share one service, which one of them started.
        assert all(s["broken"] is None for s in [*seen, theirs]), [s["broken"] for s in [*seen, theirs]]
        assert seen[0]["service_pid"] == seen[1]["service_pid"]
        assert sorted(s["started_service"] for s in seen) == [False, True]
        # The client whose metadata says torch 2.12.0 got a service of its own (another socket).
        assert theirs["service_pid"] != seen[0]["service_pid"] and theirs["started_service"]
        described = _services(folder)
        assert {s["pid"] for s in described.values()} == {seen[0]["service_pid"], theirs["service_pid"]}
        ours = next(s for s in described.values() if s["pid"] == seen[0]["service_pid"])
        status = _status(ours["socket"])
        assert sorted(c["pid"] for c in status["clients"]) == sorted(p.pid for p in clients)
        assert status["size"] == 1 and status["compile_threads"] == sizing.usable_cores()
        # A hello of another version at this torch's socket is refused (checked by the service itself).
        compat = service_key.compatibility(env)
        assert service_key.paths(str(folder), compat)["socket"] == ours["socket"]  # what the clients computed
        compat["versions"] = {**compat["versions"], "torch": ["2.12.0", compat["versions"]["torch"][1]]}
        state, reason = service_client._hello(ours["socket"], compat, {"client": {"pid": 0}, "workers": 1})
        assert state == "refused" and "other versions" in reason, (state, reason)
    finally:
        for p in [*clients, other]:
            if p.stdin:
                p.stdin.close()
        for p in [*clients, other]:
            p.wait(60)
    # Every client gone: each service exits after its grace period, with its workers.
    pids = [s["pid"] for s in described.values()]
    workers = [w["pid"] for w in status["workers"]]
    assert not wait_gone(pids + workers, GRACE_S + 15), "a service outlived its last client by more than its grace"
    assert not list(folder.glob("*.sock")) and not list(folder.glob("*.json"))


@pytest.mark.slow
def test_a_dead_services_socket_is_replaced(tmp_path: Path, services: Path, probe_seed: Path) -> None:
    """A service killed by SIGKILL leaves its socket behind: the next client finds nobody
    answering there, and starts a new service in its place."""
    folder = services
    base = {"SANDBOX_SERVICE": "on", "SANDBOX_SERVICE_DIR": str(folder), "SANDBOX_SERVICE_GRACE_S": str(GRACE_S)}
    env = script_env(fresh_cache_dir(tmp_path, probe_seed), base)
    first = _start("script_service_client.py", [], env)
    try:
        dead = _emitted(first, 120)["service_pid"]
        os.kill(dead, signal.SIGKILL)
        assert not wait_gone([dead], 10) and list(folder.glob("*.sock")), "the killed service's socket stays"
    finally:
        if first.stdin:
            first.stdin.close()
        first.wait(60)
    second = _start("script_service_client.py", [], env)
    try:
        seen = _emitted(second, 120)
        assert seen["broken"] is None and seen["started_service"] and seen["service_pid"] != dead
        assert seen["clients"] == [second.pid]
    finally:
        if second.stdin:
            second.stdin.close()
        second.wait(60)
    assert not wait_gone([seen["service_pid"]], GRACE_S + 15)


def _torchrun(script: str, out: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--standalone",
            str(HELPERS / script),
            str(out),
        ],  # fmt: skip
        cwd=str(HELPERS),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _job_env(
    tmp_path: Path, services: Path, probe_seed: Path, slow_s: float, store: str = "off"
) -> tuple[dict[str, str], Path, Path]:
    folder = services
    out = tmp_path / "out"
    out.mkdir()
    env = script_env(
        fresh_cache_dir(tmp_path, probe_seed),
        {
            "SANDBOX_SERVICE_DIR": str(folder),
            "SANDBOX_SERVICE_GRACE_S": str(GRACE_S),
            "SANDBOX_STORE": store,
            "SANDBOX_JOB": "service-job",
            "SLOW_OPS_S": str(slow_s),
            "PYTHONPATH": os.pathsep.join(p for p in (str(HELPERS), os.environ.get("PYTHONPATH", "")) if p),
        },
    )
    env.pop("TORCHINDUCTOR_COMPILE_THREADS", None)
    return env, folder, out


def _finish(proc: subprocess.Popen, out: Path, timeout: float = SCRIPT_TIMEOUT_S) -> dict[int, dict[str, Any]]:
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun ran past {timeout} s\n{stdout[-3000:]}\n{stderr[-8000:]}")
    assert proc.returncode == 0, f"torchrun exited with {proc.returncode}\n{stdout[-3000:]}\n{stderr[-8000:]}"
    return {r: json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1)}


def _by_kind(rank: dict[str, Any]) -> dict[str, dict[str, Any]]:
    reports = {r["graph_kind"]: r for r in rank["reports"]}
    assert set(reports) == {"forward", "backward"} and len(rank["reports"]) == 2, [
        (r["graph_kind"], r["outcome"]) for r in rank["reports"]
    ]
    return reports


@pytest.mark.slow
def test_torchrun_job_compiles_each_graph_once(
    tmp_path: Path,
    services: Path,
    probe_seed: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = tmp_path / "runs.db"
    env, folder, out = _job_env(tmp_path, services, probe_seed, slow_s=4.0, store=str(store))
    t0 = time.time()
    ranks = _finish(_torchrun("script_service_rank.py", out, env), out)
    seconds = time.time() - t0
    assert all(d["in_sync"] and d["pool"] == "ServicePool" and d["broken"] is None for d in ranks.values())
    service = ranks[0]["service_pid"]
    assert service and ranks[1]["service_pid"] == service
    assert sorted(d["started_service"] for d in ranks.values()) == [False, True]
    # Both ranks see the one pool of the host: the same worker, with all the cores.
    assert [w["pid"] for w in ranks[0]["workers"]] == [w["pid"] for w in ranks[1]["workers"]]
    assert all(w["shared"] and w["service_pid"] == service for w in ranks[0]["workers"])

    # Each graph compiled once: one rank compiled it (through the service); the other waited
    # for that compile, or came after it and found it in the caches.
    compiles: dict[str, dict[int, str]] = {}
    for rank, d in ranks.items():
        for kind, r in _by_kind(d).items():
            sf = r["single_flight"] or {}
            if r["outcome"] == "cache_hit" and sf.get("role") != "waited":
                continue  # this rank came after the compile: the caches served it
            compiles.setdefault(kind, {})[rank] = sf["role"]
            if sf["role"] == "compiled":
                assert r["outcome"] == "isolated" and sf["via"] == "service" and sf["service_pid"] == service, r
    for kind in ("forward", "backward"):
        assert list(compiles.get(kind, {}).values()).count("compiled") == 1, (kind, compiles)
    # The forward graph's compile is slow, so both ranks reached it at once.
    assert sorted(compiles["forward"].values()) == ["compiled", "waited"], compiles
    fw = {rank: _by_kind(d)["forward"] for rank, d in ranks.items()}
    compiler = next(r for r in fw.values() if r["single_flight"]["role"] == "compiled")
    waiter = next(r for r in fw.values() if r["single_flight"]["role"] == "waited")
    waited = waiter["single_flight"]
    assert waited["compiled_by"]["rank"] == compiler["rank"]
    # The waiter waited at the graph's gate, before AOTAutograd's trace, and then loaded both
    # graphs from AOTAutograd's cache: it traced, keyed and sent nothing (isolation/graph_flight.py).
    assert (waiter["outcome"], waiter["reason"], waited["via"]) == ("cache_hit", "aot_autograd_cache", "cache_dir"), (
        waiter
    )
    bw = _by_kind(ranks[waiter["rank"]])["backward"]
    assert (bw["outcome"], bw["single_flight"]["role"], bw["single_flight"]["waited_s"]) == ("cache_hit", "waited", 0.0)
    assert [s["rank"] for s in compiler["single_flight"]["served"]] == [waiter["rank"]]
    assert _by_kind(ranks[compiler["rank"]])["backward"]["single_flight"]["served"][0]["rank"] == waiter["rank"]
    # The waiter's report: all of it a wait, no compile stages of its own.
    names = {s["name"] for s in waiter["stages"]}
    assert "wait_for_worker" in names and "compile_in_worker" not in names and "serialize" not in names
    assert waited["waited_s"] > 1.0
    print(f"2-rank job, each graph once: {seconds:.1f} s; compiles {compiles}")

    # Every face says it: Prometheus on each rank counts what that rank's reports say (the
    # backward graph may be waited for too, or found in the caches, as the ranks' timing falls).
    for rank, d in ranks.items():
        shared = [(r["single_flight"]["role"], r["single_flight"]["via"]) for r in d["reports"] if r["single_flight"]]
        for role, via in set(shared):
            line = (
                f'sandbox_single_flight_compiles_total{{role="{role}",via="{via}"}} {float(shared.count((role, via)))}'
            )
            assert line in d["metrics"], (rank, role, via, shared)
            if role == "waited":
                wait_line = (
                    f'sandbox_single_flight_wait_seconds_count{{via="{via}"}} {float(shared.count((role, via)))}'
                )
                assert wait_line in d["metrics"], (rank, shared)
    rc = cli_main(["--store", str(store), "job", "service-job"])
    text = capsys.readouterr().out
    assert rc == 0, text
    n = sum(
        1
        for d in ranks.values()
        for r in d["reports"]
        if r["outcome"] != "cache_hit" and r["single_flight"]["role"] != "waited"
    )
    assert f"compiles: {n} for 2 graphs on 2 ranks" in text, text
    wait_s = waiter["single_flight"]["waited_s"]
    assert (
        f"compiled on rank {compiler['rank']}; waited: rank {waiter['rank']} {wait_s:.2f} s for rank "
        f"{compiler['rank']} (cache_dir)" in text
    ), text
    monkeypatch.setenv("SANDBOX_STORE", str(store))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.query_params = {"job": "service-job"}
    at.switch_page("pages/job.py").run()
    assert not at.exception, [e.value for e in at.exception]
    rows = next(df.value for df in at.dataframe if "waited for" in df.value.columns).set_index("rank")
    assert rows["waited for"][waiter["rank"]] >= 1 and rows["served"][compiler["rank"]] >= 1
    graphs = next(df.value for df in at.dataframe if "compiled on" in df.value.columns)
    forward = graphs[graphs["kind"] == "forward"].iloc[0]
    assert forward["compiled on"] == str(compiler["rank"]) and forward["waited"] == f"{waiter['rank']} ({wait_s:.2f} s)"
    assert "graph(s) compiled once (on rank" in re.sub(r"\\(.)", r"\1", at.markdown[0].value)


@pytest.mark.slow
def test_service_killed_mid_compile_costs_one_graph_on_each_waiting_rank(
    tmp_path: Path, services: Path, probe_seed: Path
) -> None:
    env, folder, out = _job_env(tmp_path, services, probe_seed, slow_s=120.0)
    # Without AOTAutograd's cache the graph's gate stands aside (a waiter would have nothing to
    # load): both ranks trace the graph and wait for its one compile at the service.
    env["TORCHINDUCTOR_AUTOGRAD_CACHE"] = "0"
    proc = _torchrun("script_service_rank.py", out, env)
    killed = None
    try:
        deadline = time.time() + 240
        while time.time() < deadline and killed is None:
            for info in _services(folder).values():
                try:
                    status = _status(info["socket"])
                except OSError:
                    continue
                if any(f["waiters"] >= 1 for f in status["flights"]):  # both ranks on one compile
                    os.kill(info["pid"], signal.SIGKILL)
                    killed = (info["pid"], [w["pid"] for w in status["workers"]])
            time.sleep(0.2)
        assert killed is not None, "the ranks never waited together for one compile"
        ranks = _finish(proc, out)
    finally:
        if proc.poll() is None:
            proc.kill()
    service, workers = killed
    assert not wait_gone([service, *workers], 10)
    for d in ranks.values():
        assert d["in_sync"] and d["broken"] and f"compile service {service}" in d["broken"], d["broken"]
        fw, bw = _by_kind(d)["forward"], _by_kind(d)["backward"]
        # The graph in flight fails as a worker crash and runs eagerly, on each rank.
        assert (fw["outcome"], fw["failure"]["kind"], fw["fallback"]) == ("failed", "crash", "eager"), fw["failure"]
        assert "went away" in fw["failure"]["message"]
        assert len([w for w in d["warnings"] if "runs uncompiled (eager)" in w]) == 1, d["warnings"]
        # Nothing more: the next graph compiles in the rank's own worker.
        assert bw["outcome"] == "isolated" and bw["worker_pid"] not in workers
        assert bw["single_flight"]["role"] == "alone" and "went away" in bw["single_flight"]["reason"]
        assert [w.get("shared") for w in d["workers"]] == [None] and d["workers"][0]["pid"] == bw["worker_pid"]


@pytest.mark.slow
def test_killed_lease_holder_is_taken_over_within_the_lease_time(
    redis_server: Any, tmp_path: Path, probe_seed: Path
) -> None:
    lease_s = 30.0
    remote = {
        "TORCHINDUCTOR_FX_GRAPH_REMOTE_CACHE": "1",
        "TORCHINDUCTOR_AUTOGRAD_REMOTE_CACHE": "1",
        "TORCHINDUCTOR_REDIS_URL": redis_server.url,
        "SANDBOX_LEASE_S": str(lease_s),
        "SANDBOX_STORE": "off",
    }
    client = redis_server.client()

    def host(name: str, slow_s: float) -> subprocess.Popen:
        env = script_env(fresh_cache_dir(tmp_path / name, probe_seed), {**remote, "SLOW_OPS_S": str(slow_s)})
        return _start("script_service_lease.py", [], env, start_new_session=True)

    # Host A takes the forward graph's lease and dies mid-compile, with its worker.
    a = host("a", slow_s=300.0)
    try:
        deadline = time.time() + 180
        lease = None
        while time.time() < deadline and lease is None:
            for key in client.keys("sandbox:single-flight:*:lease:*"):
                if json.loads(client.get(key) or b"{}").get("pid") == a.pid:
                    lease = key
            time.sleep(0.2)
        assert lease is not None, "host A never took a lease"
        os.killpg(a.pid, signal.SIGKILL)
        killed_at = time.time()
        expires_at = killed_at + client.pttl(lease) / 1000.0
    finally:
        a.kill()
        a.wait(30)
    # Hosts B and C come while A's lease still stands: one takes over once it expires, the
    # other waits for that one's compile and loads its reply from Redis.
    b, c = host("b", 0.0), host("c", 0.0)
    results = {}
    for name, proc in (("b", b), ("c", c)):
        stdout, stderr = proc.communicate(timeout=SCRIPT_TIMEOUT_S)
        assert proc.returncode == 0, f"host {name} exited with {proc.returncode}\n{stderr[-6000:]}"
        results[name] = next(json.loads(line[len(MARK) :]) for line in stdout.splitlines() if line.startswith(MARK))
    forward = {name: next(r for r in d["reports"] if r["graph_kind"] == "forward") for name, d in results.items()}
    taker = next(n for n, r in forward.items() if (r["single_flight"].get("lease") or {}).get("role") == "took_over")
    waiter = next(n for n in forward if n != taker)
    took = forward[taker]["single_flight"]
    assert took["role"] == "compiled" and took["via"] == "redis" and forward[taker]["outcome"] == "isolated"
    assert took["lease"]["previous_holder"]["pid"] == a.pid
    # Taken over when A's lease expired: within the lease time of A's death.
    assert expires_at - 0.5 <= took["lease"]["took_over_at"] <= expires_at + 2.0, (took, expires_at)
    assert took["lease"]["took_over_at"] - killed_at <= lease_s + 2.0
    served = forward[waiter]["single_flight"]
    assert (served["role"], served["via"]) == ("waited", "redis"), served
    assert served["compiled_by"]["pid"] == results[taker]["pid"]
    assert forward[waiter]["outcome"] == "isolated" and forward[waiter]["worker_pid"] is None
    assert abs(results["b"]["loss"] - results["c"]["loss"]) < 1e-5
    print(
        f"lease taken over {took['lease']['took_over_at'] - killed_at:.1f} s after its holder died "
        f"(it expired at {expires_at - killed_at:.1f} s); the other host waited {served['waited_s']:.1f} s"
    )
