"""Loaded model versions: API requests and batch-scoring runs both price rows through these classes.

A LoadedModel holds a verified model version ready to execute; a ModelCache keeps the current
version of every group loaded and swaps in a newly promoted version in the background.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort
import redis
from threadpoolctl import ThreadpoolController

from aimq_serving import redisai, schema, signing
from aimq_serving.conformal import Calibration
from aimq_serving.drift_profile import DriftProfile
from aimq_serving.features import FeatureSpec
from aimq_serving.model_store import ModelStore, ModelStoreError, NoModel, StoredModel, UnknownGroup, VersionInfo
from aimq_serving.reference import Flags, Reference

log = logging.getLogger(__name__)

MODEL_ID_DIGITS = 12  # 48 bits: a collision between a group's few kept versions is out of reach


def onnx_session(onnx_bytes: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # One thread per session: on 2 shared cores the default thread pool only adds contention
    # (measured: never slower with one thread), and request concurrency comes from the server.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"])


_threadpools: ThreadpoolController | None = None


def openmp_controller() -> ThreadpoolController:
    """The process's threadpoolctl controller, made once. Its scan sees only libraries loaded by
    then: sklearn's OpenMP runtime comes with its tree code, which a process that has not unpickled a
    model yet (no model at start-up, the per-request pickle mode) has not imported. Missing it, the
    limit did nothing and a per-request pickle took 1 s instead of ~10 ms on the loaded machine
    (measured). Call it first on a thread that imports nothing concurrently (the app's start-up):
    importing sklearn from a new thread while a request unpickled a model deadlocked the import."""
    global _threadpools
    if _threadpools is None:
        from sklearn.ensemble import HistGradientBoostingRegressor  # noqa: F401

        _threadpools = ThreadpoolController()  # scans the loaded libraries once (~ms)
    return _threadpools


def one_openmp_thread() -> Any:
    """A context in which the calling thread's OpenMP code runs on one thread. HistGradientBoosting
    otherwise starts a thread per core for every call; next to other busy processes on 2 cores that
    made one row take 60-400 ms instead of 3-5 ms (measured). The limit is per calling thread
    (OpenMP ICVs): a thread that makes every call can enter it once (~0.3 ms saved per call)."""
    return openmp_controller().limit(limits=1, user_api="openmp")


def sklearn_prices(estimator: Any, features: np.ndarray) -> np.ndarray:
    """``estimator.predict`` as float64 prices; call it inside ``one_openmp_thread()``."""
    return np.asarray(estimator.predict(features), dtype=np.float64).reshape(-1)


def predict_with_sklearn(estimator: Any, features: np.ndarray) -> np.ndarray:
    """``estimator.predict`` on one OpenMP thread (see ``one_openmp_thread``)."""
    with one_openmp_thread():
        return sklearn_prices(estimator, features)


@dataclass
class LoadedModel:
    info: VersionInfo
    spec: FeatureSpec
    session: ort.InferenceSession
    _stored: StoredModel = field(repr=False)
    _sklearn: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _input_name: str = field(default="", init=False, repr=False)
    _row: np.ndarray = field(init=False, repr=False)
    _price: np.ndarray = field(init=False, repr=False)
    _row_binding: ort.IOBinding = field(init=False, repr=False)
    _row_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _restore_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    # The ONNX file's SHA-256, and its first 12 hex digits as the model's short id: unlike a version
    # number (which a new store hands out again), it names these exact bytes wherever they are.
    onnx_sha256: str = field(default="", init=False)
    model_id: str = field(default="", init=False)
    # The batch form of the reference's out-of-range check, built once per loaded version.
    out_of_range: Flags | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.onnx_sha256 = signing.sha256_hex(self._stored.onnx)
        self.model_id = self.onnx_sha256[:MODEL_ID_DIGITS]
        if self._stored.reference is not None:
            self.out_of_range = self._stored.reference.flags(self.spec.columns)
        # Asking the session for its input name costs about as much as running one row.
        self._input_name = self.session.get_inputs()[0].name
        # The API's one-record requests run through buffers bound once: run() would build the feeds,
        # check them and allocate and convert the output on every call, about half of a one-row
        # call when the caches are cold (measured: 6.3 us instead of 11 us).
        self._row = np.zeros((1, len(self.spec.columns)), dtype=np.float32)
        self._price = np.zeros((1, 1), dtype=np.float32)
        self._row_binding = self.session.io_binding()
        self._row_binding.bind_cpu_input(self._input_name, self._row)
        self._row_binding.bind_output(
            self.session.get_outputs()[0].name, "cpu", 0, np.float32, [1, 1], self._price.ctypes.data
        )

    @classmethod
    def from_stored(cls, stored: StoredModel) -> LoadedModel:
        return cls(info=stored.info, spec=stored.spec, session=onnx_session(stored.onnx), _stored=stored)

    @property
    def group(self) -> str:
        return self.info.group

    @property
    def version(self) -> int:
        return self.info.version

    @property
    def calibration(self) -> Calibration | None:
        """The version's price-range calibration; None for a version stored before issue 25."""
        return self._stored.calibration

    @property
    def profile(self) -> DriftProfile | None:
        """The version's drift profile; None for a version stored before issue 24."""
        return self._stored.profile

    @property
    def reference(self) -> Reference | None:
        """The fitted rows' numeric ranges (out-of-range flags); None for a version stored before."""
        return self._stored.reference

    def predict_onnx(self, features: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self._input_name: features})[0]
        return np.asarray(out, dtype=np.float64).reshape(-1)

    def predict_one(self, row: Sequence[float]) -> float:
        """``predict_onnx`` of one encoded row, through the bound buffers."""
        with self._row_lock:  # one set of buffers per model; the lock is uncontended on the event loop
            self._row[0] = row
            self.session.run_with_iobinding(self._row_binding)
            return float(self._price[0, 0])

    def sklearn_model(self) -> Any:
        if self._sklearn is None:
            with self._lock:
                if self._sklearn is None:
                    self._sklearn = self._stored.load_sklearn()
        return self._sklearn

    def sklearn_if_loaded(self) -> Any:
        """The unpickled estimator, or None before ``sklearn_model`` loaded it (for event-loop callers)."""
        return self._sklearn

    def predict_sklearn(self, features: np.ndarray) -> np.ndarray:
        return predict_with_sklearn(self.sklearn_model(), features)

    def warm(self) -> None:
        """Run one row, so the first request after a load does not pay ONNX Runtime's first-run setup."""
        self.predict_onnx(np.zeros((1, len(self.spec.columns)), dtype=np.float32))

    def predict_redisai(self, store: ModelStore, features: np.ndarray) -> np.ndarray:
        if not self.info.redisai:
            raise NoModel(f"model group {self.group} version {self.version} is not stored in RedisAI")
        key = store.redisai_key(self.group, self.version)
        try:
            return redisai.run(store.client, key, features)
        except redisai.MissingModel:
            # RedisAI lost the key (restarted without persistence): store it again from the signed
            # record, once for all the requests that found it missing, then run again. Without a
            # record (Redis lost everything) store.get raises NoModel: a 503, never a wrong answer.
            self.ensure_in_redisai(store)
            return redisai.run(store.client, key, features)

    def ensure_in_redisai(self, store: ModelStore) -> bool:
        """Re-store this version in RedisAI if its key is gone; True if it had to."""
        with self._restore_lock:
            if store.redisai_model_exists(self.group, self.version):
                return False
            store.restore_redisai(self.group, self.version)
            return True


