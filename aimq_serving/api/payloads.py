"""The prediction routes' request and response bodies, generated from the feature schema so the API
cannot drift from it (the error body is aimq_serving/api/errors.py's).

A record is a pydantic model whose categorical fields are ``Literal`` types and whose numbers carry
the schema's ranges, so a 422 names the field and, for a category, the values it accepts. Stricter
per-group vocabularies (a group's model only knows the categories of its training data) are checked
afterwards against the stored feature spec; the group itself against the groups the server knows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError, create_model

from aimq_serving import schema, values


def _record_model() -> type[BaseModel]:
    groups = ", ".join(schema.MODEL_GROUPS)
    fields: dict[str, Any] = {
        # A plain string: a group the server has no model for is a 404 (issue #3), not a schema error.
        schema.GROUP_FIELD: (
            str,
            Field(
                min_length=1,
                max_length=64,
                description=f"model group ({groups}): which model prices the car",
                json_schema_extra={"enum": list(schema.MODEL_GROUPS)},
            ),
        ),
    }
    for name in schema.FEATURE_FIELDS:
        if name in schema.CATEGORICAL_BY_NAME:
            spec = schema.CATEGORICAL_BY_NAME[name]
            fields[name] = (Literal[spec.values], Field(description=spec.description))
        else:
            num = schema.NUMERIC_BY_NAME[name]
            fields[name] = (int, Field(ge=num.minimum, le=num.maximum, description=num.description))
    # strict: "1000" is not a number and 1000.5 km is not a whole one; extra="forbid": a misspelt
    # field is an error, not silently ignored.
    config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [SAMPLE_ROWS[0]]})
    return create_model("Record", __config__=config, **fields)


# The first rows of the original demo's sample files (1_row.xlsx is the first of 100_rows.xlsx);
# tests/serving/api/test_payloads.py checks they still match the files.
SAMPLE_ROWS: list[dict[str, Any]] = [
    {
        "model_group": "A",
        "model": 180,
        "kilometers": 1000,
        "fuel_type": "Diesel",
        "gear_type": "Manual",
        "vehicle_type": "Sedan Car",
        "age_in_months": 10,
        "color": "Black",
        "line": "Sportline",
        "doors": "4 to 5",
        "seats": "1 to 3",
        "climate": "Air Conditioning",
    },
    {
        "model_group": "B",
        "model": 180,
        "kilometers": 2000,
        "fuel_type": "Petrol",
        "gear_type": "Automatic",
        "vehicle_type": "Sedan Car",
        "age_in_months": 11,
        "color": "Black",
        "line": "Sportline",
        "doors": "4 to 5",
        "seats": "1 to 3",
        "climate": "Air Conditioning",
    },
    {
        "model_group": "C",
        "model": 220,
        "kilometers": 3000,
        "fuel_type": "Petrol",
        "gear_type": "Automatic",
        "vehicle_type": "Sedan Car",
        "age_in_months": 12,
        "color": "Black",
        "line": "Sportline",
        "doors": "4 to 5",
        "seats": "1 to 3",
        "climate": "Air Conditioning",
    },
]

Record = _record_model()


def _shape(value: Any) -> str:
    return "batch" if isinstance(value, list) else "record"


# A JSON object is one record, a JSON array a batch. The callable discriminator keeps a bad record's
# errors about the record, instead of also listing why it is not an array.
PredictBody = Annotated[
    Annotated[Record, Tag("record")] | Annotated[list[Record], Tag("batch"), Field(min_length=1)],  # type: ignore[valid-type]
    Discriminator(_shape),
]
predict_body = TypeAdapter(PredictBody)


def parse_predict_body(body: bytes) -> Any:
    """The records of a predict request; raise ValidationError (with the values as sent) if any is bad.

    The strict parse is the fast path. A body it refuses is normalised (``values.normalise``: 1000.0,
    "1000" and -0.0 are whole numbers, " Diesel " is Diesel, as in a batch file) and validated again,
    so the API accepts exactly what the batch job accepts; a good record pays nothing for this.
    """
    try:
        return predict_body.validate_json(body)
    except ValidationError as strict:
        try:
            data = json.loads(body)
        except ValueError:
            raise strict from None
        normalised = _normalised(data)
        if normalised is data:  # nothing to normalise: the strict parse's errors stand
            raise
        try:
            return predict_body.validate_python(normalised)
        except ValidationError as exc:
            # The errors quote the values as they were sent, not as normalised.
            errors = [{**err, "input": _sent(data, err["loc"], err.get("input"))} for err in exc.errors()]
            raise ValidationError.from_exception_data(exc.title, errors) from None  # type: ignore[arg-type]


def _normalised(data: Any) -> Any:
    """``data`` with its records' values normalised; ``data`` itself if no value changed."""
    if isinstance(data, list):
        items = [_normalised(item) for item in data]
        return data if all(new is old for new, old in zip(items, data)) else items
    if isinstance(data, dict):
        record = {k: values.normalise(k, v) if k in schema.FEATURE_FIELDS else v for k, v in data.items()}
        return data if all(record[k] is v for k, v in data.items()) else record
    return data


def _sent(data: Any, loc: Sequence[Any], default: Any) -> Any:
    """The value at ``loc`` (pydantic's location, with the union's tags) in the body as sent."""
    for part in loc:
        if part in ("record", "batch"):
            continue
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return default
    return data


class Prediction(BaseModel):
    predicted_price: float = Field(description="predicted price in local currency")
    price_low: float | None = Field(
        description="low end of the price range at `coverage` (split conformal); null without calibration"
    )
    price_high: float | None = Field(description="high end of the range; null without calibration")
    coverage: float = Field(description="the share of true prices a range of this kind holds (default 0.9)")
    model_group: str
    model_version: int = Field(description="the model version that priced this record")
    model_id: str = Field(description="the model's short id: the first 12 hex digits of its ONNX file's SHA-256")
    out_of_range: list[str] | None = Field(
        description="the numeric fields whose value lies outside the range of the rows the model was trained "
        "on (the price is a guess there); empty when none; null for a version stored without that range"
    )
    range_note: str | None = Field(default=None, description="why there is no range, when there is none")
    out_of_range_note: str | None = Field(default=None, description="why out_of_range is null, when it is")


def request_body_openapi(max_batch_size: int) -> dict[str, Any]:
    """The request-body part of the predict operations' OpenAPI (their handlers parse the body
    themselves, so FastAPI cannot derive it)."""
    record = Record.model_json_schema()
    batch = {"type": "array", "items": record, "minItems": 1, "maxItems": max_batch_size, "title": "Batch"}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"oneOf": [record, batch]},
                    "examples": {
                        "record": {"summary": "one record (1_row.xlsx)", "value": SAMPLE_ROWS[0]},
                        "batch": {"summary": "a batch (first rows of 100_rows.xlsx)", "value": SAMPLE_ROWS},
                    },
                }
            },
        }
    }
