"""scikit-learn predictions of concurrent requests, on one thread, batched per model.

Why (issue 18; py-spy on a worker under wrk, docs/api.md): one HistGradientBoosting ``predict``
walks its 300 trees in a Python loop, one Cython call and one OpenMP region per tree, so a call
costs about the same for 1 row as for 64 (measured in process on the loaded machine: 5.5 ms both,
10 ms for 256). With every request making its own call in the thread pool, 64 connections kept
~40 threads taking turns on the GIL, each paying that fixed cost for one row (9 ms of server CPU
per request in the issue's measurement).

Here one thread (per worker process) runs every sklearn call. Requests queue their encoded rows;
when the thread is free it takes everything queued, makes one ``predict`` call per model (what
arrived during the previous call), and hands each request its own rows back. Nothing waits for a
batch to fill: an idle thread starts on the first request at once, so a lone request costs what it
did. The answers are exactly those of one-record calls: HistGradientBoosting sums each row's leaf
values in float64 independently of the other rows (tests/serving/api/test_sklearn_batcher.py asserts
equality, not closeness).

The queue is bounded in rows (``AIMQ_PICKLE_QUEUE_ROWS``): past it a request is refused at once
with 503 and Retry-After instead of waiting behind work that would take longer than a client waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aimq_serving.loaded_models import one_openmp_thread, openmp_controller, sklearn_prices

log = logging.getLogger(__name__)


class Overloaded(Exception):
    """The queue of rows waiting for sklearn is full: the client should retry later (503)."""

    def __init__(self, queued_rows: int, limit: int):
        self.queued_rows = queued_rows
        self.limit = limit
        super().__init__(
            f"the scikit-learn queue is full ({queued_rows} rows waiting, limit {limit}: AIMQ_PICKLE_QUEUE_ROWS); "
            "retry shortly, or use /predict/onnx"
        )


@dataclass
class _Job:
    estimator: Any
    rows: np.ndarray
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[np.ndarray] = field(repr=False)


class SklearnBatcher:
    """One thread that runs scikit-learn for every queued request, one call per model, on one OpenMP thread."""

    def __init__(self, max_queued_rows: int):
        self.max_queued_rows = max_queued_rows
        self._jobs: list[_Job] = []
        self._queued_rows = 0
        self._cond = threading.Condition()
        self._closed = False
        openmp_controller()  # imports sklearn here, before any request can be importing it too
        self._thread = threading.Thread(target=self._run, name="sklearn-predict", daemon=True)
        self._thread.start()

    async def predict(self, estimator: Any, rows: np.ndarray) -> np.ndarray:
        """``estimator``'s prices of ``rows``, computed on the batcher's thread with whatever other
        requests queued rows for the same estimator meanwhile."""
        loop = asyncio.get_running_loop()
        job = _Job(estimator, rows, loop, loop.create_future())
        with self._cond:
            if self._closed:
                raise RuntimeError("the sklearn batcher is closed")
            # An empty queue always takes the request, so a batch of any allowed size gets served.
            if self._queued_rows and self._queued_rows + len(rows) > self.max_queued_rows:
                raise Overloaded(self._queued_rows, self.max_queued_rows)
            self._jobs.append(job)
            self._queued_rows += len(rows)
            self._cond.notify()
        return await job.future

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            limit = one_openmp_thread()  # OpenMP's limit is per thread: set once for every call made here
        except Exception:  # serving slower beats a dead thread that every request would wait on
            log.exception("could not limit OpenMP to one thread; scikit-learn runs with its default")
            limit = contextlib.nullcontext()
        with limit:
            self._serve()

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                jobs, self._jobs = self._jobs, []
                self._queued_rows = 0
                closed = self._closed
            by_model: dict[int, list[_Job]] = {}
            for job in jobs:
                by_model.setdefault(id(job.estimator), []).append(job)
            for same_model in by_model.values():
                self._run_batch(same_model)
            if closed:
                return

    def _run_batch(self, jobs: list[_Job]) -> None:
        try:
            matrix = jobs[0].rows if len(jobs) == 1 else np.concatenate([j.rows for j in jobs])
            prices = sklearn_prices(jobs[0].estimator, matrix)
        except Exception as exc:  # every waiting request gets the error; the thread goes on
            if len(jobs) > 1:
                # One request's rows must not fail the others: price them one request at a time.
                for job in jobs:
                    self._run_batch([job])
                return
            log.exception("scikit-learn predict failed")
            _deliver(jobs, exc)
            return
        start = 0
        results = []
        for job in jobs:
            results.append(prices[start : start + len(job.rows)])
            start += len(job.rows)
        _deliver(jobs, results)


def _deliver(jobs: list[_Job], outcome: list[np.ndarray] | BaseException) -> None:
    """Resolve the futures on their event loop, one wake-up per loop for the whole batch."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[np.ndarray], Any]]] = {}
    for i, job in enumerate(jobs):
        value = outcome if isinstance(outcome, BaseException) else outcome[i]
        by_loop.setdefault(job.loop, []).append((job.future, value))
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, items)
        except RuntimeError:  # the loop closed meanwhile (shutdown): nobody is waiting any more
            pass


def _resolve(items: list[tuple[asyncio.Future[np.ndarray], Any]]) -> None:
    for future, value in items:
        if future.done():  # the request was cancelled (client gone)
            continue
        if isinstance(value, BaseException):
            future.set_exception(value)
        else:
            future.set_result(value)
