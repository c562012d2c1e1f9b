"""What every page shares: the pages' list, the store, the empty state, run pickers, store text.

Rendering only; the data comes from ``dashboard/queries/`` (``shared`` and ``runs``).

**Store text is shown, never obeyed.** Run names, code locations, kernel names, failure messages
and every other string in a store were written by whoever wrote that store. Streamlit renders
markdown (and its own ``:emoji:``, ``:red[...]`` and ``$math$``) in ``st.markdown``, titles,
captions, alerts, expander and metric labels, metric values and tooltips: a run name of
``![x](http://host/)`` would make every visitor's browser fetch it. Pages pass store text through
:func:`text` wherever Streamlit reads markdown, or show it in ``st.code``, ``st.text`` or a
dataframe, which show text as text.

**The store is fixed.** The dashboard reads the store it was started on (``sandbox dashboard
--store``, ``SANDBOX_STORE``, else the default file), shown masked (no password) and not
changeable from the page, so a visitor cannot point the server at other files or hosts. Started
with ``streamlit run dashboard/app.py -- --allow-store-picker``, the sidebar offers a box to type
another store's location (for a dashboard only its own user can reach).

**A link says when it misses.** A link names a run, a graph, a job or a kernel; one that names
none of this store's shows a warning with what it named and a picker set to nothing: never another
run's data, and the URL stays as it came until a choice is made.

**One look everywhere.** A stage has one colour on every chart (:func:`stage_scale`), times read on
a 24-hour clock (:data:`TIME_AXIS`, :data:`DATETIME_COLUMN`) and a table leaves a missing value's
cell empty (:func:`table`).
"""

from __future__ import annotations

import hashlib
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.queries import shared
from dashboard.queries.graph import OTHER_STAGES
from dashboard.queries.run import EAGER_BAR
from dashboard.queries.runs import cached_resolve, run_labels
from dashboard.queries.shared import escape_markdown
from sandbox.analysis.labels import OUTCOMES
from sandbox.record import stages
from sandbox.record.report import CACHE_HIT, FAILED, IN_PROCESS, ISOLATED
from sandbox.store import StoreError, masked

STORE_KEY = "store_location"
# The script argument (``streamlit run dashboard/app.py -- --allow-store-picker``) that lets a
# visitor type another store's location into the sidebar.
PICKER_FLAG = "--allow-store-picker"


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


# -- store text ---------------------------------------------------------------------------------


# Streamlit's markdown turns a bare ``http://``, ``www.`` or ``name@host.domain`` in any text into a
# link after parsing (GFM's autolink literals: backslash escapes do not stop it). An invisible word
# joiner after the scheme, ``www`` or ``@`` leaves the text as it reads but no longer a link.
_AUTOLINK = re.compile(r"(?i)(https?)(?=:)|(www)(?=\.)|(@)")
_JOINER = "\u2060"


def visible(value: Any) -> str:
    """Store text on one line, every control or format character (a bidi override, a zero-width
    space) as its visible escape (``\\u202e``), so it cannot reorder or hide what is shown: for
    what Streamlit shows as plain text (a picker's options)."""
    s = " ".join(str(value).split())
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in s)


def plain(value: Any) -> str:
    """:func:`visible`, with no bare URL or e-mail address that a markdown renderer would make a
    link: for markdown once escaped (:func:`text`, or a function of ``dashboard.queries`` that
    escapes)."""
    return _AUTOLINK.sub(lambda m: m.group(0) + _JOINER, visible(value))


def text(value: Any) -> str:
    """Store text for whatever Streamlit renders as markdown (``st.markdown``, titles, captions,
    alerts, labels, metric values, tooltips): :func:`plain`, then every markdown character escaped,
    so it reads as written and never becomes a link, an image, HTML, a heading, code, math, an
    emoji or a colour."""
    return escape_markdown(plain(value))


# -- the store --------------------------------------------------------------------------------------


def picker_allowed(argv: Sequence[str] | None = None) -> bool:
    """Whether the dashboard was started with :data:`PICKER_FLAG` (its script arguments)."""
    return PICKER_FLAG in (sys.argv[1:] if argv is None else argv)


def sidebar_store() -> str:
    """The store the pages read, in the sidebar: the one the dashboard was started on, shown masked;
    with :data:`PICKER_FLAG`, a box to type another (it starts with the masked location, which
    stands for the started-on store)."""
    configured = shared.initial_location()
    if not picker_allowed():
        st.sidebar.caption("Run store (read-only)")
        st.sidebar.text(masked(configured))
        return configured
    if STORE_KEY not in st.session_state:
        st.session_state[STORE_KEY] = masked(configured)
    st.sidebar.text_input(
        "Run store",
        key=STORE_KEY,
        help="A SQLite file or a postgresql:// URL. Default: $SANDBOX_STORE, else the sandbox's default file. "
        "Always opened read-only.",
    )
    return location()


def location() -> str:
    """The store the pages read: the started-on one, or (with :data:`PICKER_FLAG`) the one typed."""
    configured = shared.initial_location()
    if not picker_allowed():
        return configured
    typed = str(st.session_state.get(STORE_KEY) or "").strip()
    return configured if not typed or typed == masked(configured) else typed


