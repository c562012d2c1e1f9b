"""Graph: one compiled graph: its stage tree, caches, Inductor metrics, kernels and their code."""

import altair as alt
import streamlit as st

from dashboard import ui
from dashboard.queries import graph as q
from dashboard.queries import runtime as qr
from dashboard.queries.run import cached_run
from dashboard.queries.runs import cached_runs, run_label
from sandbox.analysis import labels

src = ui.require_store()
runs = cached_runs(src)
header = st.container()  # above the pickers, filled once the graph is known
left, right = st.columns([3, 2])
run_id = ui.pick_run(src, runs, "Run", "run", container=left)
if run_id is None:  # a link to no run of this store: its warning and the picker, nothing else
    st.stop()
run, reports = cached_run(src, run_id)
if not reports:
    st.info("This run compiled no graph.")
    st.stop()
graph_names = {
    r.graph_index: f"{labels.graph(r, index=True)} · {labels.code(r.co_name, r.filename, r.line)} · {labels.outcome(r)}"
    for r in reports
}
index = ui.pick(
    "Graph",
    list(graph_names),
    "graph",
    "pick:graph",
    graph_names.get,
    resolve=lambda s: int(s) if s.isdigit() else s,
    container=right,
    missing=lambda asked: f"No graph {asked} in run {ui.text(run_label(run))}.",
)
if index is None:  # a link to no graph of this run: its warning and the picker, nothing else
    st.stop()
report = q.find_report(reports, index)

header.title(f"{ui.text(str(report.graph_kind).capitalize())} graph {ui.text(report.compile_id or '?')}")
header.caption(f"{ui.text(labels.code(report.co_name, report.filename, report.line))} · run {ui.text(run_label(run))}")
ui.page_link("Run", "Back to the run", run=run_id)

cols = st.columns(5)
cols[0].metric("Compile time", ui.seconds(report.duration_s))
cols[1].metric("Outcome", ui.text(labels.outcome(report)))
cols[2].metric("Worker", ui.text(report.worker_pid or "-"), help=ui.text(labels.isolation(report)))
cols[3].metric("Kernels", len(report.kernels))
cols[4].metric("Graph nodes", ui.text(report.graph.get("nodes", "-")))
st.caption(
    f"Where it compiled: {ui.text(labels.isolation(report))} · "
    f"caches: {ui.text(labels.caches(report, async_compile=True))}"
)
if report.failure is not None:
    st.error(f"**{ui.text(report.failure.kind)}**: {ui.text(report.failure.message)}")
elif report.reason:
    st.info(ui.text(report.reason))

st.subheader("Stages")
tree = q.stage_tree(report)
if tree.empty:
    st.info("No stages: a cache served this graph whole, nothing was compiled.")
else:
    ui.table(
        tree,
        column_order=["stage", "origin", "start s", "duration s", "own s", "share"],
        column_config={
            "stage": ui.name_column(tree["stage"]),
            "start s": st.column_config.NumberColumn(format="%.3f"),
            "duration s": st.column_config.NumberColumn(format="%.3f"),
            "own s": st.column_config.NumberColumn("own s", format="%.3f", help="less the stages inside it"),
            "share": st.column_config.ProgressColumn(
                "share of the compile", format="percent", min_value=0, max_value=1
            ),
        },
    )
    gantt = tree.assign(end=tree["start s"] + tree["duration s"], row=range(len(tree)), colour=q.colour_groups(tree))
    chart = (
        alt.Chart(gantt)
        .mark_bar()
        .encode(
            # Long stage names are cut at the axis; the tooltip has the whole name.
            y=alt.Y("stage:N", sort=alt.SortField("row"), title=None, axis=alt.Axis(labelLimit=360)),
            x=alt.X("start s:Q", title="seconds since the graph entered the sandbox"),
            x2="end:Q",
            color=alt.Color("colour:N", title="stage", scale=ui.stage_scale(gantt["colour"])),
            tooltip=[
                alt.Tooltip("name:N", title="stage"),
                "origin",
                alt.Tooltip("duration s:Q", format=".3f"),
                alt.Tooltip("own s:Q", format=".3f"),
            ],
        )
        .properties(height=max(120, 18 * len(gantt)))
    )
    st.altair_chart(chart, width="stretch")

c1, c2 = st.columns([1, 2])
with c1:
    st.subheader("Caches")
    caches = q.cache_rows(report)
    if caches.empty:
        st.caption("No compile cache was consulted.")
    else:
        ui.table(caches)
