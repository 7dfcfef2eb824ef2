"""A result's provenance: which upload, read where, scored by which models, when.

The same facts go into the xlsx result's ``about`` sheet (a ``field``/``value`` row each) and into
``about.json`` beside every result (the CSV download's sidecar; ``GET /uploads/{id}/about``), so a
result file can always be traced to its input bytes and to the exact model bytes that priced it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from aimq_serving.loaded_models import LoadedModel


@dataclass(frozen=True)
class UploadFacts:
    """What the run knows of the upload from its queue message."""

    upload_id: str
    original_name: str
    sha256: str


def aimq_version() -> str:
    try:
        return metadata.version("aimq")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def iso(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def about(
    upload: UploadFacts | None,
    *,
    data_sheet: str | None,
    header_row: int,
    models: dict[str, LoadedModel],
    extra: dict[str, Any],
    scored_at: float,
) -> dict[str, Any]:
    """The provenance as JSON-ready data. ``extra``: further run-wide facts (the coverage level)."""
    return {
        "upload_id": upload.upload_id if upload else None,
        "original_name": upload.original_name if upload else None,
        "sha256": upload.sha256 if upload else None,
        "data_sheet": data_sheet,
        "header_row": header_row,
        "models": {
            group: {
                "version": model.version,
                "model_id": model.model_id,
                "created_at": iso(model.info.created_at),
                "onnx_sha256": model.onnx_sha256,
                # None: stored before issue 25, no ranges (its rows' price_low/price_high are empty)
                "calibration_rows": model.calibration.split.get("rows") if model.calibration else None,
                # Beyond these a row's out_of_range names the field; None: stored before (no flags)
                "training_ranges": _ranges(model),
            }
            for group, model in sorted(models.items())
        },
        **extra,
        "aimq_version": aimq_version(),
        "scored_at": iso(scored_at),
    }


def _ranges(model: LoadedModel) -> dict[str, list[int]] | None:
    # The numeric features are whole numbers (the schema refuses others), so are their bounds.
    if model.reference is None:
        return None
    return {name: [int(lo), int(hi)] for name, (lo, hi) in model.reference.numeric.items()}


def about_rows(facts: dict[str, Any]) -> list[tuple[str, str]]:
    """The provenance as the ``about`` sheet's rows: nested fields flattened (``model A version``)."""
    rows: list[tuple[str, str]] = []
    for key, value in facts.items():
        if key == "models":
            for group, model in value.items():
                for name, v in model.items():
                    if isinstance(v, dict):  # training_ranges: a row per feature, "0 to 512300"
                        rows += [(f"model {group} {name} {k}", f"{lo} to {hi}") for k, (lo, hi) in v.items()]
                    else:
                        rows.append((f"model {group} {name}", "" if v is None else str(v)))
        else:
            rows.append((key, "" if value is None else str(value)))
    return rows
