"""Trends: compile latency percentiles and cache hit ratio per run, over time."""

import altair as alt
import streamlit as st

from dashboard import ui
from dashboard.queries import trends as q
from dashboard.queries.runs import cached_runs, filter_choices

src = ui.require_store()
runs = cached_runs(src)
st.title("Trends")
names = st.multiselect(
    "Run names", filter_choices(runs)["name"], key="trends:name", help="Empty: every run", format_func=ui.visible
)
data = q.cached_trends(src)
if names:
    data = data[data["name"].isin(names)]
if data.empty:
    st.info("No run with compiled graphs matches.")
    st.stop()

last = data.iloc[-1]
cols = st.columns(4)
cols[0].metric("Runs", len(data))
cols[1].metric("p50 graph compile (latest run)", ui.seconds(last["p50 s"]))
cols[2].metric("p90 graph compile (latest run)", ui.seconds(last["p90 s"]))
cols[3].metric("Cache hit ratio (latest run)", ui.percent(last["cache hit ratio"]))

st.subheader("Graph compile latency per run")
st.caption("Percentiles of the graphs' compile times within each run (cache hits included).")
long = data.melt(
    id_vars=["started", "name", "run_id"],
    value_vars=["p50 s", "p90 s", "p99 s"],
    var_name="percentile",
    value_name="seconds",
)
latency = (
    alt.Chart(long)
    .mark_line(point=True)
    .encode(
        x=ui.time_x("started", "run started"),
        y=alt.Y("seconds:Q", title="seconds per graph"),
        color=alt.Color("percentile:N", sort=["p50 s", "p90 s", "p99 s"]),
        tooltip=["name", "run_id", ui.time_tooltip("started"), "percentile", alt.Tooltip("seconds:Q", format=".3f")],
    )
)
st.altair_chart(latency, width="stretch")

st.subheader("Cache hit ratio per run")
ratio = alt.Chart(data).encode(
    x=ui.time_x("started", "run started"),
    y=alt.Y("cache hit ratio:Q", title="cache hit ratio", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
)
points = ratio.mark_circle(size=90, opacity=0.9).encode(
    color=alt.Color("name:N", title="run name"),
    tooltip=["name", "run_id", ui.time_tooltip("started"), alt.Tooltip("cache hit ratio:Q", format=".0%"), "graphs"],
)
st.altair_chart(ratio.mark_line(color="#9aa0a6", strokeWidth=1) + points, width="stretch")

ui.table(
    data.assign(open=[ui.link("Run", run=r) for r in data["run_id"]]),
    column_order=[
        "open",
        "name",
        "started",
        "graphs",
        "p50 s",
        "p90 s",
        "p99 s",
        "max s",
        "compile s",
        "cache hit ratio",
        "failures",
    ],
    column_config={
        "open": st.column_config.LinkColumn("run", display_text="open", width="small"),
        "started": ui.datetime_column(),
        **{c: st.column_config.NumberColumn(format="%.3f") for c in ("p50 s", "p90 s", "p99 s", "max s")},
        "compile s": st.column_config.NumberColumn(format="%.2f"),
        "cache hit ratio": st.column_config.NumberColumn(format="percent"),
    },
)