class ModelCache:
    """The current model of each group, loaded once and swapped atomically when a new one is promoted.

    Readers take ``self._models[group]``: a dict read is atomic, so a request sees either the old or
    the new model, never a half-loaded one, and never waits for a load.
    """

    def __init__(
        self,
        store: ModelStore,
        on_load: Callable[[LoadedModel], None] | None = None,
        *,
        load_sklearn: bool = False,
        retry_after_s: float = 1.0,
        redisai: bool = False,
    ):
        """``load_sklearn`` also unpickles each version before it goes live, so the first pickle
        request after a promotion does not pay for it. A failed load is remembered for
        ``retry_after_s``: while the store is down, callers get the error at once instead of each
        waiting out a Redis timeout in turn. ``redisai`` (the API executes in RedisAI): every poll
        also stores a loaded version in RedisAI again if RedisAI lost it, so the API recovers from a
        RedisAI restart by itself, even while no request arrives (a readiness probe keeps them away)."""
        self.store = store
        self._redisai = redisai
        self._models: dict[str, LoadedModel] = {}
        self._on_load = on_load
        self._load_sklearn = load_sklearn
        self._retry_after_s = retry_after_s
        self._failures: dict[str, tuple[float, ModelStoreError]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._load_lock = threading.Lock()

    def get(self, group: str) -> LoadedModel:
        model = self._models.get(group)
        if model is None:
            if group not in schema.MODEL_GROUPS:
                raise UnknownGroup(f"unknown model group {group!r}; known groups: {', '.join(schema.MODEL_GROUPS)}")
            # Not loaded yet (no model at start-up, or Redis was down): try once, synchronously.
            model = self.refresh_group(group, on_demand=True)
        return model

    def peek(self, group: str) -> LoadedModel | None:
        """The loaded model of ``group`` or None; never touches Redis (for event-loop callers)."""
        return self._models.get(group)

    def loaded(self) -> dict[str, LoadedModel]:
        return dict(self._models)

    def last_error(self, group: str) -> str | None:
        """Why the group's last load failed, if it did and nothing loaded since."""
        failed = self._failures.get(group)
        return str(failed[1]) if failed is not None else None

    def refresh_group(self, group: str, *, on_demand: bool = False) -> LoadedModel:
        """Load the group's current version unless it is already the one loaded.

        ``on_demand`` (a request found no model): take whatever another thread loaded meanwhile,
        and re-raise a load failure younger than ``retry_after_s`` instead of retrying it."""
        with self._load_lock:
            if on_demand:
                model = self._models.get(group)
                if model is not None:
                    return model
                failed = self._failures.get(group)
                if failed is not None and time.monotonic() - failed[0] < self._retry_after_s:
                    raise failed[1]
            try:
                version = self.store.current_version(group)
                model = self._models.get(group)
                if model is not None and model.version == version and self._same_record(model):
                    return model
                model = LoadedModel.from_stored(self.store.get(group, version))
                model.warm()
                if self._load_sklearn:
                    model.sklearn_model()
            except ModelStoreError as exc:
                self._failures[group] = (time.monotonic(), exc)
                raise
            self._failures.pop(group, None)
            self._models[group] = model
        log.info("loaded model group=%s version=%s", group, version)
        if self._on_load is not None:
            self._on_load(model)
        return model

    def _same_record(self, model: LoadedModel) -> bool:
        """Whether the loaded model is still the store's record of its version. A Redis that lost its
        data (restarted without persistence) numbers versions from 1 again after retraining: the same
        number then names another model, which must be loaded, not mistaken for the old one."""
        try:
            return self.store.info(model.group, model.version).created_at == model.info.created_at
        except NoModel:
            return False

    def refresh_all(self) -> dict[str, str]:
        """Bring every group up to date; returns the problems (group -> reason) it could not fix."""
        problems: dict[str, str] = {}
        for group in schema.MODEL_GROUPS:
            try:
                self.refresh_group(group)
            except ModelStoreError as exc:
                problems[group] = str(exc)
        if self._redisai:
            for group, model in self.loaded().items():
                if not model.info.redisai:
                    continue
                try:
                    model.ensure_in_redisai(self.store)
                except (ModelStoreError, redis.RedisError) as exc:
                    problems.setdefault(group, str(exc))
        return problems

    # -- background watcher ----------------------------------------------------------------------
    def start(self, poll_interval_s: float = 5.0) -> None:
        """Follow promotions: pub/sub for speed, a periodic poll because pub/sub drops messages
        while disconnected (a Redis restart must not leave the API on an old version forever)."""
        self._thread = threading.Thread(target=self._watch, args=(poll_interval_s,), name="model-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self, poll_interval_s: float) -> None:
        while not self._stop.is_set():
            try:
                self.refresh_all()
                waited = 0.0
                for event in self.store.subscribe(timeout_s=0.5):
                    if self._stop.is_set():
                        return
                    if event is not None and event.get("event") == "promoted":
                        self.refresh_group(event["group"])
                    else:
                        waited += 0.5
                        if waited >= poll_interval_s:
                            waited = 0.0
                            self.refresh_all()
            except ModelStoreError as exc:
                log.warning("model watcher: %s; retrying", exc)
                self._stop.wait(1.0)
            except Exception:  # a bad version must not kill the watcher; it is logged and retried
                log.exception("model watcher failed; retrying")
                self._stop.wait(1.0)