def empty_state(where: str, problem: str | None = None) -> None:
    """A store with no runs yet, or none at all where a first run would make one: how to make it."""
    shown = masked(where)
    st.title("No runs yet")
    if problem:
        st.warning(text(problem.replace(where, shown)))
    else:
        st.info(f"The store {text(shown)} has no runs yet.")
    st.markdown("Make a first run, then reload this page:")
    st.code(FIRST_RUN.format(location=shlex.quote(shown)), language="bash")
    another_store()


def broken_store(where: str, problem: str) -> None:
    """A store that cannot be read (a directory, a damaged or foreign file, a server that does not
    answer): the problem and what to do, never a first run into it."""
    shown = masked(where)
    st.title("Cannot read the run store")
    st.error(text(problem.replace(where, shown)))
    st.markdown(
        f"The dashboard reads {text(shown)} and only reads it: nothing was changed there. "
        "Fix what the message names, then reload this page."
    )
    another_store()


def another_store() -> None:
    if picker_allowed():
        st.caption("Or pick another store in the sidebar.")
    else:
        st.caption("Or start the dashboard on another store: `SANDBOX_STORE=LOCATION streamlit run dashboard/app.py`")


def require_store() -> shared.Source:
    """The current store's :class:`~dashboard.queries.shared.Source`; when it holds no runs, or is
    missing where a first run would make it, renders how to make a first run; when it cannot be
    read, what is wrong with it; either way the page stops."""
    where = location()
    try:
        src = shared.source(where)
    except StoreError as e:
        if shared.first_run_possible(where):
            empty_state(where, str(e))
        else:
            broken_store(where, str(e))
        st.stop()
    if src.version[0] == 0:
        empty_state(where)
        st.stop()
    st.sidebar.caption(f"{src.version[0]:,} runs, {src.version[1]:,} graphs, {src.version[2]:,} kernel sources")
    return src


# -- pickers tied to the URL --------------------------------------------------------------------------


def asked_text(value: str, limit: int = 80) -> str:
    """What a link asked for, for a notice: quoted, cut to ``limit`` characters, escaped like store text."""
    shown = visible(value)
    return f"“{text(shown if len(shown) <= limit else shown[: limit - 1] + '…')}”"


def pick(
    label: str,
    options: Sequence[Any],
    param: str,
    key: str,
    fmt: Callable[[Any], str],
    resolve: Callable[[str], Any] = lambda x: x,
    fallback: Any = None,
    container: Any = None,
    missing: Callable[[str], str] = lambda asked: f"Nothing called {asked} here.",
) -> Any:
    """A selectbox bound to the query parameter ``param``: a link (``?run=ID``) selects, and a
    selection updates the URL, so every view can be shared and reached directly.

    A link whose ``param`` names none of the options gets a warning (``missing`` of the value
    asked, quoted and escaped) and the selectbox set to nothing: the result is None until the visitor
    picks, and the URL keeps what the link said until then. A value this page wrote itself that
    stopped fitting (another run picked above, with fewer graphs) falls back quietly."""
    options = list(options)
    where = container or st
    asked = st.query_params.get(param)
    current = st.session_state.get(key)
    fresh = bool(asked) and asked != st.session_state.get(key + ":asked")  # a link's, not written here
    unknown = None
    if asked and (fresh or current not in options):
        target = resolve(asked)
        if target in options:
            current = target
        elif fresh or st.session_state.get(key + ":missing") == asked:
            unknown, current = asked, None
    if unknown is None and current not in options:
        current = fallback if fallback in options else options[0]
    st.session_state[key] = current
    st.session_state[key + ":missing"] = unknown
    if unknown is not None:
        where.warning(missing(asked_text(unknown)) + " Pick one below.")
    chosen = where.selectbox(label, options, key=key, format_func=lambda x: visible(fmt(x)), placeholder="Choose one")
    if chosen is None:  # the link's value stays in the URL until a choice replaces it
        st.session_state[key + ":asked"] = asked
        return None
    st.session_state[key + ":missing"] = None
    st.query_params[param] = str(chosen)
    st.session_state[key + ":asked"] = str(chosen)
    return chosen


def pick_run(
    src: shared.Source, runs: pd.DataFrame, label: str, param: str, fallback: str | None = None, container: Any = None
) -> str | None:
    """A run picker on ``param`` (an id, an id prefix, a name or ``latest`` selects); None while a
    link names no run of this store and nothing is picked (:func:`pick`)."""
    labels = run_labels(runs)

    def resolve(ref: str) -> str | None:
        if ref in labels:
            return ref
        found = cached_resolve(src, ref)  # an id prefix, a name, "latest"
        return found["run_id"] if found else None

    return pick(
        label,
        list(runs["run_id"]),
        param,
        f"pick:{param}",
        lambda r: labels.get(r, r),
        resolve,
        fallback,
        container,
        missing=lambda asked: f"No run {asked} in this store.",
    )


