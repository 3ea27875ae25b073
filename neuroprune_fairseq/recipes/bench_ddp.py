#!/usr/bin/env python
"""Time per update of ``--ddp-backend c10d`` (PyTorch DDP, fairseq's default) against
``legacy_ddp`` with 2 data-parallel workers (gloo on the CPU), NeuroPrune training as the recipes
run it (``neuroprune_translation``, ``neuroprune_ce``, head pruning on).

Each run is ``fairseq-train`` as 2 worker processes (``--distributed-no-spawn``, one
``OMP_NUM_THREADS`` share of the cores each) for ``--warmup + --updates`` updates; every worker times
``Trainer.train_step`` (forward, backward, all-reduce, optimizer step) with a wall clock, and rank 0's
times after the warm-up are kept. Each of ``--reps`` rounds runs c10d, legacy, legacy, c10d (two
runs per backend), so load from other processes hits both alike. Printed: the median seconds per update of
each backend and the ratio c10d / legacy_ddp (< 1: c10d is faster).

    python scripts/bench_ddp.py --data PREP/bin [--updates 20] [--reps 2] [--out results/bench_ddp.json]

``--data`` is a fairseq data-bin folder (e.g. ``neuroprune-prepare``'s ``prep/bin``); the model is
the recipes' Multi30k CPU model (``presets.MULTI30K_MODEL``) unless ``--model-args`` replaces it.
"""
import argparse
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from neuroprune_fairseq.recipes import datafiles, presets, runner, steps

BACKENDS = ("c10d", "legacy_ddp")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(out: str, fairseq_args) -> None:
    """One worker: ``fairseq-train fairseq_args`` with ``Trainer.train_step`` timed; the times
    go to ``out`` (JSON) when training ends."""
    from fairseq.trainer import Trainer
    from fairseq_cli import train

    import neuroprune_fairseq.plugin  # noqa: F401  (this package is imported already, so --user-dir would skip it)

    times = []
    step = Trainer.train_step

    def timed(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return step(self, *args, **kwargs)
        finally:
            times.append(time.perf_counter() - t0)

    Trainer.train_step = timed
    sys.argv = ["fairseq-train", *fairseq_args]
    train.cli_main()
    Path(out).write_text(json.dumps(times))


def run_backend(backend, data, model_args, updates, warmup, work: Path, threads: str):
    """Seconds per update of rank 0 after the warm-up, for one 2-worker run."""
    port = _free_port()
    args = [str(data), "--user-dir", runner.USER_DIR, *steps.COMMON_TRAIN, *model_args,
            "--criterion", "neuroprune_ce", "--np-alpha", "0.05", "--np-beta", "0.1",
            "--max-update", str(warmup + updates), "--no-save", "--disable-validation", "--cpu",
            "--log-interval", str(warmup + updates), "--distributed-world-size", "2", "--distributed-backend", "gloo",
            "--ddp-backend", backend, "--distributed-no-spawn", "--distributed-init-method", f"tcp://127.0.0.1:{port}"]
    env = dict(os.environ, OMP_NUM_THREADS=threads, PYTHONPATH=str(runner.REPO))
    outs = [work / f"{backend}_{port}_rank{r}.json" for r in (0, 1)]
    logs = [work / f"{backend}_{port}_rank{r}.log" for r in (0, 1)]
    procs = []
    for r in (0, 1):
        with open(logs[r], "w") as fh:
            procs.append(subprocess.Popen([sys.executable, "-m", "neuroprune_fairseq.recipes.bench_ddp", "--worker",
                                           str(outs[r]), "--", *args, "--distributed-rank", str(r)],
                                          stdout=fh, stderr=subprocess.STDOUT, env=env))
    codes = [p.wait() for p in procs]
    if codes != [0, 0]:
        tail = "".join(open(logs[codes.index(next(c for c in codes if c))]).readlines()[-30:])
        raise RuntimeError(f"{backend}: workers exited with {codes}, see {logs}:\n{tail}")
    times = json.loads(outs[0].read_text())
    if len(times) < warmup + updates:
        raise RuntimeError(f"{backend}: only {len(times)} updates timed (an epoch shorter than the run?)")
    return times[warmup:]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="fairseq data-bin folder")
    p.add_argument("--updates", type=int, default=20, help="timed updates per run")
    p.add_argument("--warmup", type=int, default=3, help="updates per run before timing starts")
    p.add_argument("--reps", type=int, default=1, help="rounds of c10d, legacy, legacy, c10d")
    p.add_argument("--max-tokens", type=int, default=2048, help="per worker and update")
    p.add_argument("--model-args", default=None, help="fairseq model/optimizer arguments (default: the Multi30k CPU model)")
    p.add_argument("--threads", default=None, help="OMP_NUM_THREADS per worker (default: cores / 2)")
    p.add_argument("--work-dir", default=None)
    p.add_argument("--out", help="write the numbers as JSON here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a, rest = p.parse_known_args(argv)
    if a.worker:
        return worker(a.worker, [x for x in rest if x != "--"])
    if not a.data:
        p.error("--data is required")
    model_args = shlex.split(a.model_args) if a.model_args else list(presets.MULTI30K_MODEL)
    model_args += ["--max-tokens", str(a.max_tokens)]
    threads = a.threads or str(max(1, (os.cpu_count() or 2) // 2))
    work = Path(a.work_dir or tempfile.mkdtemp(prefix="neuroprune_bench_ddp_"))
    work.mkdir(parents=True, exist_ok=True)
    times = {b: [] for b in BACKENDS}
    for _ in range(a.reps):
        for backend in (*BACKENDS, *BACKENDS[::-1]):  # ABBA: a drift in load hits both alike
            t0 = time.time()
            ts = run_backend(backend, a.data, model_args, a.updates, a.warmup, work, threads)
            times[backend] += ts
            runner.log(f"{backend}: {len(ts)} updates, median {statistics.median(ts):.3f}s "
                       f"(run {time.time() - t0:.0f}s)")
    med = {b: statistics.median(ts) for b, ts in times.items()}
    ratio = med["c10d"] / med["legacy_ddp"]
    res = {"device": f"cpu {os.cpu_count()} cores, 2 gloo workers, OMP_NUM_THREADS={threads} each",
           "data": str(a.data), "max_tokens_per_worker": a.max_tokens, "model_args": model_args,
           "updates_timed_per_backend": {b: len(ts) for b, ts in times.items()},
           "median_s_per_update": med, "mean_s_per_update": {b: statistics.fmean(ts) for b, ts in times.items()},
           "ratio_c10d_over_legacy_ddp": ratio}
    print(f"time per update, 2 workers (gloo), {res['device']}, max-tokens {a.max_tokens} per worker:")
    for b in BACKENDS:
        print(f"    {b:<11} {med[b]:.3f}s median over {len(times[b])} updates (mean {res['mean_s_per_update'][b]:.3f}s)")
    print(f"    ratio c10d / legacy_ddp: {ratio:.3f} (median)")
    if a.out:
        datafiles.write_json(a.out, res)
    return res


if __name__ == "__main__":
    main()
