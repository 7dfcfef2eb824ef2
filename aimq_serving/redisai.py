"""RedisAI commands spoken with redis-py (the `redisai` client pins redis<5, so we do not use it)."""

from __future__ import annotations

import numpy as np
import redis


def has_redisai(client: redis.Redis) -> bool:
    modules = client.execute_command("MODULE", "LIST")
    for module in modules:
        fields = dict(zip(module[::2], module[1::2])) if isinstance(module, list) else module
        name = fields.get(b"name", fields.get("name"))
        if name in (b"ai", "ai"):
            return True
    return False


def model_store(client: redis.Redis, key: str, onnx_bytes: bytes) -> None:
    client.execute_command("AI.MODELSTORE", key, "ONNX", "CPU", "BLOB", onnx_bytes)


def run(client: redis.Redis, key: str, features: np.ndarray) -> np.ndarray:
    """Run the ONNX model stored at ``key`` on ``features`` in one round trip.

    The input and output tensors live only inside this DAG (no LOAD or PERSIST), so no other request
    can read or overwrite them: the original demo's shared tensor key let concurrent requests swap
    answers. ROUTING names the model key so a cluster routes the DAG to the shard that holds it.
    """
    matrix = np.ascontiguousarray(features, dtype=np.float32)
    rows, cols = matrix.shape
    reply = client.execute_command(
        "AI.DAGEXECUTE", "ROUTING", key,
        "|>", "AI.TENSORSET", "x", "FLOAT", rows, cols, "BLOB", matrix.tobytes(),
        "|>", "AI.MODELEXECUTE", key, "INPUTS", 1, "x", "OUTPUTS", 1, "y",
        "|>", "AI.TENSORGET", "y", "BLOB",
    )
    blob = reply[-1]
    if isinstance(blob, Exception):
        raise blob
    return np.frombuffer(blob, dtype=np.float32).astype(np.float64)
