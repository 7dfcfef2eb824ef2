"""scikit-learn -> ONNX, within what the deployed RedisAI's ONNX Runtime can run."""

from __future__ import annotations

from typing import Any

import onnx

# The export limits are those of the RedisAI that docker-compose.yml and k8s/ deploy:
# redislabs/redisai:1.2.7-cpu-bionic, RedisAI 1.2.7 built on ONNX Runtime 1.11.1 (its get_deps.sh).
# ORT 1.11 supports ai.onnx up to opset 16, ai.onnx.ml up to 3 and IR up to 8; RedisAI refuses an
# opset-17 model at AI.MODELSTORE ("Current official support for domain ai.onnx is till opset 16").
# Raise them only together with the RedisAI image, and run the RedisAI tests against the new one.
DEPLOYED_REDISAI = "RedisAI 1.2.7 on ONNX Runtime 1.11 (redislabs/redisai:1.2.7-cpu-bionic)"
MAX_OPSET = 16
MAX_ML_OPSET = 3
MAX_IR_VERSION = 8
INPUT_NAME = "features"


def export_onnx(model: Any, n_features: int) -> bytes:
    # Imported here: skl2onnx pulls in scikit-learn, which scoring runs of this code location never need.
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    proto = convert_sklearn(
        model,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        target_opset={"": MAX_OPSET, "ai.onnx.ml": MAX_ML_OPSET},
    )
    # skl2onnx can list the default domain twice; older runtimes reject duplicate opset imports.
    seen: dict[str, int] = {}
    for imp in proto.opset_import:
        seen[imp.domain] = max(seen.get(imp.domain, 0), imp.version)
    del proto.opset_import[:]
    for domain, version in sorted(seen.items()):
        proto.opset_import.append(onnx.helper.make_opsetid(domain, version))
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    onnx.checker.check_model(proto)
    check_redisai_compatible(proto)
    return proto.SerializeToString()


class BeyondDeployedRuntime(ValueError):
    """The model needs an ONNX IR or opset newer than the deployed RedisAI's ONNX Runtime loads."""


def check_redisai_compatible(proto: onnx.ModelProto) -> None:
    if proto.ir_version > MAX_IR_VERSION:
        raise BeyondDeployedRuntime(
            f"ONNX IR version {proto.ir_version} is above {MAX_IR_VERSION}, the newest {DEPLOYED_REDISAI} loads"
        )
    limits = {"": MAX_OPSET, "ai.onnx": MAX_OPSET, "ai.onnx.ml": MAX_ML_OPSET}
    for imp in proto.opset_import:
        limit = limits.get(imp.domain)
        if limit is not None and imp.version > limit:
            raise BeyondDeployedRuntime(
                f"ONNX opset {imp.domain or 'ai.onnx'} {imp.version} is above {limit}, "
                f"the newest {DEPLOYED_REDISAI} loads"
            )


def opsets(onnx_bytes: bytes) -> dict[str, int]:
    proto = onnx.load_from_string(onnx_bytes)
    return {(imp.domain or "ai.onnx"): imp.version for imp in proto.opset_import} | {"ir_version": proto.ir_version}
