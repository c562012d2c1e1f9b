"""What every query module shares: the store, opened read-only; the :class:`Source` that keys
every cached query; the cache; the value formatters; and markdown escaping.

The pages call the cached entry points (``cached_*`` in each page's module) with a
:class:`Source`: the store's location plus its :func:`fingerprint`, so a new run or report
shows up on the next rerun while everything else is served from the cache.

Caching uses ``st.cache_resource``, not ``st.cache_data``: cache_data round-trips every
value through pickle, and the dashboard never unpickles anything (``tests/dashboard/test_dashboard.py``
checks that no page calls ``pickle.loads``). Cached values are shared between sessions:
callers must not mutate them (every query returns new frames).

The store is always opened read-only (``open_store(location, readonly=True)``: ``mode=ro``
beside a writer's WAL, else ``immutable=1``; nothing is written), and it holds JSON and text only.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import string
from collections.abc import Mapping
from typing import Any, NamedTuple

import pandas as pd
import streamlit as st

from sandbox import env as variables
from sandbox.store import Store, default_location, is_postgresql, open_store
from sandbox.store.location import looks_like_url
from sandbox.store.sqlite import folder_problem


class Source(NamedTuple):
    """A store location and its fingerprint: the key of every cached query."""

    location: str
    version: tuple[int, ...]


# -- opening --------------------------------------------------------------------------------------


def initial_location(env: Mapping[str, str] | None = None) -> str:
    """``SANDBOX_STORE`` if set, else the default SQLite file (as the sandbox writes it)."""
    return variables.get("SANDBOX_STORE", env) or default_location()


def open_readonly(location: str) -> Store:
    return open_store(location, readonly=True)


def first_run_possible(location: str) -> bool:
    """Whether a first run would make a store at ``location`` that cannot be opened: a SQLite file
    not there yet whose folder can hold it (or be made). A file that is there but unreadable, a
    directory, a server that does not answer: making a run would not help."""
    if is_postgresql(location) or looks_like_url(location):
        return False
    path = os.path.abspath(os.path.expanduser(location.removeprefix("file://")))
    return not os.path.lexists(path) and folder_problem(path) is None


def fingerprint(store: Store) -> tuple[int, ...]:
    """Row counts: they change whenever a run or a report is written."""
    c = store.counts()
    return (c["runs"], c["reports"], c["kernel_sources"])


# -- caching --------------------------------------------------------------------------------------

# The cache of every ``cached_*`` entry point (one per function, keyed by its arguments).
cached = st.cache_resource(show_spinner=False, max_entries=64)


@st.cache_resource(show_spinner=False, max_entries=8)
def store_at(location: str) -> Store:
    """One read-only connection per location, shared by every session (the Store locks)."""
    return open_readonly(location)


def source(location: str) -> Source:
    """Opens (once) and fingerprints the store; raises ``StoreError`` when it cannot be read."""
    return Source(location, fingerprint(store_at(location)))


# -- formatting -----------------------------------------------------------------------------------


def when(ts: float | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(ts) if ts else None


def as_counts(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """``frame`` with ``columns`` as whole numbers that may be missing (pandas' ``Int64``): a count
    with a gap would otherwise turn into floats and read ``3.000000``."""
    return frame.astype({c: "Int64" for c in columns})


def value_text(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return f"{len(v)} values" if len(v) > 8 else str(list(v))
    return str(v)


# Every ASCII punctuation character: CommonMark lets each be escaped with a backslash, which also
# keeps Streamlit's own syntax (``:emoji:``, ``:red[...]``, ``$math$``) out of store text.
_MARKDOWN = re.compile(f"([{re.escape(string.punctuation)}])")


def escape_markdown(text: str) -> str:
    """Store text for ``st.markdown``: on one line, every markdown character escaped, so it reads
    as written and never becomes a link, a heading, a list or a colour."""
    return _MARKDOWN.sub(r"\\\1", " ".join(str(text).split()))
