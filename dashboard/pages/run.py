"""Run: one run at a glance: summary cards, why it compiled like this, the compile waterfall, every
graph, failures."""

import altair as alt
import streamlit as st

from dashboard import ui
from dashboard.queries import causes as qc
from dashboard.queries import run as q
from dashboard.queries.runs import cached_runs, previous_of, run_label, run_labels

src = ui.require_store()
runs = cached_runs(src)
header = st.container()  # above the picker, filled once the run is known
run_id = ui.pick_run(src, runs, "Run", "run")
if run_id is None:  # a link to no run of this store: its warning and the picker, nothing else
    st.stop()
run, reports = q.cached_run(src, run_id)
cards = q.run_cards(run, reports)

header.title(f"Run {ui.text(run.get('name') or run_id[:12])}")
header.caption(
    ui.text(run_label(run))
    + (f" · tags: {ui.text(', '.join(run['tags']))}" if run.get("tags") else "")
    + f" · {ui.text(run.get('device') or '?')} · torch {ui.text(run.get('torch') or '?')}"
)

cols = st.columns(6)
cols[0].metric("Graphs", cards["graphs"])
cols[1].metric("Total compile time", ui.seconds(cards["compile_s"]))
cols[2].metric("Isolated", cards["isolated"], help="compiled in a sandbox worker")
cols[3].metric("Cache hits", f"{cards['cache_hits']} ({ui.percent(cards['cache_hit_ratio'])})")
cols[4].metric("Failures", cards["failures"])
cols[5].metric("Kernels", cards["kernels"])
if cards["failures"]:
    failed = (
        "Every graph of this run failed to compile"
        if cards["failures"] == cards["graphs"]
        else f"{cards['failures']} of {cards['graphs']} graphs failed to compile"
    )
    alert = st.error if cards["failures"] == cards["graphs"] else st.warning
    alert(f"{failed}: see Failures below for what happened and what ran instead.")

links = st.columns(3)
with links[0]:
    ui.page_link("Graph", "Stages and kernels of each graph", run=run_id)
previous = previous_of(runs, run_id)
if previous:
    with links[1]:
        ui.page_link("Compare", "Compare with the previous run", a=previous, b=run_id)

if reports:
    st.subheader("Why it compiled like this")
    earlier, found = qc.cached_run_causes(src, run_id)
    st.caption(
        "Largest first. Cache misses are judged against the earlier run of the same name, "
        f"{ui.text(run_labels(runs)[earlier])}."
        if earlier
        else "Largest first. No earlier run of this name: a cache miss cannot be compared with an earlier hit."
    )
    if not found:
        (st.info if cards["failures"] else st.success)(qc.NOTHING_TO_EXPLAIN)
    for c in found:
        links = [(ui.plain(link.label), ui.href(link)) for link in qc.run_links(c, run_id)]
        st.markdown(qc.markdown_line(ui.plain(c.text), links))

with st.expander("Environment"):
    ui.table(q.run_facts(run))

if not reports:
    st.info("This run compiled no graph.")
    st.stop()

st.subheader("Timeline")
bars = q.waterfall(run, reports)
height = max(160, 40 * len(reports))
chart = (
    alt.Chart(bars)
    .mark_bar(height={"band": 0.7})
    .encode(
        y=alt.Y("graph:N", sort=alt.SortField("order"), title=None),
        x=alt.X("start:Q", title="seconds since the run started"),
        x2="end:Q",
        color=alt.Color("stage:N", title="stage", scale=ui.stage_scale(bars["stage"])),
        tooltip=[
            "graph",
            "stage",
            "origin",
            alt.Tooltip("start:Q", format=".3f"),
            alt.Tooltip("seconds:Q", format=".3f"),
            "outcome",
            "caches",
            "isolation",
        ],
    )
    .properties(height=height)
)
st.altair_chart(chart, width="stretch")
st.caption(
    "Each row is one graph; its bars are the sandbox's stages (cache lookup, serialize, waiting for "
    "a worker, the worker's compile, transfer, load). A graph served whole by a cache is one bar. In async "
    'mode a graph runs eagerly ("running eagerly") while it compiles, until its compiled graph takes '
    'over ("switch").'
)

st.subheader("Graphs")
table = q.graph_rows(run, reports)
table.insert(0, "open", [ui.link("Graph", run=run_id, graph=g) for g in table["graph"]])
ui.table(
    table,
    column_config={
        "open": st.column_config.LinkColumn("", display_text="open", width="small"),
        "code": ui.name_column(table["code"]),
        "start s": st.column_config.NumberColumn(format="%.2f"),
        "compile s": st.column_config.NumberColumn(format="%.2f"),
        "switch s": st.column_config.NumberColumn(format="%.2f", help="when the compiled graph took over (async mode)"),
        "eager calls": st.column_config.NumberColumn(help="calls that ran eagerly before the switch (async mode)"),
    },
)

fails = q.failures(reports)
st.subheader(f"Failures ({max(len(fails), cards['failures'])})")
if not fails and not cards["failures"]:
    st.success("No graph failed to compile.")
elif not fails:
    st.warning(f"{cards['failures']} graphs failed to compile, with no record of what went wrong.")
for f in fails:
    how = ", ".join(
        x
        for x in (
            f["signal"],
            f"exit code {f['exit_code']}" if f["exit_code"] is not None else None,
            f"worker {f['worker_pid']}" if f["worker_pid"] else None,
        )
        if x
    )
    first = (f["message"].splitlines() or [""])[0]
    st.error(
        f"**{ui.text(f['graph'])}** at {ui.text(f['code'])}: **{ui.text(f['kind'])}**"
        f"{f' ({ui.text(how)})' if how else ''}: {ui.text(first)} ({ui.text(f['fallback'])})"
    )
    if f["log_tail"] or f["traceback"] or "\n" in f["message"]:
        with st.expander(f"Details of {ui.text(f['graph'])}"):
            if "\n" in f["message"]:
                st.code(f["message"], language="text")
            if f["traceback"]:
                st.code(f["traceback"], language="python")
            if f["log_tail"]:
                st.code("\n".join(f["log_tail"]), language="text")
