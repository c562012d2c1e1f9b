"""Compare: two runs: why B compiled differently from A first, then graph by graph and kernel by kernel."""

import streamlit as st

from dashboard import ui
from dashboard.queries import causes as qc
from dashboard.queries import compare as q
from dashboard.queries import runtime as qr
from dashboard.queries.graph import code_language
from dashboard.queries.run import cached_run
from dashboard.queries.runs import cached_runs, previous_of

src = ui.require_store()
runs = cached_runs(src)
st.title("Compare two runs")
if len(runs) < 2:
    st.info("The store has one run: make another (e.g. with a different Inductor option) to compare them.")
    st.stop()

left, right = st.columns(2)
newest = str(runs.iloc[0]["run_id"])
run_b = ui.pick_run(src, runs, "B (after)", "b", fallback=newest, container=right)
run_a = ui.pick_run(src, runs, "A (before)", "a", fallback=previous_of(runs, run_b) if run_b else None, container=left)
if run_a is None or run_b is None:  # a link to no run of this store: its warning and the pickers, nothing else
    st.stop()
if run_a == run_b:
    st.warning("A and B are the same run: pick two different runs.")
d = q.cached_compare(src, run_a, run_b)
found = qc.cached_compare_causes(src, run_a, run_b)


def show_cause(c: qc.Cause) -> None:
    links = qc.compare_links(c, run_a, run_b, d.environment)
    st.markdown(qc.markdown_line(ui.plain(c.text), [(ui.plain(link.label), ui.href(link)) for link in links]))


st.subheader("Why B differs from A", anchor="why")
if not found:
    st.info(qc.NO_CAUSE)
for c in found[: qc.SHOWN]:
    show_cause(c)
if len(found) > qc.SHOWN:
    with st.expander(f"{len(found) - qc.SHOWN} more"):
        for c in found[qc.SHOWN :]:
            show_cause(c)

with st.expander("What changed, in numbers", expanded=True):
    st.markdown("\n".join(f"- {ui.text(line)}" for line in q.verdict(d)))

cols = st.columns(4)
ta, tb = d.a["compile_s"], d.b["compile_s"]
cols[0].metric("Compile time (B)", ui.seconds(tb), delta=f"{tb - ta:+.2f} s", delta_color="inverse")
cols[1].metric(
    "Graphs matched", d.graphs["matched"], help=f"{d.graphs['added']} only in B, {d.graphs['removed']} only in A"
)
cols[2].metric("Graphs only in B / A", f"{d.graphs['added']} / {d.graphs['removed']}")
cols[3].metric("Environment differences", len(d.environment))
k = d.kernels
cols = st.columns(4)
cols[0].metric("Kernels added", k["added"])
cols[1].metric("Kernels removed", k["removed"])
cols[2].metric("Kernels changed", k["changed"])
cols[3].metric("Kernels unchanged", k["unchanged"])

env = qc.settings_rows(d, found)
if not env.empty:
    st.subheader(f"What differs between the runs ({len(env)})", anchor=qc.DIFFERENCES)
    st.caption("Highlighted: the settings a cause above names (its number in the last column).")
    ui.table(
        env.style.apply(ui.highlight("cause", "rgba(255, 196, 0, 0.2)"), axis=1),
        column_config={
            "setting": ui.name_column(env["setting"]),
            "cause": st.column_config.TextColumn("cause", width="small"),
        },
    )

st.subheader("Graphs")
st.caption(
    "Matched by code location, graph kind and order. Red: compiled at least "
    f"{q.REGRESSION_PCT:.0%} (and {q.REGRESSION_MIN_S:.2f} s) slower in B."
)
graphs = q.graph_change_rows(d)
ui.table(
    graphs.style.apply(ui.highlight("regression"), axis=1).format(
        {"A s": "{:.2f}", "B s": "{:.2f}", "delta s": "{:+.2f}", "change": q.change_text}, na_rep=""
    ),
    column_order=[c for c in graphs.columns if c != "regression"],
    column_config={"graph": ui.name_column(graphs["graph"])},
)

