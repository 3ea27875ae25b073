"""Progress a person can follow: run fairseq-train subprocesses, follow their log files, print
one line per epoch with the loss and the time left, and fail with the log to read.

* :func:`parse_line` reads fairseq's end-of-epoch lines (``--log-format simple``)::

      ... | INFO | valid | epoch 003 | valid on 'valid' subset | loss 4.05 | ... | heads 54 | ...
      ... | INFO | train | epoch 003 | loss 4.21 | nll_loss ... | num_updates 390 | ...

  fairseq logs the (last) ``valid`` line of an epoch before its ``train`` line; the epoch line is
  printed when the ``train`` line arrives, with that epoch's last valid loss (and, for NeuroPrune,
  the heads and sparsity after that epoch's pruning). During a run's first epoch, each
  ``train_inner`` line (every ``--log-interval`` updates) also prints an early estimate.
* :class:`Eta` holds the plan (the epochs of every training stage, and a rough cost of the
  finalize/evaluate steps) and the measured seconds per epoch; a stage not started yet is
  guessed from the dense stage's pace (x ``ft_factor``) until its first epoch is measured.
* :func:`run_jobs` runs one or several fairseq-train jobs side by side (``subprocess.Popen``,
  output appended to the job's log) and polls their logs once a second. A failed job stops the
  others and raises :class:`StageFailed` naming the stage, the log file and its last lines.
  A job whose ``save_dir/.done`` exists is not rerun (the same marker as ``steps.train``).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from neuroprune_fairseq.recipes.runner import log

_EPOCH = re.compile(r"\| (train|valid) \| epoch (\d+) \|(.*)$")
_INNER = re.compile(r"\| train_inner \| epoch (\d+):\s+(\d+) / (\d+) (.*)$")


def parse_line(line: str) -> Optional[dict]:
    """``{"kind": "train"|"valid", "epoch": n, "loss": ..., <the other fields>}``, or for a
    ``train_inner`` line ``{"kind": "inner", "epoch": n, "step": i, "steps": N, "loss": ...}``; else None."""
    m = _INNER.search(line.rstrip("\n"))
    if m:
        out = {"kind": "inner", "epoch": int(m.group(1)), "step": int(m.group(2)), "steps": int(m.group(3))}
        for kv in m.group(4).split(", "):
            k, _, v = kv.partition("=")
            if k.strip() == "loss":
                out["loss"] = float(v)
        return out if "loss" in out else None
    m = _EPOCH.search(line.rstrip("\n"))
    if not m:
        return None
    out = {"kind": m.group(1), "epoch": int(m.group(2))}
    for part in m.group(3).split("|"):
        kv = part.strip().split(" ")
        if len(kv) == 2:
            try:
                out[kv[0]] = float(kv[1])
            except ValueError:
                out[kv[0]] = kv[1]
    return out if "loss" in out else None


def fmt_s(s: Optional[float]) -> str:
    """``42s``, ``9m12s``, ``1h03m``; ``?`` when unknown."""
    if s is None:
        return "?"
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def ft_pace_factor(threads: int, ft_threads: int) -> float:
    """Guessed seconds per fine-tuning epoch / seconds per dense epoch, until a fine-tuning epoch is
    measured. Measured on the 2-core CPU (fresh main job, 2026-11-23): each of the two runs side by
    side with 1 thread took 1.6x the 2-thread dense epoch (298 and 292 s vs 186 s). Thread scaling is
    sublinear, so (threads / ft_threads) ** 0.65 (2 -> 1.57), x 1.05 for the penalties and gates."""
    return 1.05 * (max(threads, 1) / max(ft_threads, 1)) ** 0.65


@dataclass
class Eta:
    """stages: ordered ``[(stage name, {job name: planned epochs})]``; the jobs of one stage run side
    by side when ``parallel`` (the stage lasts as long as its slowest job), else one after the
    other. ``post_s_per_model`` x ``models_left``: finalize + evaluate (before the first model was
    evaluated: ``post_factor`` x a dense epoch each; 0.15 measured on Multi30k, 31 s vs 186 s)."""
    stages: List[tuple]
    parallel: bool = False
    ft_factor: float = field(default_factory=lambda: ft_pace_factor(1, 1))  # fine-tuning on the dense stage's threads
    post_factor: float = 0.15
    post_s_per_model: Optional[float] = None
    models_left: int = 0
    pace: Dict[str, float] = field(default_factory=dict)  # job -> measured seconds per epoch
    done: Dict[str, int] = field(default_factory=dict)  # job -> epochs finished

    def _pace(self, job: str) -> Optional[float]:
        if job in self.pace:
            return self.pace[job]
        ref = next(iter(self.stages[0][1]))
        return self.pace[ref] * self.ft_factor if ref in self.pace else None

    def stage_left(self, stage: str) -> Optional[float]:
        lefts = []
        for job, n in dict(self.stages)[stage].items():
            p = self._pace(job)
            if p is None:
                return None
            lefts.append(max(0, n - self.done.get(job, 0)) * p)
        if not lefts:
            return 0.0
        return max(lefts) if self.parallel else sum(lefts)

    def total_left(self, stage: str) -> Optional[float]:
        names = [s for s, _ in self.stages]
        total = 0.0
        for s in names[names.index(stage):]:
            left = self.stage_left(s)
            if left is None:
                return None
            total += left
        if self.models_left:
            post = self.post_s_per_model
            if post is None:
                p = self._pace(next(iter(self.stages[0][1])))
                post = None if p is None else self.post_factor * p
            if post is None:
                return None
            total += post * self.models_left
        return total


def tail_of(path, n: int = 15) -> str:
    try:
        return "".join(Path(path).read_text(errors="replace").splitlines(keepends=True)[-n:])
    except OSError:
        return "(no log written)\n"


class StageFailed(RuntimeError):
    def __init__(self, stage: str, logfile, detail: str = ""):
        self.stage, self.logfile = stage, logfile
        super().__init__(f"the main job failed at stage '{stage}'{': ' + detail if detail else ''}; "
                         f"read the log {logfile}\n--- last lines of {logfile} ---\n{tail_of(logfile)}")


@dataclass
class Job:
    name: str
    cmd: Sequence
    logfile: Path
    save_dir: Path
    epochs: int
    env: Dict[str, str] = field(default_factory=dict)


def run_jobs(stage: str, jobs: Sequence[Job], eta: Eta, parallel: bool, poll_s: float = 1.0) -> Dict[str, float]:
    """Run ``jobs`` (side by side when ``parallel``), printing one line per epoch; returns
    {job name: training wall seconds}. Raises :class:`StageFailed` on a failed job."""
    walls: Dict[str, float] = {}
    todo = []
    for j in jobs:
        done = Path(j.save_dir) / ".done"
        if done.exists():
            walls[j.name] = float(json.loads(done.read_text())["train_wall_s"])
            eta.done[j.name] = j.epochs
            eta.pace.setdefault(j.name, walls[j.name] / max(j.epochs, 1))  # a resumed job's pace is known
            log(f"{j.name}: already trained ({fmt_s(walls[j.name])}; {done})")
        else:
            todo.append(j)
    for group in ([todo] if parallel else [[j] for j in todo]):
        if group:
            walls.update(_run_group(stage, group, eta, poll_s))
    return walls


def _run_group(stage: str, group: Sequence[Job], eta: Eta, poll_s: float) -> Dict[str, float]:
    procs, state, walls = {}, {}, {}
    try:
        for j in group:
            Path(j.logfile).parent.mkdir(parents=True, exist_ok=True)
            pos = Path(j.logfile).stat().st_size if Path(j.logfile).exists() else 0
            fh = open(j.logfile, "a")
            fh.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] $ {subprocess.list2cmdline([str(c) for c in j.cmd])}\n")
            fh.flush()
            env = dict(os.environ, **j.env)
            procs[j.name] = (subprocess.Popen([str(c) for c in j.cmd], stdout=fh, stderr=subprocess.STDOUT, env=env), fh)
            state[j.name] = {"pos": pos, "buf": "", "t0": time.time(), "first": None, "valid": None}
            log(f"{j.name}: training started ({j.epochs} epochs, OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', '?')})")
        while procs:
            time.sleep(poll_s)
            for j in group:
                if j.name not in procs:
                    continue
                p, fh = procs[j.name]
                rc = p.poll()
                _follow(j, state[j.name], eta)
                if rc is None:
                    continue
                fh.close()
                del procs[j.name]
                if rc != 0:
                    raise StageFailed(stage, j.logfile, f"{j.name}: fairseq-train exited with status {rc}")
                walls[j.name] = time.time() - state[j.name]["t0"]
                Path(j.save_dir).mkdir(parents=True, exist_ok=True)
                (Path(j.save_dir) / ".done").write_text(json.dumps({"train_wall_s": walls[j.name]}))
                eta.done[j.name] = j.epochs
                log(f"{j.name}: training finished in {fmt_s(walls[j.name])}")
        return walls
    finally:
        for p, fh in procs.values():  # only on failure / interrupt: stop the jobs still running
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
            fh.close()


def _follow(j: Job, st: dict, eta: Eta) -> None:
    with open(j.logfile, errors="replace") as fh:
        fh.seek(st["pos"])
        chunk = fh.read()
        st["pos"] = fh.tell()
    lines = (st["buf"] + chunk).split("\n")
    st["buf"] = lines.pop()  # an unfinished last line waits for the next poll
    for line in lines:
        rec = parse_line(line)
        if rec is None:
            continue
        if rec["kind"] == "valid":
            st["valid"] = rec
            continue
        now = time.time()
        stage = next(s for s, jobs in eta.stages if j.name in jobs)
        if rec["kind"] == "inner":  # only in a run's first epoch: an early estimate of the pace
            if st["first"] is None and rec["step"] < rec["steps"]:
                eta.pace[j.name] = (now - st["t0"]) / (rec["step"] / rec["steps"])
                log(f"{j.name} epoch {rec['epoch']}/{j.epochs}: update {rec['step']}/{rec['steps']}  loss {rec['loss']:.3f}"
                    f"  elapsed {fmt_s(now - st['t0'])}  stage ETA ~{fmt_s(eta.stage_left(stage))}"
                    f"  total ETA ~{fmt_s(eta.total_left(stage))}")
            continue
        if st["first"] is None:
            st["first"] = rec["epoch"]  # a resumed run starts past epoch 1
        eta.pace[j.name] = (now - st["t0"]) / (rec["epoch"] - st["first"] + 1)
        eta.done[j.name] = rec["epoch"]
        v = st["valid"] if st["valid"] and st["valid"]["epoch"] == rec["epoch"] else None
        extra = f"  valid {v['loss']:.3f}" if v else ""
        if v and "heads" in v:
            extra += f"  heads {v['heads']:g}" + (f"  sparsity {v['sparsity']:g}%" if "sparsity" in v else "")
        log(f"{j.name} epoch {rec['epoch']}/{j.epochs}  loss {rec['loss']:.3f}{extra}  elapsed {fmt_s(now - st['t0'])}"
            f"  stage ETA {fmt_s(eta.stage_left(stage))}  total ETA {fmt_s(eta.total_left(stage))}")
