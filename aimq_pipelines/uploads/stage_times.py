"""When each part of an upload went through each stage of its scoring, and the run's critical path.

A scoring run is a pipeline: parts are cut from the file (``split``, xlsx) or read (``read``, CSV),
parsed (``parse``, xlsx: in worker processes), scored (``score``: ``validate``, ``drift`` (counting
the cells the drift report needs) and ``predict`` within it) and written (``write``), and the stages
of different parts overlap. Stage totals say what the run spent; the critical path says what its
length is made of. It is followed back from the last write: each span waited for the latest-ending
of its predecessors (the same part's previous stage, or the previous part in the same stage: parts
are written in order, and a stage with workers is busy with an earlier part). The time between a
predecessor's end and the span's start is ``wait`` (a free core, the GIL, a hand-over between
threads or processes).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

# In pipeline order; a part passes through split or read, then parse (xlsx), score, write.
ORDER = ("split", "read", "parse", "score", "write")
INSIDE_SCORE = ("validate", "drift", "predict")  # measured within score, summed per part


class StageTimes:
    """Spans of (stage, part), in ``time.monotonic()`` (the same clock in the run's worker processes)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._spans: dict[str, dict[int, tuple[float, float]]] = defaultdict(dict)
        self._inside: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
        self._cpu: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()
        self.parsers_peak_mb = 0.0

    def parsers_memory(self, own_peak_mb: float) -> None:
        self.parsers_peak_mb = own_peak_mb

    def __call__(self, stage: str, part: int, started: float, ended: float, cpu: float) -> None:
        with self._lock:
            self._cpu[stage] += cpu
            if stage in INSIDE_SCORE:
                self._inside[stage][part] += ended - started
            else:
                self._spans[stage][part] = (started, ended)

    @contextmanager
    def timed(self, stage: str, part: int) -> Iterator[None]:
        started, cpu = time.monotonic(), time.thread_time()
        try:
            yield
        finally:
            self(stage, part, started, time.monotonic(), time.thread_time() - cpu)

    def summary(self, ended: float | None = None) -> dict[str, float]:
        """``stage_<s>_s``: the time each stage spent (over all parts; parallel parts add up), and
        ``cpu_<s>_s`` the CPU time it used (less than its time when it waited for a core);
        ``critical_<s>_s``: its share of the critical path, ``critical_wait_s`` the waits on it,
        ``critical_start_s`` the time before the first part's first stage and ``critical_finish_s``
        the time after the last write; these add up to the run's length."""
        ended = time.monotonic() if ended is None else ended
        out: dict[str, float] = {"parts": float(len(self._spans.get("score", {})))}
        for stage in (*ORDER, *INSIDE_SCORE):
            if stage in INSIDE_SCORE:
                total = sum(self._inside[stage].values())
            else:
                total = sum(e - s for s, e in self._spans.get(stage, {}).values())
            if total:
                out[f"stage_{stage}_s"] = round(total, 3)
                out[f"cpu_{stage}_s"] = round(self._cpu[stage], 3)
        critical: dict[str, float] = defaultdict(float)
        path = self._critical_path()
        for stage, part, wait in path:
            s, e = self._spans[stage][part]
            if stage == "score":
                inside = 0.0
                for name in INSIDE_SCORE:
                    share = min(self._inside[name].get(part, 0.0), e - s - inside)
                    critical[name] += share
                    inside += share
                critical["score_other"] += e - s - inside
            else:
                critical[stage] += e - s
            critical["wait"] += wait
        if path:
            first = self._spans[path[-1][0]][path[-1][1]][0]
            last = self._spans[path[0][0]][path[0][1]][1]
            critical["start"] = first - self.started
            critical["finish"] = ended - last
        out.update({f"critical_{k}_s": round(v, 3) for k, v in critical.items()})
        return out

    def _critical_path(self) -> list[tuple[str, int, float]]:
        """(stage, part, wait before it), from the last write back to the first span."""
        writes = self._spans.get("write", {})
        if not writes:
            return []
        stage, part = "write", max(writes)
        path = []
        while True:
            start = self._spans[stage][part][0]
            before = self._predecessors(stage, part)
            if not before:
                path.append((stage, part, 0.0))
                return path
            # The predecessor that ended last is the one this span waited for.
            gate = max(before, key=lambda sp: self._spans[sp[0]][sp[1]][1])
            path.append((stage, part, max(0.0, start - self._spans[gate[0]][gate[1]][1])))
            stage, part = gate

    def _predecessors(self, stage: str, part: int) -> list[tuple[str, int]]:
        start = self._spans[stage][part][0]
        found = []
        earlier = [s for s in ORDER[: ORDER.index(stage)] if part in self._spans.get(s, {})]
        if earlier:
            found.append((earlier[-1], part))
        # The same stage's earlier parts that ended before this one started: what kept it busy.
        same = [p for p, (_, e) in self._spans[stage].items() if p < part and e <= start + 1e-6]
        if same:
            found.append((stage, max(same, key=lambda p: self._spans[stage][p][1])))
        return found