st.subheader("Kernels", anchor=qc.KERNELS)
changes = q.kernel_change_rows(d)
asked = st.query_params.get("kernel")  # a cause's link names a kernel
if asked and asked != st.session_state.get("compare:kernel:asked"):
    graph = st.query_params.get("kernel_graph")
    picked = (
        None
        if changes.empty
        else qc.kernel_row(
            d, changes, asked, st.query_params.get("side", "B"), int(graph) if graph and graph.isdigit() else None
        )
    )
    st.session_state["compare:kernel"] = picked
    st.session_state["compare:kernel:missing"] = None if picked is not None else (asked, run_a, run_b)
missing = st.session_state.get("compare:kernel:missing")
if missing is not None and (missing != (asked, run_a, run_b) or st.session_state.get("compare:kernel") is not None):
    missing = st.session_state["compare:kernel:missing"] = None  # other runs picked since, or a kernel
if missing is not None:
    st.warning(
        f"No changed kernel {ui.asked_text(asked)} between these two runs."
        + ("" if changes.empty else " Pick one below.")
    )
st.session_state["compare:kernel:asked"] = asked
row = None
if changes.empty:
    said, level = q.no_kernel_change(d)
    {"success": st.success, "info": st.info, "warning": st.warning}[level](ui.text(said))
else:
    st.caption("Matched by name within each graph pair, then by source similarity.")
    ui.table(
        changes,
        column_order=[c for c in changes.columns if c not in ("g", "k")],
        column_config={
            "graph": ui.name_column(changes["graph"]),
            "kernel A": ui.name_column(changes["kernel A"]),
            "kernel B": ui.name_column(changes["kernel B"]),
            "similarity": st.column_config.NumberColumn(format="percent"),
        },
    )
    options = list(range(len(changes)))

    def describe(i: int) -> str:
        row = changes.iloc[i]
        name = (
            row["kernel A"]
            if row["kernel A"] == row["kernel B"]
            else " \u2192 ".join(x for x in (row["kernel A"], row["kernel B"]) if x)
        )
        return ui.visible(f"{row['status']}: {name} ({row['graph']})")

    if missing is None and st.session_state.get("compare:kernel") not in options:  # another pair: the top
        st.session_state.pop("compare:kernel", None)
    chosen = st.selectbox("Kernel", options, format_func=describe, key="compare:kernel", placeholder="Choose one")
    row = changes.iloc[chosen] if chosen is not None else None  # None: a link to no kernel, none picked yet
