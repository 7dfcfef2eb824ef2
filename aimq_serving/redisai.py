"""RedisAI commands spoken with redis-py (the `redisai` client pins redis<5, so we do not use it).

Facts of the RedisAI we deploy (1.2.7 on ONNX Runtime 1.11, redislabs/redisai:1.2.7-cpu-bionic) that
the code below relies on:
- AI keys work in database 0 only: with a client on another database AI.MODELSTORE answers OK, but
  AI.MODELEXECUTE then fails with "model key is empty". Hence ``check_database``.
- AI.MODELSTORE refuses a model its ONNX Runtime cannot load (e.g. opset 17) with a reason worth
  showing to a person: ``ModelRefused`` carries it.
- A server restarted without persistence has lost its AI keys while the model store's records may
  survive (or be restored); a DAG on a missing key fails with "model key is empty": ``MissingModel``.
"""

from __future__ import annotations

import numpy as np
import redis


class RedisAIError(redis.RedisError):
    """A RedisAI command failed; the message is RedisAI's own reason. A RedisError, so the API answers
    it like any failed Redis call (503 with the reason)."""


class ModelRefused(RedisAIError):
    """AI.MODELSTORE refused the model (not transient: storing it again fails again)."""


class MissingModel(RedisAIError):
    """The model key holds no model (RedisAI restarted without persistence, or the key was deleted)."""


class WrongDatabase(RedisAIError):
    """The client uses a database other than 0, where RedisAI cannot execute models."""


def has_redisai(client: redis.Redis) -> bool:
    modules = client.execute_command("MODULE", "LIST")
    for module in modules:
        fields = dict(zip(module[::2], module[1::2])) if isinstance(module, list) else module
        name = fields.get(b"name", fields.get("name"))
        if name in (b"ai", "ai"):
            return True
    return False


def database(client: redis.Redis) -> int:
    return int(client.connection_pool.connection_kwargs.get("db", 0) or 0)


def check_database(client: redis.Redis) -> None:
    db = database(client)
    if db != 0:
        raise WrongDatabase(
            f"RedisAI runs models only in Redis database 0, and the Redis URL selects database {db}: "
            "use database 0 (e.g. redis://host:6379/0) and AIMQ_REDIS_PREFIX to keep deployments apart"
        )


def model_store(client: redis.Redis, key: str, onnx_bytes: bytes) -> None:
    try:
        client.execute_command("AI.MODELSTORE", key, "ONNX", "CPU", "BLOB", onnx_bytes)
    except redis.ResponseError as exc:
        raise ModelRefused(f"RedisAI refused the model: {exc}") from None


def model_exists(client: redis.Redis, key: str) -> bool:
    return bool(client.exists(key))


def input_tensor(features: np.ndarray) -> np.ndarray:
    """The tensor ``run`` sends as ``AI.TENSORSET x FLOAT rows cols BLOB``: float32, row-major, its bytes
    as they are. tests/pipelines/models/test_onnx_runtime_1_11.py feeds the same bytes to ONNX Runtime 1.11."""
    return np.ascontiguousarray(features, dtype=np.float32)


def run(client: redis.Redis, key: str, features: np.ndarray) -> np.ndarray:
    """Run the ONNX model stored at ``key`` on ``features`` in one round trip.

    The input and output tensors live only inside this DAG (no LOAD or PERSIST), so no other request
    can read or overwrite them: the original demo's shared tensor key let concurrent requests swap
    answers. ROUTING names the model key so a cluster routes the DAG to the shard that holds it.
    """
    matrix = input_tensor(features)
    rows, cols = matrix.shape
    try:
        reply = client.execute_command(
            "AI.DAGEXECUTE",
            "ROUTING",
            key,
            "|>",
            "AI.TENSORSET",
            "x",
            "FLOAT",
            rows,
            cols,
            "BLOB",
            matrix.tobytes(),
            "|>",
            "AI.MODELEXECUTE",
            key,
            "INPUTS",
            1,
            "x",
            "OUTPUTS",
            1,
            "y",
            "|>",
            "AI.TENSORGET",
            "y",
            "BLOB",
        )
    except redis.ResponseError as exc:
        raise _error(key, str(exc)) from None
    # Each command of the DAG answers in turn; a failed one answers an error, the later ones "NA".
    for part in reply:
        if isinstance(part, Exception):
            raise _error(key, str(part))
    return np.frombuffer(reply[-1], dtype=np.float32).astype(np.float64)


def _error(key: str, message: str) -> RedisAIError:
    if "model key is empty" in message:
        return MissingModel(f"RedisAI has no model at {key}: {message}")
    return RedisAIError(f"RedisAI failed on {key}: {message}")
