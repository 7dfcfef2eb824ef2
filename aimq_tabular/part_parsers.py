"""Parse an xlsx's parts (``xlsx_reader``) in worker processes, so that parsing uses another core.

fastexcel 0.21 holds the GIL while calamine parses: measured here, two threads each reading the
same 100,000-row sheet take 1.9-2.1x the time of one read, two processes 1.4x on the shared machine.
A parse in a thread of the scoring run therefore stopped every other thread of it (validation,
the writer) for ~5.6 s per million rows, and the run used about one core. Workers are forked from
the run when its reader starts: a fork costs milliseconds (a fresh interpreter would import
pyarrow and fastexcel again, ~1 s) and inherits whatever the run configured. Each worker keeps one
``PartLoader`` for the parts it is given, and sends each part back as an Arrow IPC stream, which
keeps every column's type exactly (``xlsx_cells.MIXED`` included).

A worker that dies (killed for memory, say) fails the read with ``BrokenProcessPool``: a crash
of the run, retried as one, never taken for bad input. A worker is killed with its parent.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from aimq_tabular import xlsx_cells

_PR_SET_PDEATHSIG = 1
_loader: xlsx_cells.PartLoader | None = None  # the worker's, made by _start
_rss_at_start_kb = 0  # the worker's resident memory when it started: pages it shares with the run


class ParseFault(Exception):
    """What a worker raised that cannot cross a process boundary as it is (pyo3's PanicException,
    a BaseException whose class does not pickle): its class name (``kind``) and message."""

    def __init__(self, kind: str, message: str):
        super().__init__(kind, message)
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class ParsedPart:
    batch: pa.RecordBatch
    started: float  # time.monotonic() in the worker (the same clock in every process on one machine)
    ended: float
    cpu: float  # the worker's CPU seconds for the part


class PartParsers:
    """``workers`` forked processes parsing the parts of one sheet; results come back in the order asked."""

    def __init__(self, sheet: str, member: str, workers: int):
        self._pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_start,
            initargs=(sheet, member, os.getpid()),
        )
        # With fork, the first submit starts every worker (and none later): here, in the caller's
        # thread, before the reader starts threads of its own. The workers' parent-death signal
        # comes when this thread ends, which is after the reader closed them.
        self._pool.submit(time.monotonic)
        self._own_peak_kb: dict[int, int] = {}

    @property
    def own_peak_mb(self) -> float:
        """The workers' peak memory of their own, added up: each one's peak resident set less what it
        had when forked (the run's pages, shared until either side writes them)."""
        return sum(self._own_peak_kb.values()) / 1024

    def submit(self, part: Path) -> Future[_Parsed]:
        return self._pool.submit(_parse, str(part))

    def result(self, future: Future[_Parsed]) -> ParsedPart:
        data, started, ended, cpu, pid, own_peak_kb = future.result()
        self._own_peak_kb[pid] = max(self._own_peak_kb.get(pid, 0), own_peak_kb)
        with pa.ipc.open_stream(pa.py_buffer(data)) as stream:
            batch = stream.read_next_batch()
        return ParsedPart(batch, started, ended, cpu)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


_Parsed = tuple[bytes, float, float, float, int, int]


class InlineParsers:
    """``PartParsers``' interface, parsing in the thread that submits (the reader's split thread):
    for a sheet so small that starting and stopping the worker processes costs more than parsing it
    (``INLINE_SHEET_BYTES``). Nothing to fork, nothing to shut down, no memory of its own."""

    own_peak_mb = 0.0

    def __init__(self, sheet: str, member: str):
        self._loader = xlsx_cells.PartLoader(sheet, member)

    def submit(self, part: Path) -> Future[ParsedPart]:
        from aimq_tabular.xlsx_reader import load_part  # at run time: xlsx_reader imports this module

        future: Future[ParsedPart] = Future()
        started, cpu = time.monotonic(), time.thread_time()
        try:
            batch = load_part(self._loader, part)
        except BaseException as exc:  # noqa: BLE001 - raised by result(), in the consumer's thread
            future.set_exception(exc)
        else:
            future.set_result(ParsedPart(batch, started, time.monotonic(), time.thread_time() - cpu))
        return future

    def result(self, future: Future[ParsedPart]) -> ParsedPart:
        return future.result()

    def close(self) -> None:
        pass


def _start(sheet: str, member: str, parent: int) -> None:
    global _loader, _rss_at_start_kb
    try:  # the peak (VmHWM) from here on, not the run's before the fork
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass
    _rss_at_start_kb = _status_kb("VmRSS")
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the run died before the signal was set
            os._exit(1)
    _loader = xlsx_cells.PartLoader(sheet, member)


def _parse(part: str) -> _Parsed:
    from aimq_tabular.xlsx_reader import load_part  # at run time: xlsx_reader imports this module

    assert _loader is not None
    started, cpu = time.monotonic(), time.process_time()
    try:
        batch = load_part(_loader, Path(part))
    except BaseException as exc:  # noqa: BLE001 - pyo3's PanicException is made one that pickles
        if isinstance(exc, Exception) or type(exc).__name__ != "PanicException":
            raise
        raise ParseFault(type(exc).__name__, str(exc)) from None
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    data = sink.getvalue().to_pybytes()
    own_peak = max(_status_kb("VmHWM") - _rss_at_start_kb, 0)
    return data, started, time.monotonic(), time.process_time() - cpu, os.getpid(), own_peak


def _status_kb(field: str) -> int:
    """A memory figure of this process from /proc (Linux); 0 elsewhere."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
