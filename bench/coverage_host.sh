#!/bin/bash
# The coverage sweep (CPU samples; CUDA's with DEVICE=cuda) on a many-core host whose calls have a time limit: units of
# `bench/coverage.py --shard K/UNITS` (all three variants, one child at a time, as on the 2-core VM) run
# LANES at once; no unit starts in the last minute before DEADLINE_S, and one still running at the
# deadline is lost whole, so units are small. Units whose file is already under DONE_DIR are skipped,
# so the next call goes on where this one stopped.
#   bench/coverage_host.sh OUTDIR [LANES] [DEADLINE_S] [UNITS] [DONE_DIR]
# Each finished unit: OUTDIR/shard-K-of-UNITS.json and its log. Merge them with
# `bench/coverage.py --merge DIR/shard-*-of-UNITS.json`. TORCHINDUCTOR_COMPILE_THREADS=1 in the environment
# keeps LANES units from each starting a compile pool per core (every variant honours it alike).
set -u
out=${1:?OUTDIR}; lanes=${2:-12}; deadline=${3:-540}; units=${4:-350}
device=${DEVICE:-cpu}
version=$(python3 -c 'import torch; print(torch.__version__.split("+")[0])')
done_dir=${5:-docs/decisions/coverage/torch-$version-$device}
export PYTHONUNBUFFERED=1
start=$(date +%s)
mkdir -p "$out/logs"
# torch's OpInfo database imports expecttest (carried as a wheel where it is missing).
if ! python3 -c "import expecttest" 2>/dev/null && ls .whl/expecttest-*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --upgrade --target /tmp/site .whl/expecttest-*.whl \
        && export PYTHONPATH=/tmp/site
fi
# bench/ comes first on the children's path, so its coverage.py shadows the code-coverage package that
# numba imports (AttributeError: module 'coverage' has no attribute 'types'), and torch's OpInfo
# database imports numba where it is installed: keep numba out (torch takes its ImportError).
mkdir -p /tmp/shim/numba
echo 'raise ImportError("numba is kept out of the coverage sweep")' >/tmp/shim/numba/__init__.py
export PYTHONPATH=/tmp/shim${PYTHONPATH:+:$PYTHONPATH}
kept=$(ls "$done_dir" 2>/dev/null | grep -c json)
echo "device $device; cores $(nproc); lanes $lanes; deadline ${deadline} s; units $units; done in $done_dir: $kept"
unit() {
    k=$1; name="shard-$k-of-$units.json"
    [ -e "$done_dir/$name" ] && return 0
    left=$(( deadline - ($(date +%s) - start) ))
    [ "$left" -lt 60 ] && return 0
    t=$(date +%s)
    timeout "$left" python3 bench/coverage.py --shard "$k/$units" --models none --variants sandbox,stock,inductor \
        --device "$device" --entry-timeout "${ENTRY_TIMEOUT_S:-300}" --out "$out/part-$name" >"$out/logs/$k.log" 2>&1
    rc=$?
    if [ $rc -eq 0 ] && [ -s "$out/part-$name" ]; then
        mv "$out/part-$name" "$out/$name"; echo "unit $k: $(( $(date +%s) - t )) s"
    else
        rm -f "$out/part-$name"; echo "unit $k: rc $rc after $(( $(date +%s) - t )) s (lost)"
    fi
}
export -f unit; export out units deadline start done_dir device
seq 0 $((units - 1)) | xargs -P "$lanes" -I{} bash -c 'unit {}'
echo "finished units: $(ls "$out" | grep -c '^shard-.*json$') in $(( $(date +%s) - start )) s"