with c2:
    st.subheader("Inductor metrics")
    metrics = q.metric_rows(report)
    if metrics.empty:
        st.caption("No metrics: no worker compiled this graph.")
    else:
        ui.table(metrics, column_config={"metric": ui.name_column(metrics["metric"])})

if report.autotune:
    st.subheader(f"max-autotune choices ({len(report.autotune)})")
    st.caption(
        "Each op max-autotune tuned: the candidate chosen and its benchmark time, the fastest extern (ATen) "
        "kernel, and how many times faster the choice was."
    )
    choices = q.autotune_choice_rows(report.autotune)
    ui.table(
        choices,
        column_order=[c for c in choices.columns if c != "i"],
        column_config={
            "chosen ms": st.column_config.NumberColumn(format="%.4f"),
            "extern ms": st.column_config.NumberColumn(format="%.4f"),
            "speed-up": st.column_config.NumberColumn(format="%.2fx"),
        },
    )
    ops = list(choices["i"])
    if st.session_state.get("graph:autotune") not in ops:  # another graph: its first op
        st.session_state.pop("graph:autotune", None)
    op = st.selectbox(
        "Candidates of",
        ops,
        key="graph:autotune",
        format_func=lambda i: ui.visible(f"{choices.iloc[i]['op']} ({choices.iloc[i]['input shapes']})"),
    )
    ui.table(
        q.autotune_candidate_rows(report.autotune[op]),
        column_config={"ms": st.column_config.NumberColumn(format="%.4f")},
    )

if qr.has_runtime(report) or (report.runtime or {}).get("skipped"):
    st.subheader("Kernel runtime", anchor="kernel-runtime")
    st.caption(
        f"{ui.text(qr.summary(report))}. Each kernel's calls and time in the profiled calls (option "
        "profile_steps) and its share of the graph's time (device time on a GPU); click a column to sort."
    )
    timed = qr.kernel_runtime_rows(report)
    if not timed.empty:
        ui.table(
            timed,
            column_config={
                "kernel": ui.name_column(timed["kernel"]),
                "per call µs": st.column_config.NumberColumn(format="%.1f"),
                "total µs": st.column_config.NumberColumn(format="%.1f"),
                "share": st.column_config.ProgressColumn(
                    "share of the graph", format="percent", min_value=0, max_value=1
                ),
            },
        )

st.subheader(f"Kernels ({len(report.kernels)})")
if not report.kernels:
    st.caption("No kernel inventory (a cache hit served by AOTAutograd, or a failed compile).")
    st.stop()
kernels = q.cached_kernels(src, run_id, report.report_id)
kernel_table = q.kernel_rows(kernels)
ui.table(kernel_table, column_config={"kernel": ui.name_column(kernel_table["kernel"])})
tuning = q.triton_kernel_rows(kernels)
if not tuning.empty:
    st.markdown("**Triton autotuning**")
    st.caption(
        "Per Triton kernel: the autotune cache, its candidate and benchmarked configs, the config chosen at "
        "the graph's first run with its registers, spills and shared memory, compile and autotune seconds."
    )
    ui.table(tuning, column_config={"best ms": st.column_config.NumberColumn(format="%.4f")})
with_code = [k for k in kernels if k.get("source")]
if with_code:
    names = [k["name"] for k in with_code]
    if st.session_state.get("graph:kernel") not in names:  # another graph: its first kernel
        st.session_state.pop("graph:kernel", None)
    chosen = st.selectbox("Generated code of", names, key="graph:kernel", format_func=ui.visible)
    kernel = with_code[names.index(chosen)]
    st.caption(
        ui.text(f"{kernel.get('kind')} kernel · {kernel.get('lines')} lines · sha256 {kernel.get('source_hash')}")
    )
    if kernel.get("triton"):
        st.markdown(
            f"**Autotune candidates of {ui.text(kernel['name'])}** "
            f"(autotune cache: {ui.text(kernel['triton'].get('autotune_cache') or '-')})"
        )
        ui.table(
            q.autotune_timing_rows(kernel),
            column_config={
                "ms": st.column_config.NumberColumn(format="%.4f"),
                "x best": st.column_config.NumberColumn(format="%.2fx"),
            },
        )
    st.code(kernel["source"], language=q.code_language(kernel), line_numbers=True)