if row is not None:
    ka, kb = q.cached_kernel_pair(src, run_a, run_b, int(row["g"]), int(row["k"]))
    sa, sb = (ka or {}).get("source") or "", (kb or {}).get("source") or ""
    lang = code_language(kb or ka or {})
    launch = q.launch_rows(ka, kb)
    if not launch.empty:
        st.markdown("**Launch configuration, registers, spills, shared memory**")
        ui.table(
            launch.style.apply(ui.highlight("changed", "rgba(255, 196, 0, 0.2)"), axis=1).format(
                {"delta": "{:+g}"}, na_rep=""
            ),
            column_order=["launcher", "field", "A", "B", "delta"],
        )
    elif ka is not None and kb is not None:
        st.caption("No launch metadata (registers, spills, shared memory come with GPU/Triton kernels).")
    tuning = q.triton_detail_rows(ka, kb)
    if not tuning.empty:
        st.markdown("**Triton autotuning**")
        ui.table(
            tuning.style.apply(ui.highlight("changed", "rgba(255, 196, 0, 0.2)"), axis=1),
            column_order=["field", "A", "B"],
        )
    if sa and sb and sa != sb:
        side, unified, full = st.tabs(["Side by side", "Unified diff", "Both sources"])
        with side:
            rows = q.side_by_side(sa, sb, context=3)
            colors = {
                "replace": "rgba(255, 196, 0, 0.2)",
                "delete": "rgba(255, 75, 75, 0.18)",
                "insert": "rgba(33, 195, 84, 0.18)",
            }
            ui.table(
                rows.style.apply(
                    lambda r: [f"background-color: {colors[r['op']]}" if r["op"] in colors else ""] * len(r), axis=1
                ).format(na_rep=""),
                column_order=["line A", "A", "line B", "B"],
                height=min(36 + 35 * len(rows), 700),
                column_config={
                    "A": st.column_config.TextColumn(f"A: {ka.get('name')}", width="large"),
                    "B": st.column_config.TextColumn(f"B: {kb.get('name')}", width="large"),
                },
            )
        with unified:
            st.code(q.unified_diff(sa, sb, f"A/{ka.get('name')}", f"B/{kb.get('name')}"), language="diff")
        with full:
            c1, c2 = st.columns(2)
            c1.code(sa, language=lang, line_numbers=True)
            c2.code(sb, language=lang, line_numbers=True)
    elif sa or sb:
        which = "A" if sa else "B"
        st.caption(f"Only in {which}:" if not (sa and sb) else "Same source in both runs:")
        st.code(sa or sb, language=lang, line_numbers=True)

timed = qr.runtime_delta_rows(d, q.change_label)
if not timed.empty:
    st.subheader("Kernel runtime", anchor="kernel-runtime")
    st.caption(
        "Matched kernels with runtimes in both runs (option profile_steps): time per call in the profiled "
        "calls, B/A, share of the graph's time, and the build differences that may explain a change. Red: "
        f"at least {qr.runtime.MIN_RATIO:.2f}x slower in B."
    )
    ui.table(
        timed.style.apply(ui.highlight("regression"), axis=1).format(
            {"A µs/call": "{:.1f}", "B µs/call": "{:.1f}", "B/A": "{:.2f}x", "A share": "{:.0%}", "B share": "{:.0%}"},
            na_rep="",
        ),
        column_order=[c for c in timed.columns if c != "regression"],
        column_config={"graph": ui.name_column(timed["graph"]), "kernel": ui.name_column(timed["kernel"])},
    )

tuned = q.autotune_change_rows(d, cached_run(src, run_a)[1], cached_run(src, run_b)[1])
if not tuned.empty:
    st.subheader("max-autotune choices")
    st.caption(
        "Each op max-autotune tuned, matched by graph, op and input shapes: the candidate chosen in A and "
        "in B, with its benchmark time."
    )
    ui.table(
        tuned,
        column_config={
            "graph": ui.name_column(tuned["graph"]),
            "A ms": st.column_config.NumberColumn(format="%.4f"),
            "B ms": st.column_config.NumberColumn(format="%.4f"),
        },
    )

c1, c2 = st.columns(2)
with c1:
    st.subheader("Stage time", anchor=qc.STAGES)
    st.caption("Own seconds per stage (less nested stages), all graphs. Red: a regression.")
    stages = q.stage_delta_rows(d)
    ui.table(
        stages.style.apply(ui.highlight("regression"), axis=1).format(
            {"A s": "{:.3f}", "B s": "{:.3f}", "delta s": "{:+.3f}", "change": q.change_text}, na_rep=""
        ),
        column_order=["stage", "A s", "B s", "delta s", "change"],
        column_config={"stage": ui.name_column(stages["stage"])},
    )
with c2:
    st.subheader("Metrics")
    st.caption("Inductor metrics, graph sizes, counters and kernel counts, all graphs.")
    deltas = q.metric_delta_rows(d)
    ui.table(
        deltas.style.format({"A": "{:g}", "B": "{:g}", "delta": "{:+g}", "change": q.change_text}, na_rep=""),
        column_config={"metric": ui.name_column(deltas["metric"])},
    )
