#!/bin/bash
# The GPU benches as run on the device machine: make sure the interpreter's packages have
# their bytecode, and this checkout's (an install that never wrote .pyc files recompiles every module of torch
# at each import, seconds per process, in the user's process and in every worker alike),
# then time a worker's start and the compile overhead. Usage: bench/gpu_device.sh OUTDIR [compile_overhead args]
set -u
out=${1:?OUTDIR}; shift
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-$PWD}
sp=$(python3 -c "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))")
n=$(find "$sp/torch" -name '*.pyc' | wc -l)
echo "site-packages $sp: $n .pyc files under torch; PYTHONDONTWRITEBYTECODE=${PYTHONDONTWRITEBYTECODE:-unset}"
t=$(date +%s); python3 -m compileall -q -j 0 "$sp" >/dev/null 2>&1; echo "compileall: $(( $(date +%s) - t )) s, now $(find "$sp/torch" -name '*.pyc' | wc -l) .pyc files"
# This checkout's packages too: a pip install writes their bytecode; with PYTHONDONTWRITEBYTECODE=1
# and a source checkout on PYTHONPATH, every process would compile the sandbox's modules again.
python3 -m compileall -q -j 0 sandbox bench dashboard >/dev/null 2>&1
python3 bench/worker_start.py --repeats 1 --out "$out/start.json" 2>&1 | tail -16
python3 bench/compile_overhead.py --device cuda --out "$out/co.json" "$@" 2>&1 | grep -v '^```\|^{' | tail -32
