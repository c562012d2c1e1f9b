"""Job: the ranks of one job side by side: graphs that diverge across ranks (another graph,
other cache outcomes, other kernels, stragglers), and an earlier job beside it."""

import streamlit as st

from dashboard import ui
from dashboard.queries import job as q
from sandbox.analysis.jobs import STRAGGLER_FACTOR, STRAGGLER_MIN_S

src = ui.require_store()
known = q.cached_jobs(src)
st.title("Job")
if known.empty:
    st.info(
        "No run in this store belongs to a job. Processes started by torchrun carry its TORCHELASTIC_RUN_ID; "
        "set SANDBOX_JOB to group other processes into one job."
    )
    st.code(
        'SANDBOX_JOB=nightly-42 torchrun --nproc-per-node 2 train.py   # with torch.compile(model, backend="sandbox")',
        language="bash",
    )
    st.stop()

labels = {row["job"]: q.job_label(row) for row in known.to_dict("records")}
left, right = st.columns(2)
job = ui.pick(
    "Job",
    list(known["job"]),
    "job",
    "pick:job",
    lambda j: labels.get(j, j),
    container=left,
    missing=lambda asked: f"No job {asked} in this store.",
)
if job is None:  # a link to no job of this store: its warning and the picker, nothing else
    st.stop()
earlier = [""] + [j for j in known["job"] if j != job]
against = ui.pick(
    "Compare with an earlier job",
    earlier,
    "against",
    "pick:against",
    lambda j: labels.get(j, j) if j else "none",
    fallback=q.previous_job(known, job) or "",
    container=right,
    missing=lambda asked: f"No other job {asked} in this store.",
)
if against is None:  # a link to no other job: pick one (or none) first, nothing shown meanwhile
    st.stop()
report = q.cached_job(src, job, against or None)
cards = q.job_cards(report)

cols = st.columns(5)
cols[0].metric(
    "Ranks",
    f"{cards['ranks']} of {ui.text(cards['world_size'] or '?')}",
    help="ranks with a run in this store, of the job's world size",
)
cols[1].metric("Graphs that diverge", f"{cards['divergent']} of {cards['graphs']}")
cols[2].metric(
    "Stragglers",
    ui.text(", ".join(f"rank {r}" for r in cards["stragglers"]) or "none"),
    help=f"a rank that took more than {STRAGGLER_FACTOR:g}x the median of the other ranks, "
    f"and at least {STRAGGLER_MIN_S:g} s more (per graph, or in total)",
)
cols[3].metric(
    "Slowest rank", f"rank {ui.text(cards['slowest_rank'])}", help="the rank with the most compile time in total"
)
cols[4].metric(
    "Its compile time",
    ui.seconds(cards["slowest_s"]),
    delta=f"{cards['slowest_s'] - cards['median_s']:+.2f} s vs median",
    delta_color="inverse",
)

st.subheader("Verdict")
st.markdown("\n".join(f"- {ui.text(line)}" for line in q.job_verdict(report)))

st.subheader("Ranks")
st.caption(
    "compile s: compile work, and the waits for graphs another rank compiled (waited for: how many, waited s: "
    "how long); served: graphs this rank compiled that other processes waited for. Waits for a free worker "
    "are left out."
)
ranks = q.job_rank_rows(report)
ui.table(
    ranks.assign(open=[ui.link("Run", run=r) for r in ranks["run_id"]])
    .style.apply(ui.highlight("straggler"), axis=1)
    .format({"compile s": "{:.2f}", "waited s": "{:.2f}"}),
    column_order=[
        "rank",
        "open",
        "host",
        "pid",
        "started",
        "graphs",
        "compile s",
        "cache hits",
        "failures",
        "restarts",
        "waited for",
        "waited s",
        "served",
    ],
    column_config={
        "open": st.column_config.LinkColumn("run", display_text="open", width="small"),
        "started": ui.datetime_column(),
    },
)

st.subheader("Graphs across ranks")
st.caption(
    "Matched across ranks by code location, graph kind and order; kernels compared with the lowest rank's. "
    "Red: the ranks differ."
)
graphs = q.job_graph_rows(report)
ui.table(
    graphs.style.apply(ui.highlight("diverges"), axis=1).format({"median s": "{:.2f}", "slowest s": "{:.2f}"}),
    column_order=[c for c in graphs.columns if c not in ("g", "diverges")],
)

options = list(graphs["g"])
order = sorted(options, key=lambda g: not graphs["diverges"][g])  # the diverging ones first
if st.session_state.get("job:graph") not in options:
    st.session_state.pop("job:graph", None)
chosen = st.selectbox(
    "Graph",
    order,
    key="job:graph",
    format_func=lambda g: ui.visible(
        f"{graphs['graph'][g]} {graphs['kind'][g]} · {graphs['divergence'][g] or 'the same on every rank'}"
    ),
)
per_rank = q.job_graph_ranks(report, int(chosen))
ui.table(
    per_rank.assign(
        open=[ui.link("Graph", run=r, graph=i) for r, i in zip(per_rank["run_id"], per_rank["graph_index"])]
    )
    .style.apply(ui.highlight("straggler"), axis=1)
    .format({"time s": "{:.2f}"}),
    column_order=[
        "rank",
        "open",
        "compile id",
        "outcome",
        "caches",
        "graph hash",
        "time s",
        "kernels",
        "kernels vs lowest rank",
        "shared",
    ],
    column_config={"open": st.column_config.LinkColumn("graph", display_text="stages and kernels", width="small")},
)

if report.against is not None:
    st.subheader(f"Against {ui.text(report.against.earlier)}")
    st.caption("Rank r then against rank r now: graphs matched by code location, kernels by name then source.")
    ui.table(
        q.job_against_rows(report).style.format({"then s": "{:.2f}", "now s": "{:.2f}", "delta s": "{:+.2f}"}),
    )
    then_now = q.job_against_graph_rows(report)
    ui.table(
        then_now.style.apply(ui.highlight("graph changed", "rgba(255, 196, 0, 0.2)"), axis=1).format(
            {"then s (median)": "{:.2f}", "now s (median)": "{:.2f}"}, na_rep=""
        ),
    )
    if report.against.only_earlier or report.against.only_now:
        then, now = report.against.only_earlier or "none", report.against.only_now or "none"
        st.caption(ui.text(f"Ranks only then: {then}; only now: {now}"))
