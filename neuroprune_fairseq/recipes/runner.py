"""Where the recipes' subprocesses come from and how they run: the fairseq tools next to the
running python, one logged command at a time, its output to a log file, a failure raised with
the log's tail. Every recipe drives the stock command-line tools this way (``--user-dir
neuroprune_fairseq``), so what a recipe runs is exactly what a user types.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

PACKAGE = Path(__file__).resolve().parent.parent
REPO = PACKAGE.parent
USER_DIR = str(PACKAGE)
BIN = Path(sys.executable).parent
#: OMP_NUM_THREADS of every subprocess unless the caller's environment sets it
DEFAULT_THREADS = "2"


def tool(name: str) -> str:
    """``fairseq-train`` etc. next to the running python (the venv), else on PATH."""
    p = BIN / name
    return str(p) if p.exists() else name


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def quote(s: str) -> str:
    """``s`` as a shell word (for the logged command lines)."""
    return s if re.fullmatch(r"[\w@%+=:,./-]+", s) else "'" + s.replace("'", "'\\''") + "'"


def run(cmd: Sequence[str], logfile: Optional[Path] = None, env: Optional[dict] = None) -> float:
    """Run ``cmd`` (output to ``logfile`` if given); raise on failure; return wall seconds."""
    cmd = [str(c) for c in cmd]
    log("$ " + " ".join(quote(c) for c in cmd))
    full_env = dict(os.environ)
    full_env.setdefault("OMP_NUM_THREADS", DEFAULT_THREADS)
    if env:
        full_env.update(env)
    t0 = time.time()
    if logfile is None:
        subprocess.run(cmd, check=True, env=full_env)
    else:
        logfile.parent.mkdir(parents=True, exist_ok=True)
        with open(logfile, "a") as fh:
            r = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=full_env)
        if r.returncode != 0:
            tail = "".join(open(logfile).readlines()[-30:])
            raise RuntimeError(f"command failed ({r.returncode}), see {logfile}:\n{tail}")
    return time.time() - t0


def run_module(module: str, args: Sequence, logfile: Optional[Path] = None) -> float:
    """``python -m module args`` with this package importable (:func:`run`'s failure handling)."""
    return run([sys.executable, "-m", module, *args], logfile=logfile, env={"PYTHONPATH": str(REPO)})


def device_desc() -> str:
    """Where the subprocesses run, for the results rows (train times compare only on one device):
    the GPU's name, else the CPU cores and the OMP threads each job uses."""
    import torch

    if torch.cuda.is_available():
        return f"cuda {torch.cuda.get_device_name(0)}"
    return f"cpu {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', DEFAULT_THREADS)}"
