"""Fixtures of the query tests (``test_queries_*.py``): the real store (``dashboard_stores.real_store``),
opened read-only, and a synthetic GPU-like store (launch configs, registers, spills, shared memory).

A test module binds the fixtures it uses by name (``real, store = query_fixtures.real,
query_fixtures.store``), so each query test says where its data comes from."""

from __future__ import annotations

from pathlib import Path

import pytest
from dashboard_stores import RealStore, make_gpu_store, make_real_store

from dashboard.queries.shared import open_readonly


@pytest.fixture(scope="session")
def real(tmp_path_factory: pytest.TempPathFactory, probe_seed: Path) -> RealStore:
    return make_real_store(tmp_path_factory, probe_seed)


@pytest.fixture(scope="module")
def store(real: RealStore):
    s = open_readonly(str(real.path))
    yield s
    s.close()


@pytest.fixture(scope="module")
def gpu(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("gpu-store") / "runs.db"
    ids = make_gpu_store(path)
    s = open_readonly(str(path))
    yield s, ids
    s.close()
