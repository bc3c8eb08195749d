"""Turns feature rows into exactly what the CatBoost model consumes.

Training calls `prepare_model_input`; the serving path (`api.predictor`) is held equal to
it by tests, and computes the derived features with the same `derived_columns`, so the
scaling, the column order and the handling of missing values cannot differ between the two.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.preprocessing import RobustScaler

from credit_platform.core.derived_features import (
    DERIVED_FEATURES,
    DERIVED_INPUTS,
    derived_columns,
)
from credit_platform.core.features import (
    CATEGORICAL_FEATURES,
    MODEL_FEATURES,
    NUMERIC_FEATURES,
)

# CatBoost rejects NaN in categorical and text columns; these stand in for "unknown".
MISSING_CATEGORY = "missing"
MISSING_TEXT = "none"

Scalers = dict[str, RobustScaler]


def fit_scalers(train: pd.DataFrame) -> Scalers:
    """One RobustScaler per numeric feature, fit on the given (training) rows only."""
    scalers: Scalers = {}
    for name in NUMERIC_FEATURES:
        column = pd.to_numeric(train[name], errors="coerce").astype("float64")
        if column.notna().sum() == 0:
            raise ValueError(f"cannot fit a scaler for {name!r}: every training value is missing")
        scalers[name] = RobustScaler().fit(column.to_frame())
    return scalers


def model_columns(derived: bool) -> tuple[str, ...]:
    """The model's input columns: the 22 features, then the derived ones if it uses them."""
    return MODEL_FEATURES + (DERIVED_FEATURES if derived else ())


def uses_derived_features(model: Any) -> bool:
    """Whether a trained model takes the derived features (its feature names say so)."""
    return bool(set(getattr(model, "feature_names_", None) or ()) & set(DERIVED_FEATURES))


def prepare_model_input(
    rows: pd.DataFrame, scalers: Mapping[str, RobustScaler], *, derived: bool = False
) -> pd.DataFrame:
    """The 22 model features in model order: numerics scaled (NaN kept, CatBoost handles it),
    categories and texts as strings with explicit placeholders for missing values; with
    `derived`, the derived features after them (from the unscaled values)."""
    missing = [name for name in MODEL_FEATURES if name not in rows.columns]
    if missing:
        raise KeyError(f"feature rows lack columns: {', '.join(missing)}")
    absent_scalers = [name for name in NUMERIC_FEATURES if name not in scalers]
    if absent_scalers:
        raise KeyError(f"no scaler for numeric features: {', '.join(absent_scalers)}")

    prepared: dict[str, object] = {}
    for name in MODEL_FEATURES:
        values = rows[name]
        if name in NUMERIC_FEATURES:
            scaler = scalers[name]
            numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64")
            prepared[name] = (numeric - scaler.center_[0]) / scaler.scale_[0]
        elif name in CATEGORICAL_FEATURES:
            prepared[name] = _strings(values, MISSING_CATEGORY)
        else:
            prepared[name] = _strings(values, MISSING_TEXT)
    if derived:
        numbers = {
            name: pd.to_numeric(rows[name], errors="coerce").to_numpy(dtype="float64")
            for name in DERIVED_INPUTS
        }
        texts = {
            name: rows[name].astype("object").where(rows[name].notna(), None).tolist()
            for name in ("type_of_loan", "payment_behaviour")
        }
        prepared.update(derived_columns(numbers, texts["type_of_loan"], texts["payment_behaviour"]))
    return pd.DataFrame(prepared, index=rows.index, columns=list(model_columns(derived)))


def _strings(values: pd.Series, placeholder: str) -> np.ndarray:
    out = values.astype("object").where(values.notna(), placeholder).astype(str)
    out = out.where(out.str.strip() != "", placeholder)
    return out.to_numpy(dtype=object)
