"""The sweep engine's shared plumbing, used by every sweep (``sweep``, ``sweep_dsp``,
``sweep_heads``) and the main job: a point's identity as a short hash, the keys of the points
a results file already holds (resume), and one results row appended under a file lock with its
log line. A sweep says only what its points are and how one is trained and scored."""
from __future__ import annotations

import fcntl
import hashlib
import json
from pathlib import Path
from typing import Callable, Hashable, Iterable, Optional, Set

from .runner import log


def settings_hash(settings: dict, length: int = 8) -> str:
    """The first ``length`` hex digits of the SHA-1 of ``settings`` as sorted JSON: the name of a
    run folder or a point key (the same settings always give the same name)."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:length]


def read_rows(results: Path) -> Iterable[dict]:
    """The rows of a JSON-lines results file (none if it does not exist)."""
    if not results.exists():
        return []
    return [json.loads(line) for line in results.read_text().splitlines() if line.strip()]


def done_keys(results: Path, key: Callable[[dict], Hashable],
              where: Optional[Callable[[dict], bool]] = None) -> Set[Hashable]:
    """``key(row)`` of every row of ``results`` (those ``where`` accepts: a file may be shared by
    several sweeps): the points a resumed sweep skips."""
    return {key(r) for r in read_rows(results) if where is None or where(r)}


def append_row(results: Path, row: dict) -> None:
    """Append one JSON line to a results file under an exclusive lock (parallel jobs may share it)."""
    with open(results, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(json.dumps(row) + "\n")
        fh.flush()
        fcntl.flock(fh, fcntl.LOCK_UN)


def record(results: Path, row: dict, message: str) -> None:
    """A finished point: its row appended to ``results``, then ``message`` logged."""
    append_row(results, row)
    log(message)
