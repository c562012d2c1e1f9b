"""What every page shares: the pages' list, the store picker, the empty state, run pickers.

Rendering only; the data comes from ``dashboard/queries/`` (``shared`` and ``runs``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pandas as pd
import streamlit as st

from dashboard.queries import shared
from dashboard.queries.runs import cached_resolve, run_labels
from sandbox.store import StoreError

STORE_KEY = "store_location"


@dataclass(frozen=True)
class Page:
    title: str
    path: str  # relative to dashboard/app.py
    url: str  # url_path: /runs, /run?run=ID, ...
    icon: str


PAGES = (
    Page("Runs", "pages/runs.py", "runs", ":material/list:"),
    Page("Run", "pages/run.py", "run", ":material/timeline:"),
    Page("Graph", "pages/graph.py", "graph", ":material/account_tree:"),
    Page("Compare", "pages/compare.py", "compare", ":material/compare_arrows:"),
    Page("Trends", "pages/trends.py", "trends", ":material/trending_up:"),
    Page("Job", "pages/job.py", "job", ":material/hub:"),
)
PAGE = {p.title: p for p in PAGES}

FIRST_RUN = """\
# compile the model zoo through the sandbox into this store
SANDBOX_STORE={location} sandbox demo --models mlp
# or from your own training script
SANDBOX_STORE={location} SANDBOX_RUN_NAME=baseline python train.py   # with torch.compile(model, backend="sandbox")
"""


def sidebar_store() -> str:
    """The store picker: ``SANDBOX_STORE`` or the default file, or whatever is typed here."""
    if STORE_KEY not in st.session_state:
        st.session_state[STORE_KEY] = shared.initial_location()
    location = st.sidebar.text_input(
        "Run store",
        key=STORE_KEY,
        help="A SQLite file or a postgresql:// URL. Default: $SANDBOX_STORE, else the sandbox's default file. "
        "Always opened read-only.",
    ).strip()
    return location


def location() -> str:
    return str(st.session_state.get(STORE_KEY) or shared.initial_location()).strip()


def empty_state(where: str, problem: str | None = None) -> None:
    st.title("No runs yet")
    if problem:
        st.warning(problem)
    else:
        st.info(f"The store {where} has no runs yet.")
    st.markdown("Make a first run, then reload this page:")
    st.code(FIRST_RUN.format(location=where), language="bash")
    st.caption("Or pick another store in the sidebar.")


def require_store() -> shared.Source:
    """The current store's :class:`~dashboard.queries.shared.Source`; when it cannot be read or holds no
    runs, renders how to make a first run and stops the page."""
    where = location()
    try:
        src = shared.source(where)
    except StoreError as e:
        empty_state(where, str(e))
        st.stop()
    if src.version[0] == 0:
        empty_state(where)
        st.stop()
    st.sidebar.caption(f"{src.version[0]:,} runs, {src.version[1]:,} graphs, {src.version[2]:,} kernel sources")
    return src


def pick(
    label: str,
    options: Sequence[Any],
    param: str,
    key: str,
    fmt: Callable[[Any], str],
    resolve: Callable[[str], Any] = lambda x: x,
    fallback: Any = None,
    container: Any = None,
) -> Any:
    """A selectbox bound to the query parameter ``param``: a link (``?run=ID``) selects, and a
    selection updates the URL, so every view can be shared and reached directly."""
    options = list(options)
    asked = st.query_params.get(param)
    current = st.session_state.get(key)
    if asked and (asked != st.session_state.get(key + ":asked") or current not in options):
        target = resolve(asked)
        if target in options:
            current = target
    if current not in options:
        current = fallback if fallback in options else options[0]
    st.session_state[key] = current
    chosen = (container or st).selectbox(label, options, key=key, format_func=fmt)
    st.query_params[param] = str(chosen)
    st.session_state[key + ":asked"] = str(chosen)
    return chosen


def pick_run(
    src: shared.Source, runs: pd.DataFrame, label: str, param: str, fallback: str | None = None, container: Any = None
) -> str:
    labels = run_labels(runs)

    def resolve(ref: str) -> str | None:
        if ref in labels:
            return ref
        found = cached_resolve(src, ref)  # an id prefix, a name, "latest"
        return found["run_id"] if found else None

    return pick(
        label, list(runs["run_id"]), param, f"pick:{param}", lambda r: labels.get(r, r), resolve, fallback, container
    )


def link(page: str, **params: Any) -> str:
    """A relative URL of a page with query parameters, e.g. ``run?run=ID``."""
    query = "&".join(f"{k}={v}" for k, v in params.items() if v is not None)
    return PAGE[page].url + (f"?{query}" if query else "")


def href(target: Any) -> str:
    """The URL of a :class:`dashboard.queries.causes.Link`: another page with its query parameters
    (relative, as :func:`link` makes them), or a section of this page (``#anchor``)."""
    url = ""
    if target.page:
        query = urlencode({k: v for k, v in target.params.items() if v is not None})
        url = PAGE[target.page].url + (f"?{query}" if query else "")
    return url + (f"#{target.anchor}" if target.anchor else "")


def page_link(page: str, label: str, **params: Any) -> None:
    st.page_link(
        PAGE[page].path,
        label=label,
        icon=PAGE[page].icon,
        query_params={k: str(v) for k, v in params.items() if v is not None},
    )


def seconds(s: float | None) -> str:
    return "-" if s is None else f"{s:.2f} s"


def percent(x: float | None) -> str:
    return "-" if x is None or pd.isna(x) else f"{x:.0%}"


def highlight(column: str, color: str = "rgba(255, 75, 75, 0.18)") -> Callable[[pd.Series], list[str]]:
    """A Styler row function: rows whose ``column`` is true get a red background."""

    def style(row: pd.Series) -> list[str]:
        return [f"background-color: {color}" if bool(row.get(column)) else ""] * len(row)

    return style
