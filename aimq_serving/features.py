"""Feature encoding from a versioned spec: the same code for training, the API and the batch job.

The spec is data (JSON in the model store), not code, so a served model is always encoded the way it
was trained, even after the schema module grows.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from aimq_serving import schema, values

SPEC_FORMAT = 1


@dataclass(frozen=True)
class RowError:
    row: int  # 0-based position in the input
    field: str
    message: str
    allowed: tuple[Any, ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"row": self.row, "field": self.field, "message": self.message}
        if self.allowed is not None:
            out["allowed"] = list(self.allowed)
        return out


class EncodingError(ValueError):
    def __init__(self, errors: Sequence[RowError]):
        self.errors = list(errors)
        super().__init__("; ".join(f"row {e.row} {e.field}: {e.message}" for e in self.errors[:5]))


@dataclass(frozen=True)
class FeatureSpec:
    """Column order, category vocabularies and numeric ranges of one model's input."""

    columns: tuple[str, ...]
    categorical: Mapping[str, tuple[Any, ...]]
    numeric: Mapping[str, tuple[float, float]]
    format: int = SPEC_FORMAT
    _index: dict[str, dict[Any, float]] = field(default=None, init=False, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        index = {name: {v: float(i) for i, v in enumerate(values)} for name, values in self.categorical.items()}
        object.__setattr__(self, "_index", index)

    @classmethod
    def from_schema(cls) -> FeatureSpec:
        return cls(
            columns=schema.FEATURE_FIELDS,
            categorical={f.name: tuple(f.values) for f in schema.CATEGORICAL},
            numeric={f.name: (float(f.minimum), float(f.maximum)) for f in schema.NUMERIC},
        )

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "columns": list(self.columns),
            "categorical": {k: list(v) for k, v in self.categorical.items()},
            "numeric": {k: list(v) for k, v in self.numeric.items()},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def version(self) -> str:
        """Content hash: two specs with the same encoding have the same version."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]

    @classmethod
    def from_json(cls, raw: str | bytes) -> FeatureSpec:
        data = json.loads(raw)
        if data.get("format") != SPEC_FORMAT:
            raise ValueError(f"unsupported feature spec format {data.get('format')!r}")
        return cls(
            columns=tuple(data["columns"]),
            categorical={k: tuple(v) for k, v in data["categorical"].items()},
            numeric={k: (float(v[0]), float(v[1])) for k, v in data["numeric"].items()},
        )

    # -- encoding ------------------------------------------------------------------------------
    def encode_record(self, record: Mapping[str, Any]) -> list[float]:
        """Encode one already type-checked record (the API's hot path): dict look-ups only."""
        row: list[float] = []
        errors: list[RowError] = []
        for col in self.columns:
            value = record[col]
            codes = self._index.get(col)
            if codes is not None:
                code = codes.get(value)
                if code is None:
                    errors.append(RowError(0, col, values.reason(col, value), self.categorical[col]))
                    continue
                row.append(code)
            else:
                lo, hi = self.numeric[col]
                if not lo <= value <= hi:
                    errors.append(RowError(0, col, values.reason(col, value, (lo, hi))))
                    continue
                row.append(float(value))
        if errors:
            raise EncodingError(errors)
        return row

    def encode_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        out = np.empty((len(records), len(self.columns)), dtype=np.float32)
        errors: list[RowError] = []
        for i, rec in enumerate(records):
            try:
                out[i] = self.encode_record(rec)
            except EncodingError as exc:
                errors.extend(RowError(i, e.field, e.message, e.allowed) for e in exc.errors)
        if errors:
            raise EncodingError(errors)
        return out

    def encode_frame(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[RowError]]:
        """Vectorised encoding of a whole table.

        Returns the feature matrix of the valid rows, the boolean mask of valid rows over the input,
        and one error per bad cell (row = 0-based position in ``frame``). Bad rows are reported,
        never guessed at.
        """
        n = len(frame)
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise EncodingError([RowError(-1, c, "column is missing") for c in missing])
        matrix = np.empty((n, len(self.columns)), dtype=np.float32)
        valid = np.ones(n, dtype=bool)
        errors: list[RowError] = []
        for j, col in enumerate(self.columns):
            series = frame[col]
            if col in self.categorical:
                vocab = self.categorical[col]
                codes = _category_codes(series, vocab)
                bad = codes < 0
                matrix[:, j] = codes
                for i in np.flatnonzero(bad)[:_MAX_ERRORS_PER_COLUMN]:
                    errors.append(RowError(int(i), col, values.reason(col, _plain(series.iloc[i])), vocab))
            else:
                lo, hi = self.numeric[col]
                numbers = _numbers(series)
                not_number = np.isnan(numbers)
                whole = np.equal(np.floor(numbers), numbers)
                out_of_range = ~not_number & ((numbers < lo) | (numbers > hi) | ~whole)
                bad = not_number | out_of_range
                matrix[:, j] = np.where(bad, 0, numbers)
                for i in np.flatnonzero(bad)[:_MAX_ERRORS_PER_COLUMN]:
                    errors.append(RowError(int(i), col, values.reason(col, _plain(series.iloc[i]), (lo, hi))))
            valid &= ~bad
        errors.sort(key=lambda e: (e.row, self.columns.index(e.field)))
        return matrix[valid], valid, errors


# A million-row file with one bad column must not build a million error objects per column.
_MAX_ERRORS_PER_COLUMN = 10_000


def _plain(value: Any) -> Any:
    """A cell as the user wrote it: numpy scalars as Python values, missing values as None."""
    if isinstance(value, np.generic):
        value = value.item()
    return None if value is pd.NA else value


def _numbers(series: pd.Series) -> np.ndarray:
    """A column's values as doubles, NaN where a value is not a number: ``values.as_number`` for a
    whole column. Text goes through pandas' parser, which also reads inf and nan: both are refused
    as not finite, and ``values.reason`` words why. A boolean is not a number (TRUE is not 1 km)."""
    if pd.api.types.is_bool_dtype(series):
        return np.full(len(series), np.nan)
    if pd.api.types.is_numeric_dtype(series):  # a column of number cells: no object detour
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    numbers = pd.to_numeric(series, errors="coerce")
    if numbers.dtype == object:
        # Text of a whole number beyond int64 comes back as Python ints in an object column.
        out = np.asarray(numbers.to_numpy(dtype=object, na_value=np.nan), dtype=np.float64)
    else:
        out = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    if pd.api.types.infer_dtype(series, skipna=True) not in _WITHOUT_BOOLEANS:
        # A column of mixed kinds (xlsx_cells.MIXED) may hold boolean cells, which pandas reads as 1 and 0.
        booleans = np.fromiter((type(v) is bool for v in series), dtype=bool, count=len(series))
        out = np.where(booleans, np.nan, out)  # pandas may hand back a read-only array
    return out


# What pandas infers for an object column that holds no booleans (no need to look at every cell).
_WITHOUT_BOOLEANS = frozenset({"string", "empty", "floating", "integer", "mixed-integer-float", "decimal"})


def _category_codes(series: pd.Series, vocab: Sequence[Any]) -> np.ndarray:
    """Each value's position in ``vocab``, -1 where it is not in it. Integer vocabularies (engine
    model) accept 180, 180.0 and "180", compared as doubles so that no value (1e20, inf) has to fit
    an integer type; text is compared without its surrounding spaces."""
    index = _vocabulary_index(tuple(vocab))
    if vocab and isinstance(vocab[0], int):
        return index.get_indexer(_numbers(series))
    text = series.astype("string").str.strip()
    # What pd.Categorical(text, categories=vocab).codes computes (its codes are the categories'
    # get_indexer_for the values), without building and checking the categories on every call.
    return np.asarray(index.get_indexer(text), dtype=np.intp)


@functools.lru_cache(maxsize=256)
def _vocabulary_index(vocab: tuple[Any, ...]) -> pd.Index:
    """A vocabulary's pandas index, built once. Building it (and a Categorical's checks of its
    categories) took ~1 ms per column and call: 27 calls per scored part, 30 ms of a part's fixed
    cost, as much CPU as scoring 1,500 rows (docs/batch.md, "Issue 27, second round"). The two
    scoring threads share it: its hash table is filled here, before the index is handed out, so
    that they only read it (pandas fills it on first use, unguarded)."""
    index = pd.Index([float(v) for v in vocab]) if vocab and isinstance(vocab[0], int) else pd.Index(list(vocab))
    index.get_indexer(index[:1])
    return index
