#!/bin/bash
# Issue figures for one compile service per host, as run on the GPU machine (16 cores, one GPU):
# bytecode for the interpreter's packages and this checkout (a torch install without .pyc files
# recompiles torch in every rank), the backend's entry point, then one of:
#   bench/gpu_job.sh OUTDIR ranks    -> bench/job_compile.py, 1 and 8 CPU ranks (gloo)
#   bench/gpu_job.sh OUTDIR gpu      -> workers=2 against workers=1 on the GPU, and 2 ranks sharing it
#   bench/gpu_job.sh OUTDIR both     -> 1 and 8 CPU ranks (no new job after RANKS_BUDGET_S, 300), then
#                                       workers=2 against workers=1 (stopped after TTFS_LIMIT_S, 240)
#   bench/gpu_job.sh OUTDIR checks   -> the GPU store and the CPU-graph checks (tests/gpu/run.py), the
#                                       cost of a profiled step, where the first step's time goes (one
#                                       cProfiled run), then time to first step: in-process Inductor,
#                                       async, blocking with 1 and 2 workers (2 repeats)
#   bench/gpu_job.sh OUTDIR figures  -> the cost of a profiled step, then 1 and 8 CPU ranks with inductor
#                                       and the sandbox, repeated for medians (no new job after
#                                       RANKS_BUDGET_S, 280)
#   bench/gpu_job.sh OUTDIR shared   -> 1 and 2 ranks sharing the GPU (gloo), eager, inductor, the sandbox
#                                       with and without the host's compile service
set -u
out=${1:?OUTDIR}; what=${2:?ranks or gpu}; shift 2
export PYTHONUNBUFFERED=1
sp=$(python3 -c "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))")
if [ ! -e "$sp/.bytecode-done" ]; then
    t=$(date +%s)
    for p in torch triton sympy numpy networkx functorch torchgen mpmath jinja2; do
        [ -d "$sp/$p" ] && echo "$sp/$p"
    done | xargs python3 -m compileall -q -j 0 >/dev/null 2>&1
    touch "$sp/.bytecode-done"; echo "compileall: $(( $(date +%s) - t )) s"
fi
python3 -m compileall -q -j 0 sandbox bench dashboard >/dev/null 2>&1
python3 -c "import sandbox" 2>/dev/null && python3 -c "from importlib.metadata import entry_points as e; assert [x for x in e(group='torch_dynamo_backends') if x.name == 'sandbox']" 2>/dev/null \
    || python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
echo "cores $(nproc); $(nvidia-smi -L 2>/dev/null | head -1)"
case $what in
ranks)
    python3 bench/job_compile.py --ranks 1,8 --repeats 1 --variants eager,inductor,sandbox --budget-s ${RANKS_BUDGET_S:-900} --grace-limit-s 20 --out "$out/job_ranks.json" "$@" 2>&1 | tee "$out/job_ranks.log" | grep -v '^{' | tail -40 ;;
gpu)
    python3 bench/time_to_first_step.py --device cuda --variants inductor,sandbox,sandbox_2w --repeats 3 --steps 20 --out "$out/ttfs.json" 2>&1 | tail -30
    python3 bench/job_compile.py --device cuda --ranks 2 --repeats 1 --variants inductor,sandbox,sandbox_off --out "$out/job_gpu.json" "$@" 2>&1 | grep -v '^{' | tail -25 ;;
both)
    python3 bench/job_compile.py --ranks 1,8 --repeats 1 --variants eager,inductor,sandbox --budget-s ${RANKS_BUDGET_S:-300} --grace-limit-s 20 --out "$out/job_ranks.json" 2>&1 | tee "$out/job_ranks.log" | grep -v '^{' | tail -30
    timeout ${TTFS_LIMIT_S:-240} python3 bench/time_to_first_step.py --device cuda --variants sandbox,sandbox_2w --repeats 2 --steps 20 --out "$out/ttfs.json" 2>&1 | tee "$out/ttfs.log" | tail -24 ;;
checks)
    timeout 200 python3 tests/gpu/run.py --only store,cpu_graph --out "$out" 2>&1 | grep -v '^{' | tail -14
    timeout 120 python3 bench/profile_overhead.py --device cuda --width 1024 --repeats 3 --out "$out/profile.json" 2>&1 | tail -14
    timeout 100 python3 bench/time_to_first_step.py --device cuda --variants inductor,sandbox_async --repeats 1 --profile-first-step --max-s 40 > "$out/first_step_profile.log" 2>&1
    grep -E "^  repeat|function calls" "$out/first_step_profile.log"
    timeout ${TTFS_LIMIT_S:-300} python3 bench/time_to_first_step.py --device cuda --variants inductor,sandbox_async,sandbox,sandbox_2w --repeats 2 --max-s 60 --out "$out/ttfs.json" 2>&1 | tee "$out/ttfs.log" | tail -30 ;;
figures)
    timeout 130 python3 bench/profile_overhead.py --device cuda --width 1024 --repeats 3 --out "$out/profile.json" > "$out/profile.log" 2>&1
    tail -14 "$out/profile.log"
    python3 bench/job_compile.py --ranks 1,8 --repeats 3 --variants inductor,sandbox --budget-s ${RANKS_BUDGET_S:-280} --grace-limit-s 20 --out "$out/job_ranks.json" > "$out/job_ranks.log" 2>&1
    grep -v '^{' "$out/job_ranks.log" | tail -30 ;;
shared)
    python3 bench/job_compile.py --device cuda --ranks 1,2 --repeats 1 --variants eager,inductor,sandbox,sandbox_off --grace-limit-s 15 --out "$out/job_gpu.json" > "$out/job_gpu.log" 2>&1
    grep -v '^{' "$out/job_gpu.log" | tail -24 ;;
esac
