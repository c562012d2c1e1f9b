"""Isolation coverage over PyTorch's operator databases: which graphs cross to a worker.

Every OpInfo entry (``op_db``, ``hop_db`` as ``hop:NAME``, and the effectful cases of
``bench/_coverage_cases.py`` as ``case:NAME``) runs all its samples of every float dtype it
supports on the device (the CPU; ``--device cuda`` on a GPU machine, as ``tests/gpu/run.py``
does), forward and, where the op supports it, backward, eagerly and compiled, in fresh processes
per variant:

  sandbox    backend="sandbox": each graph's CompileReport says isolated / cache hit / in the
             user's process (with the reason) / failed
  stock      backend="inductor" with TORCHINDUCTOR_FX_COMPILE_MODE=subprocess (PyTorch's own
             mode): graphs its serializer refused compile in the user's process (with the reason)
  inductor   backend="inductor" in-process: the baseline for wall time

Per entry and variant it prints the graphs by outcome, the samples that failed or whose output
or gradients did not match eager, and the wall time; then the totals, with each variant's time
against in-process Inductor. A sample whose eager output changes with the seed counts as random,
one of an entry that returns uninitialized memory (``empty``, ``new_empty``, ...) as uninitialized:
both compile and run, and their values are not compared.

Real architectures built from configs (``bench/_coverage_models.py``: GPT-2, BERT, T5, timm's
resnet18 and ViT, torchvision's segmentation and detection; the ``models`` extra) run as entries
``model:NAME``: one training step each against eager, loss and gradients compared, every graph
accounted the same way, printed in a section of their own. ``--models all|none|a,b`` picks them.

    .venv/bin/python bench/coverage.py --ci                      # the fixed fast subset
    .venv/bin/python bench/coverage.py --ops sin,linalg.inv --variants sandbox,inductor
    .venv/bin/python bench/coverage.py --jobs 2 --shard 0/4 --out part0.json   # a quarter
    .venv/bin/python bench/coverage.py --merge part*.json                      # totals of parts
    .venv/bin/python bench/coverage.py --models gpt2,bert --variants sandbox   # models only
    python bench/coverage.py --ci --device cuda                                # on a GPU

Each slice of entries runs in a child process (``bench/_coverage_child.py``) with its own
Inductor cache folder and run store, so every graph compiles; ``--jobs N`` runs N children at
once. A child that crashes or stalls on an entry (``--entry-timeout``) costs that entry, recorded
as ``crashed`` with the samples and graphs it got through before (the child's checkpoint), which
count in the totals; the time ratio compares the variants over the entries every variant finished.
The slice goes on in a new child.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _paths import checkout_first  # bench/, the script's own folder, is first on sys.path

HERE = Path(__file__).resolve().parent
VARIANTS = ("sandbox", "stock", "inductor")
BASELINE = "inductor"
MODEL_PREFIX = "model:"  # as _coverage_models.PREFIX, which imports torch: the report needs neither

# The fixed, fast subset: the linalg ops whose error checks thread effect tokens (the graphs
# that used to stay in the user's process), a few plain ops, and every higher-order op case
# that runs on the CPU.
CI_OPS = (
    "linalg.inv",
    "linalg.lu_factor",
    "linalg.tensorinv",
    "sin",
    "nn.functional.gelu",
    "new_empty",  # uninitialized memory: compiled and run, its values not compared
)
CI_DTYPES = "float32"
CI_MAX_SAMPLES = 1


def ci_entries(table: dict[str, Any], float_dtypes: Any) -> list[str]:
    """``CI_OPS``, then the first CPU entry of each higher-order op and each effectful case."""
    names, seen = list(CI_OPS), set()
    for name, op in table.items():
        if name.startswith(("hop:", "case:")) and float_dtypes(op) and op.name not in seen:
            seen.add(op.name)
            names.append(name)
    return names


def _check_device(args: argparse.Namespace) -> None:
    """A device other than the CPU must be there, and runs operator entries only: the models
    train on the CPU here (the GPU machine's zoo covers models on CUDA)."""
    if args.device != "cuda":
        raise SystemExit(f"--device {args.device!r}: cpu or cuda")
    if args.models not in (None, "none"):
        raise SystemExit("--models runs on the CPU only; leave it out with --device cuda")
    args.models = "none"
    import torch  # the parent needs torch only to check the device

    if not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False on this machine")


def select(args: argparse.Namespace) -> list[str]:
    sys.path.insert(0, str(HERE))
    # This process only lists the entries: a worker started by its import of torch would warm up
    # beside the first slice and slow it (the children's environments set their own).
    os.environ["SANDBOX_PRESTART"] = "off"
    from _coverage_models import select as select_models  # imports torch: loaded only for a sweep

    # --models alone runs only those models (none: every op); beside --ops or --ci it adds them;
    # neither: everything.
    chosen_ops = bool(args.ops or args.ci)
    spec = args.models if args.models is not None else ("" if chosen_ops else "all")
    only_models = not chosen_ops and args.models not in (None, "none")
    names = [] if only_models else _select_ops(args)
    names += select_models(spec)
    if args.shard:
        i, n = (int(x) for x in args.shard.split("/"))
        names = names[i::n]
    if args.limit:
        names = names[: args.limit]
    return names


def _select_ops(args: argparse.Namespace) -> list[str]:
    from _coverage_cases import entries, float_dtypes  # torch's OpInfo databases: loaded only for a sweep

    table = entries()
    device = args.device

    def on_device(op: Any) -> list[Any]:
        return float_dtypes(op, device)

    if args.ci:
        names = ci_entries(table, on_device)
    elif args.ops:
        names = [n.strip() for n in args.ops.split(",") if n.strip()]
        unknown = [n for n in names if n not in table]
        if unknown:
            raise SystemExit(f"unknown entries: {', '.join(unknown)} (names as in op_db, hop:NAME, case:NAME)")
    else:
        names = [n for n, op in table.items() if on_device(op)]
    return names


def child_env(variant: str, root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env.pop("TORCHINDUCTOR_FX_COMPILE_MODE", None)
    if variant == "stock":
        env["TORCHINDUCTOR_FX_COMPILE_MODE"] = "subprocess"
    env["TORCHINDUCTOR_CACHE_DIR"] = str(root / "inductor-cache")
    env["TRITON_CACHE_DIR"] = str(root / "triton-cache")
    env["SANDBOX_STORE"] = str(root / "runs.db")  # never the user's own run store
    # Workers start with the child's import of torch, as in a script that names the backend.
    env["SANDBOX_PRESTART"] = "import" if variant == "sandbox" else "off"
    env["PYTHONUNBUFFERED"] = "1"
    # This checkout's sandbox, where it is not installed (a GPU host with a copy of the tree): the
    # child starts in bench/, so nothing else puts the repository on its path.
    env["PYTHONPATH"] = checkout_first(env.get("PYTHONPATH"))
    return env


class Slice:
    """One variant's run of some entries: a child process, restarted past an entry it lost."""

    def __init__(self, variant: str, names: list[str], root: Path, args: argparse.Namespace) -> None:
        self.variant, self.todo, self.root, self.args = variant, list(names), root, args
        self.records: list[dict[str, Any]] = []
        self.proc: subprocess.Popen | None = None
        self.result = root / "result.jsonl"
        self.log = root / "child.log"
        self.wall_s = 0.0
        self.started = 0.0
        self.last_progress = 0.0
        self.seen = 0

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        cache = self.root / "inductor-cache"
        if self.args.cache_seed and not cache.exists():
            shutil.copytree(self.args.cache_seed, cache, ignore=shutil.ignore_patterns("locks", "*.lock"))
        cmd = [sys.executable, str(HERE / "_coverage_child.py"), "--variant", self.variant]
        cmd += ["--ops", ",".join(self.todo), "--result", str(self.result), "--device", self.args.device]
        if self.args.dtypes:
            cmd += ["--dtypes", self.args.dtypes]
        if self.args.max_samples:
            cmd += ["--max-samples", str(self.args.max_samples)]
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=str(HERE), env=child_env(self.variant, self.root), stdout=log, stderr=log
            )
        self.started = self.last_progress = time.time()

    def _read(self) -> list[dict[str, Any]]:
        if not self.result.exists():
            return []
        lines = self.result.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def _partial(self, lost: str) -> dict[str, Any]:
        """What the child's checkpoint says of the lost entry's samples before it was lost."""
        progress = Path(f"{self.result}.progress")
        try:
            rec = json.loads(progress.read_text())
        except (OSError, ValueError):
            return {}
        if rec.get("op") != lost or rec.get("variant") != self.variant:
            return {}  # an earlier entry's, or none: the lost one died before its first sample ended
        progress.unlink()
        return {**rec, "partial": True}

    def poll(self) -> bool:
        """Collect finished entries; restart past a lost one. True once the slice is done."""
        assert self.proc is not None
        done = self._read()
        if len(done) > self.seen:
            self.last_progress = time.time()
            self.seen = len(done)
        stalled = time.time() - self.last_progress > self.args.entry_timeout
        if self.proc.poll() is None and not stalled:
            return False
        if stalled:
            self.proc.kill()
            self.proc.wait()
        self.wall_s += time.time() - self.started
        finished = {r["op"] for r in done}
        remaining = [n for n in self.todo if n not in finished]
        if remaining and (stalled or self.proc.returncode != 0):
            lost = remaining.pop(0)
            why = f"timeout after {self.args.entry_timeout} s" if stalled else f"exit code {self.proc.returncode}"
            tail = self.log.read_text()[-600:] if self.log.exists() else ""
            rec = {"op": lost, "variant": self.variant, "seconds": 0.0, **self._partial(lost)}
            rec.update(crashed=why, log_tail=tail)
            with open(self.result, "a") as f:
                f.write(json.dumps(rec) + "\n")
            self.seen += 1
        self.todo = remaining
        if self.todo:
            self.start()
            return False
        self.records = self._read()
        return True


def run_sweep(names: list[str], args: argparse.Namespace) -> dict[str, Any]:
    variants = [v for v in args.variants.split(",") if v]
    jobs = max(1, args.jobs)
    chunks = [names[i::jobs] for i in range(jobs)] if names else []
    tmp = Path(tempfile.mkdtemp(prefix="sandbox-coverage-"))
    # Variants rotate within each chunk, so a drift in the machine's speed lands on all alike.
    queue = [
        (variants[(c + k) % len(variants)], c, chunk)
        for c, chunk in enumerate(chunks)
        if chunk
        for k in range(len(variants))
    ]
    running: list[Slice] = []
    done: list[Slice] = []
    t0 = time.time()
    try:
        while queue or running:
            while queue and len(running) < jobs:
                variant, c, chunk = queue.pop(0)
                s = Slice(variant, chunk, tmp / f"{variant}-{c}", args)
                s.start()
                running.append(s)
                print(f"started {variant} slice {c} ({len(chunk)} entries)", file=sys.stderr, flush=True)
            time.sleep(0.5)
            for s in [s for s in running if s.poll()]:
                running.remove(s)
                done.append(s)
                print(f"finished {s.variant} slice in {s.wall_s:.0f} s", file=sys.stderr, flush=True)
    finally:
        for s in running:
            if s.proc is not None and s.proc.poll() is None:
                s.proc.kill()
                s.proc.wait()  # gone before the folder it writes into is removed
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    records = [r for s in done for r in s.records]
    walls: dict[str, float] = collections.defaultdict(float)
    for s in done:
        walls[s.variant] += s.wall_s
    machine = {"cpus": os.cpu_count(), "platform": sys.platform}
    return {
        "entries": names,
        "variants": variants,
        "jobs": jobs,
        "dtypes": args.dtypes or "all float",
        "max_samples": args.max_samples or "all",
        "device": args.device,
        "sweep_wall_s": round(time.time() - t0, 1),
        "process_wall_s": dict(walls),
        "machine": machine,
        "records": records,
    }


# --- totals and printing ----------------------------------------------------------------


def is_model(name: str) -> bool:
    return name.startswith(MODEL_PREFIX)


def totals(records: list[dict[str, Any]], variant: str, models: bool = False) -> dict[str, Any]:
    """One variant's sums over the operator entries, or with ``models`` over the model entries."""
    rows = [r for r in records if r["variant"] == variant and is_model(r["op"]) == models]
    t: dict[str, Any] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    for r in rows:
        t["entries"] += 1
        if "crashed" in r:
            t["crashed"] += 1
            if not r.get("partial"):
                continue
            # What it got through counts; its time does not, as the variants stopped at different samples.
            t["crashed_samples"] += r.get("samples", 0)
        if "not_installed" in r:
            t["not_installed"] += 1
            continue
        for k in ("samples", "compared", "failed", "mismatch", "eager_error", "random", "uninitialized"):
            t[k] += r.get(k, 0)
        for k, v in r.get("graphs", {}).items():
            t[f"graphs_{k}"] += v
        for k, v in r.get("reasons", {}).items():
            reasons[k] += v
        if "crashed" not in r:
            t["seconds"] += r.get("seconds", 0.0)
    graphs = sum(v for k, v in t.items() if k.startswith("graphs_"))
    out = dict(t)
    out["graphs"] = graphs
    out["seconds"] = round(t["seconds"], 1)
    compiled = graphs - t["graphs_cache_hit"]
    out["isolated_pct"] = round(100.0 * t["graphs_isolated"] / compiled, 2) if compiled else None
    out["reasons"] = dict(reasons.most_common())
    return out


def paired_seconds(records: list[dict[str, Any]], variants: list[str], models: bool = False) -> dict[str, Any]:
    """Each variant's seconds over the entries that every variant finished, and how many those are.
    The time ratio compares these: an entry stopped in one variant only (its timeout reached under
    load, say) would otherwise leave its time out of that variant's sum but not the others'."""
    finished: dict[str, set[str]] = collections.defaultdict(set)
    for r in records:
        if is_model(r["op"]) == models and "crashed" not in r and "not_installed" not in r:
            finished[r["op"]].add(r["variant"])
    common = {op for op, done in finished.items() if done >= set(variants)}
    seconds = {v: 0.0 for v in variants}
    for r in records:
        if r["op"] in common and r["variant"] in seconds:
            seconds[r["variant"]] += r.get("seconds", 0.0)
    return {"entries": len(common), "seconds": {v: round(x, 1) for v, x in seconds.items()}}


def _ratio(paired: dict[str, Any], variant: str, own_entries: int) -> str:
    """', 1.04x in-process Inductor', naming the entries compared where they are fewer than the variant's own."""
    base = paired["seconds"].get(BASELINE)
    if not base:
        return ""
    n = paired["entries"]
    fewer = f" over the {n} {'entry' if n == 1 else 'entries'} every variant finished" if n < own_entries else ""
    return f", {paired['seconds'][variant] / base:.2f}x in-process Inductor{fewer}"


def _cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return "-"
    if "crashed" in r and not r.get("partial"):
        return f"crashed ({r['crashed']})"
    if "not_installed" in r:
        return r["not_installed"]
    g = r.get("graphs", {})
    parts = [f"{g[k]} {label}" for k, label in (("isolated", "iso"), ("cache_hit", "hit")) if g.get(k)]
    if g.get("in_process"):
        parts.append(f"{g['in_process']} in-proc")
    if g.get("failed"):
        parts.append(f"{g['failed']} failed")
    bad = [f"{r[k]} {k}" for k in ("failed", "mismatch") if r.get(k)]
    if "crashed" in r:
        bad.append(f"crashed ({r['crashed']}) after {r.get('samples', 0)} samples")
    return f"{', '.join(parts) or '0 graphs'}{'; ' + ', '.join(bad) if bad else ''} ({r.get('seconds', 0):.1f} s)"


def report(result: dict[str, Any]) -> str:
    records, variants = result["records"], result["variants"]
    by = {(r["op"], r["variant"]): r for r in records}
    ops = [n for n in result["entries"] if not is_model(n)]
    lines = _op_section(ops, by, records, variants) if ops or not result["entries"] else []
    models = [n for n in result["entries"] if is_model(n)]
    if models:
        lines += _model_section(models, by, records, variants)
    lines.append(
        f"wall: {result['sweep_wall_s']} s for the sweep ({result['jobs']} at once); per variant, its processes: "
        + ", ".join(f"{v} {s:.0f} s" for v, s in result["process_wall_s"].items())
    )
    return "\n".join(lines)


def _op_section(names: list[str], by: dict, records: list[dict[str, Any]], variants: list[str]) -> list[str]:
    lines = [f"| entry | samples | {' | '.join(variants)} |", "|---" * (len(variants) + 2) + "|"]
    for name in names:
        # A crashed entry's samples differ by variant (each cell says how many it got through).
        first = next((by[(name, v)] for v in variants if (name, v) in by and "crashed" not in by[(name, v)]), {})
        samples = first.get("samples", "-")
        lines.append(f"| {name} | {samples} | " + " | ".join(_cell(by.get((name, v))) for v in variants) + " |")
    lines.append("")
    paired = paired_seconds(records, variants)
    for v in variants:
        t = totals(records, v)
        finished = t.get("entries", 0) - t.get("crashed", 0) - t.get("not_installed", 0)
        ratio = _ratio(paired, v, finished)
        lines.append(
            f"{v}: {t.get('entries', 0)} entries, {t.get('samples', 0)} samples ({t.get('compared', 0)} compared, "
            f"{t.get('random', 0)} random, {t.get('uninitialized', 0)} uninitialized, "
            f"{t.get('eager_error', 0)} eager errors), {_graphs(t)}; "
            f"samples failed {t.get('failed', 0)}, "
            f"mismatched {t.get('mismatch', 0)}, entries crashed {t.get('crashed', 0)}{_partial(t)}; "
            f"{t['seconds']} s in entries{ratio}"
        )
        lines += _reasons(t)
    return lines


def _partial(t: dict[str, Any]) -> str:
    """How much of the crashed entries the totals hold: their samples before the crash, not their time."""
    n = t.get("crashed_samples", 0)
    return f" (their {n} samples before it counted, their time not)" if n else ""


def _graphs(t: dict[str, Any]) -> str:
    """A variant's graphs by outcome, as its totals line says them."""
    return (
        f"{t['graphs']} graphs: {t.get('graphs_isolated', 0)} isolated ({t['isolated_pct']}% of compiled), "
        f"{t.get('graphs_cache_hit', 0)} cache hits, {t.get('graphs_in_process', 0)} in the user's process, "
        f"{t.get('graphs_failed', 0)} failed graphs"
    )


def _reasons(t: dict[str, Any]) -> list[str]:
    """The variant's commonest reasons a graph stayed in the user's process or failed, with counts."""
    return [f"    {n:5d}  {reason[:200]}" for reason, n in list(t["reasons"].items())[:12]]


def _model_cell(r: dict[str, Any] | None) -> str:
    cell = _cell(r)
    if r is not None and "loss" in r:
        err = f", gradients within {r['grad_err']:.1e}" if "grad_err" in r else ""
        if r.get("grad_rms64_at"):
            err += f"; float64 {r['grad_rms64']:.1e} against eager's {r['grad_rms64_eager']:.1e}"
        cell += f" loss {r['loss']:.6g} (eager {r['loss_eager']:.6g}{err})"
    if r is not None and r.get("errors"):
        cell += f" error: {r['errors'][0][:160]}"
    return cell


def _model_section(names: list[str], by: dict, records: list[dict[str, Any]], variants: list[str]) -> list[str]:
    """Per model and variant: the graphs by outcome, the step's loss against eager, the seconds
    of the compiled step (compiles included); then each variant's totals over the models."""
    lines = ["", "## Models: one training step each", ""]
    lines += [f"| model | {' | '.join(variants)} |", "|---" * (len(variants) + 1) + "|"]
    for name in names:
        cells = " | ".join(_model_cell(by.get((name, v))) for v in variants)
        lines.append(f"| {name[len(MODEL_PREFIX) :]} | {cells} |")
    lines.append("")
    paired = paired_seconds(records, variants, models=True)
    for v in variants:
        t = totals(records, v, models=True)
        run = t.get("entries", 0) - t.get("not_installed", 0) - t.get("crashed", 0)
        ratio = _ratio(paired, v, run)
        lines.append(
            f"{v} models: {run} run, {t.get('not_installed', 0)} not installed, {t.get('crashed', 0)} crashed; "
            f"{_graphs(t)}; steps failed {t.get('failed', 0)}, "
            f"mismatched {t.get('mismatch', 0)}, random {t.get('random', 0)}; "
            f"{t['seconds']} s in compiled steps{ratio}"
        )
        lines += _reasons(t)
    return lines


def merge(paths: list[str]) -> dict[str, Any]:
    parts = [json.loads(Path(p).read_text()) for p in paths]
    out = dict(parts[0])
    # Parts may split the entries (shards) or the variants (the same entries, run one variant each).
    out["entries"] = list(dict.fromkeys(n for p in parts for n in p["entries"]))
    out["variants"] = list(dict.fromkeys(v for p in parts for v in p["variants"]))
    out["records"] = [r for p in parts for r in p["records"]]
    out["sweep_wall_s"] = round(sum(p["sweep_wall_s"] for p in parts), 1)
    walls: dict[str, float] = collections.defaultdict(float)
    for p in parts:
        for v, s in p["process_wall_s"].items():
            walls[v] += s
    out["process_wall_s"] = dict(walls)
    return out


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", default="", help="comma-separated entries (op_db names, hop:NAME, case:NAME)")
    ap.add_argument("--ci", action="store_true", help="the fixed fast subset (float32, one sample per entry)")
    ap.add_argument(
        "--models",
        default=None,
        help="all, none or comma-separated model names (bench/_coverage_models.py); alone: only these; "
        "default: all with the full sweep, none with --ops or --ci",
    )
    ap.add_argument("--limit", type=int, default=0, help="the first N selected entries")
    ap.add_argument("--shard", default="", help="i/n: every n-th entry from the i-th (0-based)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--dtypes", default="", help="e.g. float32,float64 (default: every supported float dtype)")
    ap.add_argument("--max-samples", type=int, default=0, help="per entry and dtype (default: all)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda: where the samples and their graphs run")
    ap.add_argument("--jobs", type=int, default=1, help="child processes at once")
    ap.add_argument("--entry-timeout", type=float, default=900.0, help="seconds one entry may take")
    ap.add_argument("--out", default="", help="write the records and totals as JSON")
    ap.add_argument("--merge", nargs="*", default=None, help="print the totals of earlier --out files")
    ap.add_argument(
        "--cache-seed", default="", help="an Inductor cache folder to start each child's from (a CPU probe's results)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the children's folders (logs, caches, stores)")
    args = ap.parse_args(argv)
    # A sweep stopped by `timeout` or kill gets SIGTERM: exiting through run_sweep's cleanup stops its
    # children and removes its temporary folder, which the default action would leave behind.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if args.merge:
        result = merge(args.merge)
    else:
        if args.ci:
            args.dtypes = args.dtypes or CI_DTYPES
            args.max_samples = args.max_samples or CI_MAX_SAMPLES
        if args.device != "cpu":
            _check_device(args)
        names = select(args)
        print(f"{len(names)} entries x {args.variants}", file=sys.stderr, flush=True)
        result = run_sweep(names, args)
    result["totals"] = {v: totals(result["records"], v) for v in result["variants"]}
    result["model_totals"] = {v: totals(result["records"], v, models=True) for v in result["variants"]}
    result["paired_seconds"] = paired_seconds(result["records"], result["variants"])
    print(report(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