def link(page: str, **params: Any) -> str:
    """A relative URL of a page with query parameters, e.g. ``run?run=ID``."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
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


# -- tables ------------------------------------------------------------------------------------------


def table(data: Any, **kwargs: Any) -> Any:
    """``st.dataframe`` without the index, a missing value's cell left empty (Streamlit writes
    "None" there otherwise): every page's tables go through here."""
    kwargs.setdefault("hide_index", True)
    kwargs.setdefault("placeholder", "")
    return st.dataframe(data, **kwargs)


def name_column(values: Any, label: str | None = None, least: int = 160, most: int = 640) -> Any:
    """A text column wide enough for its longest name (up to ``most`` pixels), so names such as
    ``pass.post_grad_passes.remove_noop_ops`` read whole rather than cut off."""
    longest = max((len(str(v)) for v in values), default=0)
    return st.column_config.TextColumn(label, width=max(least, min(most, 8 * longest + 24)))


# -- times --------------------------------------------------------------------------------------------

# Times on a 24-hour clock everywhere: a chart's time axis and tooltips (d3 time formats), a table's
# datetime column (moment.js format), and the labels the queries write (``%Y-%m-%d %H:%M:%S``).
TIME_AXIS = "%Y-%m-%d %H:%M"
TIME_TOOLTIP = "%Y-%m-%d %H:%M:%S"
DATETIME_COLUMN = "YYYY-MM-DD HH:mm:ss"


def time_x(field: str, title: str) -> Any:
    """A chart's x axis over the datetime column ``field``, labelled on a 24-hour clock."""
    return alt.X(f"{field}:T", title=title, axis=alt.Axis(format=TIME_AXIS, labelAngle=-30, labelOverlap=True))


def time_tooltip(field: str, title: str | None = None) -> Any:
    return alt.Tooltip(f"{field}:T", title=title or field, format=TIME_TOOLTIP)


def datetime_column(label: str | None = None) -> Any:
    return st.column_config.DatetimeColumn(label, format=DATETIME_COLUMN)


# -- one colour per stage ----------------------------------------------------------------------------

# The sandbox's own stages, the bars that stand for a whole graph on the Run page's timeline, and the
# Graph page's other stages by where they ran: fixed colours, so a stage looks the same in every run
# and on every page whatever else the chart holds (a scale over the values present would give a
# colour by position, which moves when another run has other stages).
STAGE_COLOURS = {
    **dict(
        zip(
            stages.OWN,
            (
                "#9467bd",  # cache_lookup
                "#8c564b",  # serialize
                "#ff7f0e",  # wait_for_worker
                "#bcbd22",  # send
                "#1f77b4",  # compile_in_worker
                "#17becf",  # transfer
                "#2ca02c",  # load
                "#393b79",  # compile_in_process
            ),
            strict=True,
        )
    ),
    stages.SWITCH: "#e377c2",
    EAGER_BAR: "#c7c7c7",
    OUTCOMES[CACHE_HIT]: "#98df8a",
    OUTCOMES[ISOLATED]: "#aec7e8",
    OUTCOMES[IN_PROCESS]: "#9c9ede",
    OUTCOMES[FAILED]: "#d62728",  # and each "failed (kind)"
    OTHER_STAGES["worker"]: "#6b6ecf",
    OTHER_STAGES["parent"]: "#b5cf6b",
}
# Any other stage: a colour picked by a hash of its name (the same in every process, unlike hash()).
HASHED_COLOURS = ("#8c6d31", "#843c39", "#7b4173", "#637939", "#3182bd", "#e6550d", "#31a354", "#756bb1")


def stage_colour(name: str) -> str:
    """The colour of the stage (or whole-graph bar) ``name`` on every chart."""
    if name in STAGE_COLOURS:
        return STAGE_COLOURS[name]
    if name.startswith(OUTCOMES[FAILED] + " ("):
        return STAGE_COLOURS[OUTCOMES[FAILED]]
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).digest()
    return HASHED_COLOURS[int.from_bytes(digest[:4], "big") % len(HASHED_COLOURS)]


def stage_scale(names: Any) -> Any:
    """An altair colour scale over the stages ``names``, each in its :func:`stage_colour`; the
    legend lists them in the order a compile goes through them."""
    order = {name: i for i, name in enumerate(STAGE_COLOURS)}
    domain = sorted({str(n) for n in names}, key=lambda n: (order.get(n, len(order)), n))
    return alt.Scale(domain=domain, range=[stage_colour(n) for n in domain])


def seconds(s: float | None) -> str:
    return "-" if s is None else f"{s:.2f} s"


def percent(x: float | None) -> str:
    return "-" if x is None or pd.isna(x) else f"{x:.0%}"


def highlight(column: str, color: str = "rgba(255, 75, 75, 0.18)") -> Callable[[pd.Series], list[str]]:
    """A Styler row function: rows whose ``column`` is true get a red background."""

    def style(row: pd.Series) -> list[str]:
        return [f"background-color: {color}" if bool(row.get(column)) else ""] * len(row)

    return style
