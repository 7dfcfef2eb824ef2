"""ONNX Runtime 1.11.0, the runtime inside the deployed RedisAI 1.2.7, from the npm registry.

PyPI has no onnxruntime 1.11 wheel for Python 3.11; npm's `onnxruntime-node@1.11.0` carries that
release's own `libonnxruntime.so.1.11.0` with a Node binding. `tests/ort11/` pins it (package.json and
its lockfile; `./dev test` and `.ci/run` install it with `npm ci`), and `tests/ort11/run_model.js` loads a
model and runs it on the raw float32 tensor bytes that `AI.TENSORSET ... BLOB` sends.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.paths import REPO

ORT11_DIR = REPO / "tests" / "ort11"
SCRIPT = ORT11_DIR / "run_model.js"
VERSION = "1.11.0"


def unavailable_reason() -> str | None:
    """Why ONNX Runtime 1.11 cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return (
            "node is not installed: ONNX Runtime 1.11 runs through npm's onnxruntime-node (apt-get install nodejs npm)"
        )
    if not (ORT11_DIR / "node_modules" / "onnxruntime-node").is_dir():
        return "tests/ort11 has no node_modules: run `npm ci` there (./dev test does)"
    return None


needs_ort11 = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))


@dataclass
class Answer:
    runtime: str
    library: str | None
    loaded: bool
    error: str | None = None
    inputs: list[str] = field(default_factory=list)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)


def _node(*args: str) -> Answer:
    proc = subprocess.run(["node", str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"run_model.js exited {proc.returncode}:\n{proc.stderr}"
    body = json.loads(proc.stdout)
    outputs = {
        name: np.asarray(out["data"], dtype=np.float32).reshape(out["dims"])
        for name, out in body.pop("outputs", {}).items()
    }
    return Answer(outputs=outputs, **body)


def load(onnx_bytes: bytes) -> Answer:
    """Load the model in ONNX Runtime 1.11: ``loaded`` False with the runtime's reason if it refuses."""
    with tempfile.TemporaryDirectory(prefix="aimq-ort11-") as tmp:
        model = Path(tmp) / "model.onnx"
        model.write_bytes(onnx_bytes)
        return _node(str(model))


def run(onnx_bytes: bytes, tensor: np.ndarray) -> Answer:
    """Run the model on ``tensor`` (float32, row-major, as RedisAI receives it) in ONNX Runtime 1.11."""
    assert tensor.dtype == np.float32 and tensor.flags.c_contiguous and tensor.ndim == 2
    with tempfile.TemporaryDirectory(prefix="aimq-ort11-") as tmp:
        model, data = Path(tmp) / "model.onnx", Path(tmp) / "tensor.f32"
        model.write_bytes(onnx_bytes)
        data.write_bytes(tensor.tobytes())
        rows, cols = tensor.shape
        return _node(str(model), str(data), str(rows), str(cols))
