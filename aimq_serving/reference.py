"""Where a model is guessing: each numeric input's range in the rows the model was fitted on.

Computed once at training (``Reference.fit`` over the fitted rows) and stored, signed, with the
version (the ``reference`` artifact), like the calibration. A row whose value of a numeric feature
lies below that feature's training minimum or above its maximum is flagged with the feature's name
(``out_of_range``): it is still priced, but the trees extrapolate there, flat from the last split.

Why the plain observed minimum and maximum, not a robust range (1st-99th percentile, say): "outside
the training data" means to a user that no training row had such a value, which is exactly this; a
percentile range would flag 2 % of ordinary rows, and the tails it leaves out are still data the
model fitted. The categories need no flag: each version's feature spec holds only its training
categories, so an unseen one is refused (a 422 online, a rejected row in batch).

Per loaded version the bounds are kept as Python tuples for one record (two comparisons per numeric
feature) and as arrays for a batch (one vectorised comparison, then one lookup of the joined names
per row through its bit pattern of flagged fields).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

NO_REFERENCE = "this model version was stored before out-of-range flags (issue 25); retrain to get them"
# How a batch result names a row's flagged fields in one cell.
SEPARATOR = ", "


@dataclass(frozen=True)
class Reference:
    numeric: dict[str, tuple[float, float]]  # feature -> (min, max) over the fitted rows
    rows: int  # how many rows the bounds were taken from
    # (name, min, max) per feature, for one record.
    _bounds: tuple[tuple[str, float, float], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_bounds", tuple((n, lo, hi) for n, (lo, hi) in self.numeric.items()))

    @classmethod
    def fit(cls, columns: Sequence[str], features: np.ndarray, names: Sequence[str]) -> Reference:
        """The bounds of ``names`` (numeric features) over ``features`` (columns in ``columns`` order)."""
        numeric = {}
        for name in names:
            values = features[:, columns.index(name)]
            numeric[name] = (float(values.min()), float(values.max()))
        return cls(numeric, int(len(features)))

    def outside(self, record: Mapping[str, Any]) -> list[str]:
        """The numeric fields of one record that lie outside the training rows' range."""
        return [name for name, lo, hi in self._bounds if not lo <= record[name] <= hi]

    def flags(self, columns: Sequence[str]) -> Flags:
        """The batch form over an encoded matrix whose columns are ``columns``."""
        return Flags(self, columns)

    def to_json(self) -> bytes:
        body = {"method": "observed_min_max", "rows": self.rows, "numeric": self.numeric}
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Reference:
        body = json.loads(raw)
        return cls({k: (float(v[0]), float(v[1])) for k, v in body["numeric"].items()}, int(body["rows"]))


class Flags:
    """``Reference.outside`` for every row of an encoded matrix at once, names joined per row."""

    def __init__(self, reference: Reference, columns: Sequence[str]):
        names = list(reference.numeric)
        self._index = [list(columns).index(n) for n in names]
        self._low = np.array([reference.numeric[n][0] for n in names])
        self._high = np.array([reference.numeric[n][1] for n in names])
        self._bits = 1 << np.arange(len(names))
        # The cell of each combination of flagged fields, in the features' order; None: none flagged.
        self._cells = np.array(
            [
                SEPARATOR.join(n for k, n in enumerate(names) if code >> k & 1) or None
                for code in range(1 << len(names))
            ],
            dtype=object,
        )

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        """Per row of ``matrix``: its flagged fields joined by ``SEPARATOR``, or None."""
        values = matrix[:, self._index].astype(np.float64)
        outside = (values < self._low) | (values > self._high)
        return self._cells[outside.astype(np.int64) @ self._bits]
