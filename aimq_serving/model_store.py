"""The model store: immutable, signed model versions in Redis, one current version per group.

Keys (prefix ``P``, group ``G``, version number ``N``):

- ``P:models:G:seq``        counter that hands out version numbers
- ``P:models:G:versions``   sorted set of version numbers (score = number)
- ``P:models:G:v:N``        hash: onnx, pickle, spec, calibration, reference, profile, metrics, lineage,
  created_at, signature, manifest (``calibration``, ``reference``: since issue 25, ``profile``: since
  issue 24; a version stored before has none, and is still served)
- ``P:models:G:current``    the current version number
- ``P:models:G:ai:N``       the RedisAI model of version N (only where the server has the module)
- channel ``P:models:events`` JSON ``{"event", "group", "version"}`` on every promote and delete
"""

from __future__ import annotations

import json
import logging
import pickle
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import redis

from aimq_serving import redisai, schema, signing
from aimq_serving.conformal import Calibration
from aimq_serving.drift_profile import DriftProfile
from aimq_serving.features import FeatureSpec
from aimq_serving.redis_errors import redis_available
from aimq_serving.reference import Reference

log = logging.getLogger(__name__)

ARTIFACTS = ("onnx", "pickle", "spec")
# Signed like the others when present; a version stored before they existed has none, and its
# signature covers the others only. Removing one from a version that has it breaks its signature.
OPTIONAL_ARTIFACTS = ("calibration", "reference", "profile")
_META_FIELDS = ("metrics", "lineage", "created_at", "spec_version", "onnx_bytes", "pickle_bytes", "redisai")

