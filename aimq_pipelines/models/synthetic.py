"""A seeded generator of realistic car listings with the schema of the original demo's files.

Prices are a product of plausible effects (group base price, engine, age, mileage, fuel, gearbox,
body, trim, options) with log-normal noise, so a model has something real to learn and the holdout
metrics mean something.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from aimq_serving import schema

BASE_PRICE = {"A": 900_000.0, "B": 1_300_000.0, "C": 1_900_000.0}
# Engine models offered per group (every group sells the engines the sample files use).
ENGINES = {
    "A": (120, 140, 160, 180, 200),
    "B": (140, 160, 180, 200, 220),
    "C": (180, 200, 220, 250, 300),
}

# (value, frequency, price factor)
FUEL = (
    ("Petrol", 0.42, 1.00),
    ("Diesel", 0.38, 1.06),
    ("Hybrid", 0.10, 1.14),
    ("Electric", 0.05, 1.22),
    ("LPG", 0.05, 0.86),
)
GEAR = (("Manual", 0.40, 1.00), ("Automatic", 0.52, 1.09), ("Semi-Automatic", 0.08, 1.04))
BODY = (
    ("Sedan Car", 0.35, 1.00),
    ("Hatchback", 0.25, 0.92),
    ("Station Wagon", 0.12, 1.03),
    ("SUV", 0.15, 1.18),
    ("Coupe", 0.05, 1.12),
    ("Convertible", 0.03, 1.20),
    ("MPV", 0.05, 0.97),
)
COLOR = (
    ("Black", 0.22, 1.01),
    ("White", 0.24, 1.01),
    ("Silver", 0.13, 1.00),
    ("Grey", 0.15, 1.00),
    ("Blue", 0.08, 0.99),
    ("Red", 0.07, 0.99),
    ("Green", 0.02, 0.96),
    ("Brown", 0.03, 0.97),
    ("Beige", 0.03, 0.97),
    ("Yellow", 0.03, 0.95),
)
LINE = (
    ("Base", 0.25, 0.93),
    ("Comfort", 0.30, 1.00),
    ("Elegance", 0.18, 1.06),
    ("Sportline", 0.17, 1.09),
    ("Premium", 0.10, 1.16),
)
CLIMATE = (
    ("None", 0.05, 0.93),
    ("Air Conditioning", 0.40, 1.00),
    ("Automatic Climate Control", 0.35, 1.03),
    ("Dual-Zone Climate Control", 0.20, 1.05),
)
DOORS_BY_BODY = {"Coupe": "2 to 3", "Convertible": "2 to 3"}
SEATS = (("1 to 3", 0.03, 0.98), ("4 to 5", 0.85, 1.00), ("6 to 7", 0.10, 1.04), ("8 or more", 0.02, 1.02))


def _pick(rng: np.random.Generator, table, n: int) -> tuple[np.ndarray, np.ndarray]:
    values = np.array([t[0] for t in table], dtype=object)
    probs = np.array([t[1] for t in table], dtype=float)
    factors = np.array([t[2] for t in table], dtype=float)
    idx = rng.choice(len(table), size=n, p=probs / probs.sum())
    return values[idx], factors[idx]


def generate_listings(group: str, rows: int, seed: int = 0) -> pd.DataFrame:
    """``rows`` listings of ``group``, identical for the same (group, rows, seed)."""
    if group not in schema.MODEL_GROUPS:
        raise ValueError(f"unknown model group {group!r}; expected one of {schema.MODEL_GROUPS}")
    rng = np.random.default_rng([seed, schema.MODEL_GROUPS.index(group)])
    n = rows

    engines = np.array(ENGINES[group])
    engine = rng.choice(
        engines, size=n, p=np.linspace(1.4, 0.6, len(engines)) / np.linspace(1.4, 0.6, len(engines)).sum()
    )
    age = np.minimum(rng.gamma(shape=2.0, scale=24.0, size=n), 300).astype(np.int64)
    # Mileage grows with age (about 15,000 km a year, with wide spread); new cars have a few km.
    km_per_month = rng.lognormal(mean=np.log(1250), sigma=0.45, size=n)
    kilometers = np.round(age * km_per_month + rng.integers(0, 3000, size=n), -2).astype(np.int64)

    fuel, f_fuel = _pick(rng, FUEL, n)
    gear, f_gear = _pick(rng, GEAR, n)
    body, f_body = _pick(rng, BODY, n)
    color, f_color = _pick(rng, COLOR, n)
    line, f_line = _pick(rng, LINE, n)
    climate, f_climate = _pick(rng, CLIMATE, n)
    seats, f_seats = _pick(rng, SEATS, n)
    doors = np.where(np.isin(body, list(DOORS_BY_BODY)), "2 to 3", np.where(rng.random(n) < 0.08, "2 to 3", "4 to 5"))
    f_doors = np.where(doors == "2 to 3", 0.97, 1.0)

    engine_factor = (engine / 180.0) ** 0.75
    # Depreciation: a steep first year, then about 9% a year; mileage costs more on older cars.
    depreciation = np.exp(-0.0075 * age) * np.where(age < 12, 1.0 - 0.008 * age, 0.904)
    mileage = np.exp(-kilometers / 400_000.0 * (1.0 + age / 240.0))
    # Automatic gearboxes hold value better on newer cars; electric cars lose value faster.
    gear_age = np.where(gear == "Automatic", 1.0 + 0.04 * np.exp(-age / 60.0), 1.0)
    electric_age = np.where(fuel == "Electric", np.exp(-0.002 * age), 1.0)
    noise = rng.lognormal(mean=0.0, sigma=0.04, size=n)

    price = (
        BASE_PRICE[group]
        * engine_factor
        * depreciation
        * mileage
        * f_fuel
        * f_gear
        * f_body
        * f_color
        * f_line
        * f_climate
        * f_seats
        * f_doors
        * gear_age
        * electric_age
        * noise
    )
    # Even a worn-out car sells for its parts and scrap.
    price = np.maximum(price, BASE_PRICE[group] * 0.04 * noise)
    frame = pd.DataFrame(
        {
            "model_group": group,
            "model": engine.astype(np.int64),
            "kilometers": kilometers,
            "fuel_type": fuel.astype(str),
            "gear_type": gear.astype(str),
            "vehicle_type": body.astype(str),
            "age_in_months": age,
            "color": color.astype(str),
            "line": line.astype(str),
            "doors": doors.astype(str),
            "seats": seats.astype(str),
            "climate": climate.astype(str),
            schema.TARGET: np.round(price, -2),
        }
    )
    return frame[list(schema.INPUT_COLUMNS) + [schema.TARGET]]


def sample_listings(rows: int, seed: int = 7) -> pd.DataFrame:
    """``rows`` listings to score, as users upload them: the 12 input columns, no price, groups A, B, C
    in turn (like the original demo's sample files). samples/ in the repository is made from this."""
    per_group = -(-rows // len(schema.MODEL_GROUPS))
    frames = [generate_listings(group, per_group, seed=seed) for group in schema.MODEL_GROUPS]
    order = [frame.iloc[i] for i in range(per_group) for frame in frames][:rows]
    return pd.DataFrame(order).reset_index(drop=True)[list(schema.INPUT_COLUMNS)]
