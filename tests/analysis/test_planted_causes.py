"""Planted causes: pairs of real runs through ``backend="sandbox"`` that differ by exactly one
cause, and the verdict's first sentence names it - in ``sandbox diff`` (text and ``--json``) and
on the dashboard's Compare page.

The runs (``helpers/script_planted.py``, a two-step MLP training run): ``base`` on an empty
cache, then ``warm`` (the same again, every graph from the caches); each variant runs on its own
copy of that warm cache, into one store. The ``load`` variant plants a graph break and runs
beside a spinning process: a busy machine must not flip the verdict to the environment. Only one
torch is installed here, so the version pair is a warm run whose stored Run says torch 2.12.0.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, fresh_cache_dir, run_script

from sandbox.store import open_store

# Each planted cause, the run it is compared with, and what the first sentence must say.
PAIRS = {
    "break": ("warm", "graph_break_added", "B has a new graph break at script_planted.py:{break_line}"),
    "load": ("warm", "graph_break_added", "B has a new graph break at script_planted.py:{break_line}"),
    "recompile": ("warm", "recompile", "B recompiled forward at script_planted.py:"),
    "shape": ("warm", "shape_change", "B's graph of forward at script_planted.py:"),
    "gelu": ("warm", "kernel_change", "B's forward graph of forward at script_planted.py:"),
    "config": ("warm", "config_change", "B compiles with another Inductor config, max_fusion_size=32"),
    "mode": ("warm", "mode_change", "B compiles with another mode"),
    "failure": ("warm", "compile_failure", "B's forward graph of forward at script_planted.py:"),
    "version": ("warm", "version_change", "B runs torch 2.12.0"),
    "env": ("base", "environment", "B waited"),
}
WORDS = {"gelu": "calls gelu where A called relu", "recompile": "size mismatch", "failure": "ran eagerly"}


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory, probe_seed: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("planted")
    store = root / "runs.db"
    warm_cache = fresh_cache_dir(root / "warm", probe_seed)

    def run(case: str, cache: Path, **env: str) -> dict[str, Any]:
        result = run_script("script_planted.py", case, cache_dir=cache, env={"SANDBOX_STORE": str(store), **env})
        return dict(result)

    runs = {"base": run("base", warm_cache), "warm": run("base", warm_cache)}
    for case in ("break", "recompile", "shape", "gelu", "config", "mode", "failure", "load"):
        cache = root / case / "inductor-cache"
        shutil.copytree(warm_cache, cache, ignore=shutil.ignore_patterns("locks", "*.lock"))
        extra = {"SANDBOX_WORKER_WARMUP": "normal"} if case == "load" else {}  # an idle-class warm-up would starve
        runs[case] = run(case, cache, **extra)
    version_cache = root / "version" / "inductor-cache"
    shutil.copytree(warm_cache, version_cache, ignore=shutil.ignore_patterns("locks", "*.lock"))
    runs["version"] = run("base", version_cache)
    runs["env"] = run("base", fresh_cache_dir(root / "env", probe_seed), SANDBOX_PRESTART="off")
    s = open_store(str(store))
    try:
        stored = s.get_run(runs["version"]["run_id"])
        s.put_run(dict(stored, torch="2.12.0"))
    finally:
        s.close()
    return {"store": str(store), "runs": runs}


def _diff(store: str, a: str, b: str, *flags: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "sandbox.cli", "--store", store, "diff", a, b, *flags],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(ROOT),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_the_base_runs_compiled_in_a_worker_then_hit_the_caches(planted: dict[str, Any]) -> None:
    runs = planted["runs"]
    assert set(runs["base"]["outcomes"]) == {"isolated"}, runs["base"]
    assert set(runs["warm"]["outcomes"]) == {"cache_hit"}, runs["warm"]
    assert "failed" in runs["failure"]["outcomes"]


@pytest.mark.parametrize("case", sorted(PAIRS))
def test_the_first_sentence_names_the_planted_cause(planted: dict[str, Any], case: str) -> None:
    against, cause, start = PAIRS[case]
    runs = planted["runs"]
    start = start.format(break_line=runs[case]["break_line"])
    a, b = runs[against]["run_id"], runs[case]["run_id"]
    verdict = json.loads(_diff(planted["store"], a, b, "--json"))["verdict"]
    assert verdict, f"no cause found for {case}"
    first = verdict[0]
    assert set(first) >= {"cause", "text", "graphs", "seconds"}
    assert first["cause"] == cause and first["text"].startswith(start), verdict
    if case in WORDS:
        assert WORDS[case] in first["text"], first["text"]
    if case not in ("env", "version"):  # the version pair compiled nothing differently: only its record differs
        assert first["graphs"], first  # a cause in the code or the config explains graphs
    text = _diff(planted["store"], a, b)
    why = text[text.index("\nwhy:\n") : text.index("graphs:")]  # the verdict comes first, before the tables
    assert why.splitlines()[2] == f"  1. {first['text']}", text[:2000]


def test_the_compare_page_leads_with_the_same_sentence(planted: dict[str, Any]) -> None:
    """The Compare page (AppTest, on the same store) shows the same first sentence, before the rest."""
    import os
    import re

    from streamlit.testing.v1 import AppTest

    runs = planted["runs"]
    a, b = runs["warm"]["run_id"], runs["break"]["run_id"]
    first = json.loads(_diff(planted["store"], a, b, "--json"))["verdict"][0]["text"]
    os.environ["SANDBOX_STORE"] = planted["store"]
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60)
    at.run()
    at.query_params = {"a": a, "b": b}
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [re.sub(r"\\(.)", r"\1", str(e.value)) for e in [*at.markdown, *at.caption, *at.text]]
    assert any(first in v for v in shown), shown[:12]
