"""Validated records -> prices, on the backend a route asks for.

In-process ONNX Runtime runs on the event loop: one row takes 15-100 us (between requests other
work pushes the model's trees out of the CPU cache), about what a hop to the thread pool costs.
What can block on I/O (a model not loaded yet, Redis for RedisAI, the per-request pickle load) runs
in the thread pool. sklearn runs on the SklearnBatcher's one thread, which prices the rows queued by
concurrent requests in one call per model: a HistGradientBoosting call costs about the same for 1
row as for 64 (aimq_serving/api/sklearn_batcher.py).

Batching the rows of concurrent ONNX requests into one call was tried twice and measured slower
(docs/api.md, benchmark section): a one-row ONNX Runtime call costs less than the suspension each
batched request pays, the opposite of sklearn's fixed ~2.5 ms per call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from starlette.concurrency import run_in_threadpool

from aimq_serving import signing
from aimq_serving.api.errors import RejectedRecords
from aimq_serving.api.metrics import ApiMetrics
from aimq_serving.api.sklearn_batcher import SklearnBatcher
from aimq_serving.conformal import Calibration
from aimq_serving.features import EncodingError, FeatureSpec, RowError
from aimq_serving.loaded_models import MODEL_ID_DIGITS, LoadedModel, ModelCache
from aimq_serving.model_store import ModelStore
from aimq_serving.reference import Reference
from aimq_serving.settings import AimqSettings

Route = Literal["onnx", "pickle"]
# price, price_low, price_high (None: the version has no calibration), group, version, model id,
# out_of_range (the fields outside the training rows' range; None: the version has no reference)
Priced = tuple[float, float | None, float | None, str, int, str, list[str] | None]


@dataclass(frozen=True)
class _Runner:
    """How one group's records are priced in one request: one version's spec and its execution."""

    spec: FeatureSpec
    version: int
    model_id: str
    calibration: Calibration | None
    reference: Reference | None
    run: Callable[[np.ndarray], np.ndarray] | None = None
    in_thread: bool = False
    # One encoded row -> its price, on the event loop; set where that is cheaper than ``run``.
    one: Callable[[list[float]], float] | None = None
    # A scikit-learn estimator, run by the batcher instead of ``run``.
    estimator: Any = None


class OnlinePredictor:
    def __init__(
        self,
        settings: AimqSettings,
        store: ModelStore,
        models: ModelCache,
        metrics: ApiMetrics,
        sklearn: SklearnBatcher,
    ):
        self.store = store
        self.models = models
        self.metrics = metrics
        self.sklearn = sklearn
        self.onnx_backend = settings.predict_backend
        self.pickle_per_request = settings.pickle_mode == "per_request"

    def backend(self, route: Route) -> str:
        if route == "onnx":
            return self.onnx_backend
        return "pickle_per_request" if self.pickle_per_request else "pickle"

    async def predict(self, records: Sequence[Any], route: Route, batch: bool, coverage: float) -> list[Priced]:
        """``Priced`` per record, in input order, with the range at ``coverage``. All records of a
        group in one request are priced by the same model version."""
        backend = self.backend(route)
        if len(records) == 1:
            return [await self._predict_one(records[0], backend, batch, coverage)]
        rows_by_group: dict[str, list[int]] = {}
        for i, record in enumerate(records):
            rows_by_group.setdefault(record.model_group, []).append(i)
        plans = []
        errors: list[RowError] = []
        for group, rows in rows_by_group.items():
            runner = await self._runner(group, backend)
            matrix = np.empty((len(rows), len(runner.spec.columns)), dtype=np.float32)
            for j, i in enumerate(rows):
                try:
                    matrix[j] = runner.spec.encode_record(records[i].__dict__)
                except EncodingError as exc:
                    errors.extend(RowError(i, e.field, e.message, e.allowed) for e in exc.errors)
            plans.append((group, rows, runner, matrix))
        if errors:
            errors.sort(key=lambda e: e.row)
            raise RejectedRecords(EncodingError(errors), batch)
        out: list[Priced] = [None] * len(records)  # type: ignore[list-item]
        for group, rows, runner, matrix in plans:
            prices = (await self._execute(runner, matrix)).tolist()
            ref = runner.reference
            f = None if runner.calibration is None else runner.calibration.factor(coverage)
            for j, i in enumerate(rows):
                p = prices[j]
                flagged = None if ref is None else ref.outside(records[i].__dict__)
                low, high = (None, None) if f is None else (p / f, p * f)
                out[i] = (p, low, high, group, runner.version, runner.model_id, flagged)
            self.metrics.count_predictions(group, runner.version, backend, len(rows))
        return out

    async def _predict_one(self, record: Any, backend: str, batch: bool, coverage: float) -> Priced:
        """The common case, one record, without the bookkeeping of grouping a batch."""
        group = record.model_group
        runner = await self._runner(group, backend)
        try:
            row = runner.spec.encode_record(record.__dict__)
        except EncodingError as exc:
            raise RejectedRecords(exc, batch) from None
        if runner.one is not None:
            price = runner.one(row)
        else:
            price = float((await self._execute(runner, np.array([row], dtype=np.float32)))[0])
        self.metrics.count_predictions(group, runner.version, backend, 1)
        flagged = None if runner.reference is None else runner.reference.outside(record.__dict__)
        if runner.calibration is None:
            return price, None, None, group, runner.version, runner.model_id, flagged
        f = runner.calibration.factor(coverage)
        return price, price / f, price * f, group, runner.version, runner.model_id, flagged

    async def _execute(self, runner: _Runner, matrix: np.ndarray) -> np.ndarray:
        if runner.estimator is not None:
            return await self.sklearn.predict(runner.estimator, matrix)
        assert runner.run is not None
        if runner.in_thread:
            return await run_in_threadpool(runner.run, matrix)
        return runner.run(matrix)

    async def _runner(self, group: str, backend: str) -> _Runner:
        if backend == "pickle_per_request":
            return await run_in_threadpool(self._load_per_request, group)
        model = self.models.peek(group) or await run_in_threadpool(self.models.get, group)
        known = (model.spec, model.version, model.model_id, model.calibration, model.reference)
        if backend == "onnxruntime":
            return _Runner(*known, model.predict_onnx, in_thread=False, one=model.predict_one)
        if backend == "redisai":
            return _Runner(*known, self._redisai(model), in_thread=True)
        estimator = model.sklearn_if_loaded() or await run_in_threadpool(model.sklearn_model)
        return _Runner(*known, estimator=estimator)

    def _redisai(self, model: LoadedModel) -> Callable[[np.ndarray], np.ndarray]:
        return lambda matrix: model.predict_redisai(self.store, matrix)

    def _load_per_request(self, group: str) -> _Runner:
        # The original demo's baseline: fetch, verify and unpickle the model for every request.
        stored = self.store.get(group)
        model_id = signing.sha256_hex(stored.onnx)[:MODEL_ID_DIGITS]
        known = (stored.spec, stored.info.version, model_id, stored.calibration, stored.reference)
        return _Runner(*known, estimator=stored.load_sklearn())
