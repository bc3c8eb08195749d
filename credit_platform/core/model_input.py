"""Turns feature rows into exactly what the CatBoost model consumes.

Training and serving both call `prepare_model_input`, so the scaling, the column
order and the handling of missing values cannot differ between the two.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.preprocessing import RobustScaler

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


def prepare_model_input(rows: pd.DataFrame, scalers: Mapping[str, RobustScaler]) -> pd.DataFrame:
    """The 22 model features in model order: numerics scaled (NaN kept, CatBoost handles it),
    categories and texts as strings with explicit placeholders for missing values."""
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
    return pd.DataFrame(prepared, index=rows.index, columns=list(MODEL_FEATURES))


def _strings(values: pd.Series, placeholder: str) -> np.ndarray:
    out = values.astype("object").where(values.notna(), placeholder).astype(str)
    out = out.where(out.str.strip() != "", placeholder)
    return out.to_numpy(dtype=object)
