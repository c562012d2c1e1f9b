"""How often the verdict's first sentence names the planted cause.

Runs ``tests/analysis/test_planted_causes.py`` (pairs of real runs through the backend that differ
by exactly one cause each) for several rounds, alternating an idle machine with one kept busy by
spinning processes for the whole round, and counts, per planted cause, the rounds in which the first
sentence of ``sandbox diff --json``'s verdict named it (the test's own assertion). Target: every
time, idle or loaded. A case whose test never ran prints "not reached" and fails the target.

    python bench/verdict_accuracy.py [--rounds 4] [--spinners 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST = "tests/analysis/test_planted_causes.py"


def spin() -> None:
    while True:
        pass


def one_round(loaded: bool, spinners: int) -> tuple[dict[str, bool], float]:
    procs = [multiprocessing.Process(target=spin, daemon=True) for _ in range(spinners if loaded else 0)]
    for p in procs:
        p.start()
    t = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", TEST, "-k", "first_sentence"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=1800,
        )
    finally:
        for p in procs:
            p.terminate()
    out = proc.stdout
    results = {}
    for status, case in re.findall(
        r"^(PASSED|FAILED|ERROR) \S+first_sentence_names_the_planted_cause\[(\w+)\]", out, re.M
    ):
        results[case] = status == "PASSED"
    if not results or not all(results.values()):
        # Keep pytest's own account of a failed round: the ratio alone does not say why.
        log = Path(os.environ.get("TMPDIR", "/tmp")) / f"verdict-accuracy-{'loaded' if loaded else 'idle'}.log"
        log.write_text(out + proc.stderr)
        print(f"  pytest output of this round: {log}", flush=True)
    return results, time.monotonic() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--spinners", type=int, default=2, help="spinning processes in a loaded round")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from analysis.test_planted_causes import PAIRS  # the planted cases, as the test defines them

    named: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for i in range(args.rounds):
        state = "loaded" if i % 2 else "idle"
        results, seconds = one_round(state == "loaded", args.spinners)
        print(f"round {i + 1} ({state}, {seconds:.0f} s): {sum(results.values())} of {len(PAIRS)} named", flush=True)
        for case in PAIRS:
            if case in results:
                named[(case, state)].append(results[case])
    ok = True
    states = ["idle", "loaded"][: min(args.rounds, 2)]
    print(f"\n{'case':<10}" + "".join(f"{state:>13}" for state in states))
    for case in sorted(PAIRS):
        cells = []
        for state in states:
            got = named.get((case, state))
            cells.append(f"{sum(got)}/{len(got)}" if got else "not reached")
            ok = ok and bool(got) and all(got)
        print(f"{case:<10}" + "".join(f"{c:>13}" for c in cells))
    total = [v for got in named.values() for v in got]
    share = sum(total) / len(total) if total else 0.0
    print(
        f"\nfirst sentence names the cause: {sum(total)} of {len(total)} ({share:.0%}); target every time: "
        f"{'met' if ok and total else 'NOT met'}"
    )
    return 0 if ok and total else 1


if __name__ == "__main__":
    sys.exit(main())