# Promotion must be atomic with its notification, and must refuse a version that is not stored.
_PROMOTE = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[3], ARGV[2])
return 1
"""


class ModelStoreError(Exception):
    """Base class: every error the store raises says what and which group/version."""


class StoreUnavailable(ModelStoreError):
    pass


_available = partial(redis_available, StoreUnavailable, "model store")


class UnknownGroup(ModelStoreError):
    pass


class NoModel(ModelStoreError):
    pass


class TamperedModel(ModelStoreError):
    def __init__(self, message: str, group: str, version: int, artifacts: list[str]):
        super().__init__(message)
        self.group = group
        self.version = version
        self.artifacts = artifacts  # the ones that changed, where the recorded digests can tell


@dataclass(frozen=True)
class VersionInfo:
    group: str
    version: int
    created_at: float
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    spec_version: str
    onnx_bytes: int
    pickle_bytes: int
    redisai: bool
    current: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class StoredModel:
    """A version whose signature has been verified; only then are its bytes handed out."""

    info: VersionInfo
    onnx: bytes
    spec: FeatureSpec
    _pickle: bytes = field(repr=False)
    calibration: Calibration | None = None  # None: stored before ranges were calibrated
    reference: Reference | None = None  # None: stored before out-of-range flags
    profile: DriftProfile | None = None  # None: stored before drift profiles

    def load_sklearn(self) -> Any:
        # Safe: the bytes were verified against the HMAC in ModelStore.get before this object existed.
        return pickle.loads(self._pickle)  # noqa: S301


class ModelStore:
    def __init__(self, client: redis.Redis, prefix: str, signing_key: bytes, keep_versions: int = 5):
        self.client = client
        self.prefix = prefix
        self._key = signing_key
        self.keep_versions = keep_versions
        self._promote = client.register_script(_PROMOTE)
        # (group, version) -> the reason last logged for refusing it: logged once, not per request.
        self._refused: dict[tuple[str, int], str] = {}

    @classmethod
    def from_settings(cls, settings: Any) -> ModelStore:
        return cls(
            settings.redis_client(), settings.redis_prefix, settings.resolved_signing_key(), settings.keep_versions
        )

    # -- keys ----------------------------------------------------------------------------------
    def _k(self, group: str, *parts: str) -> str:
        return ":".join((self.prefix, "models", group, *parts))

    @property
    def events_channel(self) -> str:
        return f"{self.prefix}:models:events"

    def redisai_key(self, group: str, version: int) -> str:
        return self._k(group, "ai", str(version))

    # -- writing -------------------------------------------------------------------------------
    def put(
        self,
        group: str,
        onnx_bytes: bytes,
        model: Any,
        spec: FeatureSpec,
        metrics: dict[str, Any],
        lineage: dict[str, Any],
        *,
        calibration: Calibration | None = None,
        reference: Reference | None = None,
        profile: DriftProfile | None = None,
        use_redisai: bool | None = None,
    ) -> int:
        """Store a new immutable version (not yet current) and return its number."""
        _check_group(group)
        pickle_bytes = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        artifacts = {"onnx": onnx_bytes, "pickle": pickle_bytes, "spec": spec.to_json().encode()}
        if calibration is not None:
            artifacts["calibration"] = calibration.to_json()
        if reference is not None:
            artifacts["reference"] = reference.to_json()
        if profile is not None:
            artifacts["profile"] = profile.to_json()  # ProfileTooLarge past MAX_PROFILE_BYTES: nothing stored
        with _available():
            version = int(self.client.incr(self._k(group, "seq")))
            with_ai = self.uses_redisai() if use_redisai is None else use_redisai
            if with_ai:
                # Before any record is written: a model RedisAI refuses (redisai.ModelRefused) leaves
                # the store as it was, and the current version stays served.
                redisai.check_database(self.client)
                redisai.model_store(self.client, self.redisai_key(group, version), onnx_bytes)
            record = {
                **artifacts,
                "signature": signing.sign(self._key, group, version, artifacts),
                # What was signed; lets a refusal say which artifact changed (see signing.diagnose).
                "manifest": signing.manifest(group, version, artifacts),
                "metrics": json.dumps(metrics),
                "lineage": json.dumps(lineage),
                "created_at": repr(time.time()),
                "spec_version": spec.version,
                "onnx_bytes": len(onnx_bytes),
                "pickle_bytes": len(pickle_bytes),
                "redisai": int(with_ai),
            }
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(self._k(group, "v", str(version)), mapping=record)
            pipe.zadd(self._k(group, "versions"), {str(version): version})
            pipe.execute()
        return version

    def promote(self, group: str, version: int) -> None:
        _check_group(group)
        event = json.dumps({"event": "promoted", "group": group, "version": version})
        with _available():
            ok = self._promote(
                keys=[self._k(group, "current"), self._k(group, "v", str(version)), self.events_channel],
                args=[version, event],
            )
        if not ok:
            raise NoModel(f"model group {group} has no version {version}")

    def rollback(self, group: str, version: int | None = None) -> int:
        """Make ``version`` current again, or by default the version stored before the current one."""
        if version is None:
            current = self.current_version(group)
            older = [v for v in self.version_numbers(group) if v < current]
            if not older:
                raise NoModel(f"model group {group} has no version older than {current} to roll back to")
            version = older[-1]
        self.promote(group, version)
        return version

    def prune(self, group: str) -> list[int]:
        """Delete all but the newest ``keep_versions`` versions, never the current one."""
        versions = self.version_numbers(group)
        current = self.current_version(group, missing_ok=True)
        doomed = [v for v in versions[: max(0, len(versions) - self.keep_versions)] if v != current]
        for v in doomed:
            self.delete(group, v)
        return doomed

    def delete(self, group: str, version: int) -> None:
        _check_group(group)
        if self.current_version(group, missing_ok=True) == version:
            raise ModelStoreError(f"version {version} of group {group} is current; promote another first")
        with _available():
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(self._k(group, "v", str(version)))
            pipe.zrem(self._k(group, "versions"), str(version))
            pipe.execute()
            # AI.MODELDEL only exists with the module; a plain DEL removes a RedisAI model key too.
            self.client.delete(self.redisai_key(group, version))
            self.client.publish(
                self.events_channel, json.dumps({"event": "deleted", "group": group, "version": version})
            )

    def restore_redisai(self, group: str, version: int) -> None:
        """Store a version's AI model again from its verified record: after RedisAI lost its keys
        (restarted without persistence) while the record is still there. Only signed bytes go in."""
        stored = self.get(group, version)
        if not stored.info.redisai:
            raise NoModel(f"model group {group} version {version} was not stored in RedisAI")
        with _available():
            redisai.model_store(self.client, self.redisai_key(group, version), stored.onnx)
        log.warning("re-stored the RedisAI model of group=%s version=%s from its signed record", group, version)

    # -- reading -------------------------------------------------------------------------------
    def has_redisai(self) -> bool:
        with _available():
            return redisai.has_redisai(self.client)

    def uses_redisai(self) -> bool:
        """Whether new versions go into RedisAI too: the server has the ai module and the client is on
        database 0, the only one where RedisAI executes models (elsewhere it would store them, answer
        OK, and fail every execution)."""
        if redisai.database(self.client) != 0:
            return False
        return self.has_redisai()

    def redisai_model_exists(self, group: str, version: int) -> bool:
        with _available():
            return redisai.model_exists(self.client, self.redisai_key(group, version))

    def version_numbers(self, group: str) -> list[int]:
        _check_group(group)
        with _available():
            return [int(v) for v in self.client.zrange(self._k(group, "versions"), 0, -1)]

    def current_version(self, group: str, *, missing_ok: bool = False) -> int:
        _check_group(group)
        with _available():
            raw = self.client.get(self._k(group, "current"))
        if raw is None:
            if missing_ok:
                return 0
            raise NoModel(f"model group {group} has no model yet; materialize the model chain first")
        return int(raw)

    def current_versions(self) -> dict[str, int | None]:
        with _available():
            raws = self.client.mget([self._k(g, "current") for g in schema.MODEL_GROUPS])
        return {g: (int(r) if r is not None else None) for g, r in zip(schema.MODEL_GROUPS, raws)}

    def info(self, group: str, version: int, current: int | None = None) -> VersionInfo:
        with _available():
            raw = self.client.hmget(self._k(group, "v", str(version)), _META_FIELDS)
        if raw[0] is None:
            raise NoModel(f"model group {group} has no version {version}")
        metrics, lineage, created_at, spec_version, onnx_n, pickle_n, ai = raw
        return VersionInfo(
            group=group,
            version=version,
            created_at=float(created_at),
            metrics=json.loads(metrics),
            lineage=json.loads(lineage),
            spec_version=spec_version.decode(),
            onnx_bytes=int(onnx_n),
            pickle_bytes=int(pickle_n),
            redisai=bool(int(ai)),
            current=version == current,
        )

    def list_versions(self, group: str) -> list[VersionInfo]:
        current = self.current_version(group, missing_ok=True)
        return [self.info(group, v, current) for v in self.version_numbers(group)]

    def get(self, group: str, version: int | None = None) -> StoredModel:
        """The verified artifacts of ``version`` (default: the current one)."""
        current = self.current_version(group)
        version = current if version is None else version
        with _available():
            raw = self.client.hmget(
                self._k(group, "v", str(version)), (*ARTIFACTS, *OPTIONAL_ARTIFACTS, "signature", "manifest")
            )
        if all(v is None for v in raw):
            raise NoModel(f"model group {group} has no version {version}")
        n = len(ARTIFACTS)
        artifacts = dict(zip(ARTIFACTS, raw[:n]))
        optional = {k: v for k, v in zip(OPTIONAL_ARTIFACTS, raw[n:]) if v is not None}
        signature = (raw[-2] or b"").decode(errors="replace")
        if any(v is None for v in artifacts.values()) or not signing.verify(
            self._key, group, version, {**artifacts, **optional}, signature
        ):
            raise self._refuse(group, version, {**artifacts, **optional}, signature, raw[-1])
        self._refused.pop((group, version), None)
        return StoredModel(
            info=self.info(group, version, current),
            onnx=artifacts["onnx"],
            spec=FeatureSpec.from_json(artifacts["spec"]),
            _pickle=artifacts["pickle"],
            calibration=Calibration.from_json(optional["calibration"]) if "calibration" in optional else None,
            reference=Reference.from_json(optional["reference"]) if "reference" in optional else None,
            profile=DriftProfile.from_json(optional["profile"]) if "profile" in optional else None,
        )

    def _refuse(
        self, group: str, version: int, artifacts: dict[str, bytes | None], signature: str, recorded: bytes | None
    ) -> TamperedModel:
        reason, changed = signing.diagnose(self._key, group, version, artifacts, signature, recorded)
        if self._refused.get((group, version)) != reason:
            self._refused[(group, version)] = reason
            log.error(
                "refusing model group=%s version=%s: signature check failed: %s",
                group,
                version,
                reason,
                extra={"model_group": group, "model_version": version, "changed_artifacts": changed},
            )
        return TamperedModel(
            f"model group {group} version {version}: signature does not match its artifacts ({reason}); "
            "refusing to load it",
            group,
            version,
            changed,
        )

    def subscribe(self, timeout_s: float = 1.0) -> Iterator[dict[str, Any] | None]:
        """Yield change events; yields None every ``timeout_s`` so a caller can poll or stop."""
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            with _available():
                pubsub.subscribe(self.events_channel)
            while True:
                with _available():
                    message = pubsub.get_message(timeout=timeout_s)
                yield json.loads(message["data"]) if message else None
        finally:
            pubsub.close()

    def clear(self) -> None:
        """Delete every key under the prefix (tests and `aimq` maintenance)."""
        with _available():
            for key in self.client.scan_iter(match=f"{self.prefix}:models:*", count=500):
                self.client.delete(key)


def _check_group(group: str) -> None:
    if group not in schema.MODEL_GROUPS:
        raise UnknownGroup(f"unknown model group {group!r}; known groups: {', '.join(schema.MODEL_GROUPS)}")
