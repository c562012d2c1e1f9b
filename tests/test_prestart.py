"""When the workers start (sandbox/prestart.py, SANDBOX_PRESTART): at ``import torch`` in a
script that names the backend, at ``torch.compile`` in one that does not, at the first
graph that misses the caches with ``off``; never in a process that ``multiprocessing``
started. Each scenario is a fresh process (tests/helpers/script_prestart*.py)."""

from __future__ import annotations

from pathlib import Path

from support import run_script


def _pids(workers: list[dict]) -> list[int]:
    return [w["pid"] for w in workers]


def test_workers_start_at_import_torch_in_a_script_that_names_the_backend(tmp_path: Path) -> None:
    r = run_script("script_prestart.py", "spawn", cache_dir=tmp_path / "cache")
    at_import = r["after_import"]["workers"]
    assert [w["started_by"] for w in at_import] == ["import torch"], r["after_import"]
    # The same worker compiles the first graph: nothing else was started meanwhile.
    assert r["after_compile"] == at_import and r["after_first_call"] == at_import
    assert r["ok"] and [x["outcome"] for x in r["reports"]] == ["isolated"]
    assert r["reports"][0]["worker_pid"] == at_import[0]["pid"]
    # A spawned multiprocessing child re-imports torch and this script: it starts none.
    assert r["spawned_child"]["workers"] == [], r["spawned_child"]


def test_workers_start_at_torch_compile_where_the_script_does_not_name_the_backend(tmp_path: Path) -> None:
    r = run_script("script_prestart_unnamed.py", cache_dir=tmp_path / "cache")
    assert r["after_import"]["workers"] == [], r["after_import"]
    assert [w["started_by"] for w in r["after_compile"]] == ["torch.compile"], r["after_compile"]
    assert r["ok"] and [x["outcome"] for x in r["reports"]] == ["isolated"]


def test_prestart_import_starts_them_in_any_program(tmp_path: Path) -> None:
    r = run_script(
        "script_prestart_unnamed.py", "spawn", cache_dir=tmp_path / "cache", env={"SANDBOX_PRESTART": "import"}
    )
    assert [w["started_by"] for w in r["after_import"]["workers"]] == ["import torch"], r["after_import"]
    assert r["reports"][0]["worker_pid"] == r["after_import"]["workers"][0]["pid"]
    # Not in a process that multiprocessing started (a spawned DataLoader worker imports torch too).
    assert r["spawned_child"]["workers"] == [], r["spawned_child"]


def test_prestart_compile_waits_for_torch_compile(tmp_path: Path) -> None:
    r = run_script("script_prestart.py", cache_dir=tmp_path / "cache", env={"SANDBOX_PRESTART": "compile"})
    assert r["after_import"]["workers"] == []
    assert [w["started_by"] for w in r["after_compile"]] == ["torch.compile"]


def test_prestart_off_starts_a_worker_only_for_a_cache_miss(tmp_path: Path) -> None:
    env = {"SANDBOX_PRESTART": "off"}
    cold = run_script("script_prestart.py", cache_dir=tmp_path / "cache", env=env)
    assert cold["after_import"]["workers"] == [] and cold["after_compile"] == []
    assert [w["started_by"] for w in cold["after_first_call"]] == ["a graph"]
    assert [x["outcome"] for x in cold["reports"]] == ["isolated"] and cold["ok"]
    assert cold["reports"][0]["worker_pid"] == cold["after_first_call"][0]["pid"]
    # Same cache dir: every graph hits the caches, and no worker is ever started.
    warm = run_script("script_prestart.py", cache_dir=tmp_path / "cache", env=env)
    assert [x["outcome"] for x in warm["reports"]] == ["cache_hit"] and warm["ok"]
    assert warm["after_first_call"] == []


def test_bad_prestart_value_fails_torch_compile_not_import_torch(tmp_path: Path) -> None:
    r = run_script("script_prestart.py", cache_dir=tmp_path / "cache", env={"SANDBOX_PRESTART": "early"})
    assert r["after_import"]["workers"] == []  # import torch went through
    error = r["compile_error"]
    messages = " | ".join(c["message"] for c in error["chain"])
    assert "SANDBOX_PRESTART='early' is not valid" in messages and "auto, import, compile, off" in messages, error
    assert "OptionError" in [c["type"] for c in error["chain"]], error


def test_the_import_torch_hook_imports_nothing_but_the_standard_library() -> None:
    # torch turns an exception while loading a torch.backends entry point into a failed
    # `import torch`: the hook's module may import only the standard library and this package.
    import subprocess
    import sys

    code = (
        "import sys; before = set(sys.modules); import sandbox.prestart; "
        "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
        "print(sorted(m for m in new if m != 'sandbox' and m not in sys.stdlib_module_names))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]", out.stdout
