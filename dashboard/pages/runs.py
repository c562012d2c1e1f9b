"""Runs: every run in the store, filtered; compile time across runs."""

import altair as alt
import streamlit as st

from dashboard import ui
from dashboard.queries import runs as q

src = ui.require_store()
runs = q.cached_runs(src)
choices = q.filter_choices(runs)

st.title("Runs")
with st.container(border=True):
    c1, c2, c3, c4 = st.columns(4)
    names = c1.multiselect("Name", choices["name"], key="runs:name", format_func=ui.visible)
    tags = c2.multiselect("Tags", choices["tag"], key="runs:tag", format_func=ui.visible)
    devices = c3.multiselect("Device", choices["device"], key="runs:device", format_func=ui.visible)
    versions = c4.multiselect("torch", choices["torch"], key="runs:torch", format_func=ui.visible)
    c5, c6, c7 = st.columns([2, 2, 1])
    text = c5.text_input("Search", placeholder="run id, name, tag or host", key="runs:text")
    first, last = runs["started"].min(), runs["started"].max()
    # No key: when a newer run arrives the default range (and so the widget) changes with it.
    span = c6.date_input("Started between", value=(first.date(), last.date()))
    failed_only = c7.checkbox("Only runs with failures", key="runs:failed")

since, until = (span[0], span[-1]) if isinstance(span, (tuple, list)) and span else (None, None)
view = q.filter_runs(runs, names, tags, devices, versions, since, until, failed_only, text)
st.caption(f"{len(view):,} of {len(runs):,} runs")

table = view.assign(
    open=[ui.link("Run", run=r) for r in view["run_id"]], compare=[ui.link("Compare", b=r) for r in view["run_id"]]
)
ui.table(
    table,
    column_order=[
        "open",
        "name",
        "tags",
        "started",
        "device",
        "torch",
        "graphs",
        "compile_s",
        "cache_hit_ratio",
        "failures",
        "run_id",
        "compare",
    ],
    column_config={
        "open": st.column_config.LinkColumn("run", display_text="open", width="small"),
        "compare": st.column_config.LinkColumn("compare", display_text="with previous", width="small"),
        "started": ui.datetime_column("date"),
        "compile_s": st.column_config.NumberColumn("total compile s", format="%.2f"),
        "cache_hit_ratio": st.column_config.NumberColumn("cache hit ratio", format="percent"),
        "run_id": st.column_config.TextColumn("run id"),
    },
)

st.subheader("Compile time across runs")
if view.empty:
    st.info("No run matches the filters.")
else:
    base = alt.Chart(view).encode(
        x=ui.time_x("started", "run started"),
        y=alt.Y("compile_s:Q", title="total compile time (s)"),
    )
    points = base.mark_circle(size=90, opacity=0.9).encode(
        color=alt.Color("name:N", title="run name"),
        tooltip=[
            "name",
            "run_id",
            ui.time_tooltip("started"),
            alt.Tooltip("compile_s:Q", format=".2f"),
            "graphs",
            alt.Tooltip("cache_hit_ratio:Q", format=".0%"),
            "failures",
        ],
    )
    st.altair_chart(base.mark_line(color="#9aa0a6", strokeWidth=1) + points, width="stretch")
