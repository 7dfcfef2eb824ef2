"""`aimq models` and `aimq rollback`: the model versions of each group in the model store."""

from __future__ import annotations

import time

from aimq_serving import schema
from aimq_serving.model_store import ModelStore
from aimq_serving.settings import AimqSettings


def cmd_models(settings: AimqSettings) -> int:
    store = ModelStore.from_settings(settings)
    listing = {group: store.list_versions(group) for group in schema.MODEL_GROUPS}
    print(f"{'group':5} {'version':>7} {'current':7} {'created (UTC)':19} {'R2':>7} {'MAPE':>7} {'ONNX kB':>8}")
    for group in schema.MODEL_GROUPS:
        versions = listing[group]
        if not versions:
            print(f"{group:5} {'-':>7} no model yet (run: aimq train)")
        for v in versions:
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(v.created_at))
            print(
                f"{group:5} {v.version:>7} {'*' if v.current else '':7} {created:19} "
                f"{v.metrics.get('r2', float('nan')):>7.4f} {v.metrics.get('mape', float('nan')):>7.2%} "
                f"{v.onnx_bytes / 1000:>8.0f}"
            )
    return 0


def cmd_rollback(settings: AimqSettings, group: str, version: int | None) -> int:
    current = ModelStore.from_settings(settings).rollback(group, version)
    print(f"group {group}: version {current} is current")
    return 0
