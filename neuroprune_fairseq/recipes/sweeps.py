"""The sweep engine, used by every sweep (``sweep``, ``sweep_dsp``, ``sweep_heads``; the main job
names its runs with :func:`settings_hash` too): a point's identity as a short hash, the keys of
the points a results file already holds (resume), and one results row appended under a file lock
with its log line. A sweep says only what its points are (its methods are a table of data and
functions) and how one point is trained and scored; :class:`Sweep` does the rest."""
from __future__ import annotations

import fcntl
import hashlib
import json
from pathlib import Path
from typing import Callable, Hashable, Iterable, List, Optional, Set

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


class Sweep:
    """The points of one sweep in a results file (which a file may share with other sweeps).

    ``key(row)``: a point's identity, computed alike from a finished row and from a planned
    point's row fields; ``where(row)``: the rows of this sweep (default: all)."""

    def __init__(self, results: Path, key: Callable[[dict], Hashable], where: Optional[Callable[[dict], bool]] = None):
        self.results, self.key = Path(results), key
        self.results.parent.mkdir(parents=True, exist_ok=True)
        self.have = done_keys(self.results, key, where)

    def done(self, row: dict) -> bool:
        """Whether the point with these row fields is in the results file already."""
        return self.key(row) in self.have

    def pending(self, points: List, row_of: Callable = lambda pt: pt, what: Callable[[List], str] = lambda left: "") -> List:
        """The points not in the results file yet (``row_of(point)``: its row fields), logged as
        ``N points, D already in FILE, P to run`` (+ ``what(pending)``)."""
        left = [pt for pt in points if not self.done(row_of(pt))]
        log(f"{len(points)} points, {len(points) - len(left)} already in {self.results}, {len(left)} to run{what(left)}")
        return left

    def record(self, row: dict, message: str) -> None:
        """A finished point: its row appended, ``message`` logged, the point marked done."""
        record(self.results, row, message)
        self.have.add(self.key(row))
