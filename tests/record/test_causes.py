"""Causes in the CompileReport (docs/REPORT.md, Causes): why each graph compiled as it did.

Real compiles through ``backend="sandbox"`` (``helpers/script_causes.py``), three fresh
processes on one cache dir, run once per module:

* ``first``: a graph break, a recompile, known input shapes and dtypes, ``dynamic=True``, and
  the cache-key graph on an empty cache (both caches miss);
* ``again``: the cache-key graph served by AOTAutograd's cache, then by the FX graph cache;
* ``config``: the cache-key graph with another ``max_fusion_size`` (part of the cache key).

Plus the pure pieces of the builder (the compile id's parse, the input signature's walk).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from support import fresh_cache_dir, run_script

from sandbox.record import builder

FRAME_KEYS = {"file", "line", "function"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, probe_seed: Path) -> dict[str, Any]:
    cache = fresh_cache_dir(tmp_path_factory.mktemp("causes"), probe_seed)
    return {mode: run_script("script_causes.py", mode, cache_dir=cache) for mode in ("first", "again", "config")}


def _only(reports: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(reports) == 1, [(r["compile_id"], r["graph_kind"]) for r in reports]
    return reports[0]


# --- compile_reason -------------------------------------------------------------------------


def test_graph_break_is_the_first_graphs_compile_reason(runs) -> None:
    first = runs["first"]
    by_id: dict[str, list[dict[str, Any]]] = {}
    for r in first["broken"]:
        by_id.setdefault(r["compile_id"], []).append(r)
    assert sorted(by_id) == ["0/0", "1/0"], sorted(by_id)
    # Every report of a graph carries it: the forward and the lazily compiled backward.
    assert sorted(r["graph_kind"] for r in by_id["0/0"]) == ["backward", "forward"]
    for r in by_id["0/0"]:
        why = r["compile_reason"]
        assert why["graph_break"] is True, why
        assert "graph_break" in why["reason"] and "\n" not in why["reason"] and len(why["reason"]) <= 500
        assert all(set(f) == FRAME_KEYS for f in why["frames"]) and 1 <= len(why["frames"]) <= 5
        assert {"file": first["file"], "line": first["break_line"], "function": "broken"} in why["frames"]
        assert not any("/torch/" in f["file"] for f in why["frames"]), why["frames"]
    for r in by_id["1/0"]:  # the rest of the function, after the break: it ended at its return
        assert r["compile_reason"]["graph_break"] is False
        assert r["compile_reason"]["reason"] == "return_value"
        assert r["compile_reason"]["frames"][-1]["file"] == first["file"]


# --- recompile ------------------------------------------------------------------------------


def test_recompile_names_the_failed_guard(runs) -> None:
    first, second = runs["first"]["reshaped"]
    assert first["recompile"] is None
    frame = int(first["compile_id"].split("/")[0])
    assert second["compile_id"] == f"{frame}/1"
    recompile = second["recompile"]
    assert recompile["frame"] == frame and recompile["count"] == 1, recompile
    assert recompile["reason"] == f"{frame}/0: tensor 'x' size mismatch at index 0. expected 8, actual 16"
    assert all(r["recompile"] is None for r in runs["first"]["broken"] + runs["first"]["typed"])


# --- inputs ---------------------------------------------------------------------------------


def test_inputs_of_a_static_graph(runs) -> None:
    assert _only(runs["first"]["typed"])["inputs"] == [
        {
            "kind": "tensor",
            "shape": [4, 3],
            "stride": [3, 1],
            "dtype": "float32",
            "device": "cpu",
            "requires_grad": False,
            "dynamic": [],
        },
        {
            "kind": "tensor",
            "shape": [3],
            "stride": [1],
            "dtype": "float64",
            "device": "cpu",
            "requires_grad": False,
            "dynamic": [],
        },
    ]
    for r in runs["first"]["broken"]:  # trained: on every report, backward too
        assert r["inputs"][0]["requires_grad"] is True and r["inputs"][0]["shape"] == [8, 4]


def test_inputs_of_a_dynamic_graph_are_symbolic(runs) -> None:
    inputs = _only(runs["first"]["dynamic"])["inputs"]
    tensors = [i for i in inputs if i["kind"] == "tensor"]
    symints = [i for i in inputs if i["kind"] == "symint"]
    (x,) = tensors
    assert x["dynamic"] == [0, 1], x
    assert all(isinstance(d, str) and d.startswith("s") for d in x["shape"]), x
    assert x["stride"] == [x["shape"][1], 1], x
    # The sizes dynamo passes as inputs of their own, and the int argument n.
    assert {s["value"] for s in symints} >= set(x["shape"]) and len(symints) == 3, symints
    assert all(set(i) == {"kind", "value"} for i in symints)


# --- cache_keys -----------------------------------------------------------------------------


def _fx(report: dict[str, Any]) -> dict[str, Any]:
    return report["cache_keys"]["fx_graph"]


def test_cache_keys_of_a_miss_a_hit_and_a_config_change(runs) -> None:
    miss = _only(runs["first"]["cached"])
    fx = _fx(miss)
    assert fx["state"] == "miss" and fx["key"] == miss["caches"]["fx_graph"]["key"]
    assert {"gm", "example_inputs[0]", "torch_version", "inductor_config"} <= set(fx["components"])
    assert not any(name.startswith("inductor_config[") for name in fx["components"]), "the config is folded"
    assert all(isinstance(h, str) and h for h in fx["components"].values())
    assert len(json.dumps(miss["cache_keys"])) < 8000, "a report stays small"
    aot = miss["cache_keys"]["aot_autograd"]
    assert aot["state"] == "miss" and aot["key"], aot

    # Another process, same cache dir: AOTAutograd's cache serves the graph under the same key ...
    aot_hit = runs["again"]["aot_hit"][0]
    assert aot_hit["outcome"] == "cache_hit" and aot_hit["reason"] == "aot_autograd_cache"
    assert aot_hit["cache_keys"] == {"aot_autograd": {**aot, "state": "hit"}}
    assert aot_hit["compile_reason"] == miss["compile_reason"] and aot_hit["inputs"] == miss["inputs"]
    # ... and, with that cache off, the FX graph cache does, under the same key and components.
    fx_hit = _only(runs["again"]["fx_hit"])
    assert fx_hit["reason"] == "fx_graph_cache"
    assert _fx(fx_hit) == {**fx, "state": "hit"}

    # Another Inductor setting in the key: a miss, and the config component names it.
    changed = _fx(_only(runs["config"]["cached"]))
    assert changed["state"] == "miss" and changed["key"] != fx["key"]
    assert [n for n in fx["components"] if changed["components"].get(n) != fx["components"][n]] == ["inductor_config"]
    assert runs["config"]["cached"][0]["cache_keys"]["aot_autograd"]["key"] != aot["key"]


def test_backward_reports_have_no_aot_autograd_key(runs) -> None:
    for r in runs["first"]["broken"]:
        assert ("aot_autograd" in r["cache_keys"]) == (r["graph_kind"] == "forward"), r["graph_kind"]
        assert _fx(r)["state"] == "miss"


# --- kernels' ops ---------------------------------------------------------------------------


def test_kernel_ops_of_a_relu_graph(runs) -> None:
    kernels = _only(runs["first"]["cached"])["kernels"]
    assert kernels and all(isinstance(k["ops"], list) for k in kernels)
    assert any("relu" in k["ops"] for k in kernels), [(k["name"], k["ops"]) for k in kernels]


# --- the builder's pure pieces ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("compile_id", "reason", "expected"),
    [
        ("0/0", None, None),
        ("0/1", "0/0: tensor 'x' size mismatch", {"frame": 0, "count": 1, "reason": "0/0: tensor 'x' size mismatch"}),
        ("3/2", None, {"frame": 3, "count": 2, "reason": None}),
        ("0/0_1", None, None),  # a restart of the first compile
        ("0/1_1", "r", {"frame": 0, "count": 1, "reason": "r"}),
        ("!2/4/1", "r", {"frame": 4, "count": 1, "reason": "r"}),  # compiled autograd's id
        ("!2", None, None),
        (None, "r", None),
        ("nonsense", "r", None),
    ],
)
def test_recompile_from_the_compile_id(compile_id: str | None, reason: str | None, expected: Any) -> None:
    assert builder.recompile(compile_id, reason) == expected


CODE = "def forward(self, x): return x"


def test_graph_signature_caps_the_inputs_and_keeps_the_hash() -> None:
    inputs = [torch.zeros(2, 3)] * 70 + [7, 0.5, True]
    graph_hash, signature = builder.graph_signature(CODE, inputs)
    assert len(signature) == builder.MAX_INPUTS + 1
    assert signature[-1] == {"kind": "more", "count": 73 - builder.MAX_INPUTS}
    assert signature[0]["shape"] == [2, 3] and signature[0]["stride"] == [3, 1]
    _, tail = builder.graph_signature(CODE, [7, 0.5, True, object()])
    assert tail == [
        {"kind": "int", "value": 7},
        {"kind": "float", "value": 0.5},
        {"kind": "bool", "value": True},
        {"kind": "other", "type": "object"},
    ]
    # The hash sees every input, past the signature's cap.
    assert graph_hash != builder.graph_signature(CODE, inputs[:-1])[0]
    assert graph_hash == builder.graph_signature(CODE, list(inputs))[0]
    assert builder.graph_signature(None, inputs[:1]) == (None, signature[:1])
