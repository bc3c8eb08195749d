"""Turns feature rows into exactly what the CatBoost model consumes.

Training calls `prepare_model_input`; the serving path (`api.predictor`) is held equal to
it by tests, and computes the derived features with the same `derived_columns`, so the
scaling, the column order and the handling of missing values cannot differ between the two.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
# The texts `derived_columns` reads, in its argument order.
DERIVED_TEXTS = ("type_of_loan", "payment_behaviour")


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
    """The input columns of a model trained now: the declared features, then the derived
    ones if it uses them."""
    return MODEL_FEATURES + (DERIVED_FEATURES if derived else ())


def trained_columns(model: Any) -> tuple[str, ...]:
    """The input columns a trained model takes, in its order: the feature names it was
    trained with, which stay its own when features are declared later (the declared
    features for a model that names none)."""
    return tuple(getattr(model, "feature_names_", None) or MODEL_FEATURES)


def uses_derived_features(model: Any) -> bool:
    """Whether a trained model takes the derived features (its feature names say so)."""
    return bool(set(getattr(model, "feature_names_", None) or ()) & set(DERIVED_FEATURES))


def prepare_model_input(
    rows: pd.DataFrame,
    scalers: Mapping[str, RobustScaler],
    *,
    derived: bool = False,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The model features in model order: numerics scaled (NaN kept, CatBoost handles it),
    categories and texts as strings with explicit placeholders for missing values; with
    `derived`, the derived features after them (from the unscaled values).

    `columns` (a saved model's `trained_columns`) gives exactly those columns in that order
    instead: a model trained before a feature was declared scores without it."""
    if columns is None:
        columns = model_columns(derived)
    else:
        columns = tuple(columns)
        derived = bool(set(columns) & set(DERIVED_FEATURES))
        unknown = [
            name for name in columns if name not in MODEL_FEATURES and name not in DERIVED_FEATURES
        ]
        if unknown:
            raise KeyError(f"not declared features nor derived ones: {', '.join(unknown)}")
    inputs = [name for name in columns if name in MODEL_FEATURES]
    needed = [*inputs, *((*DERIVED_INPUTS, *DERIVED_TEXTS) if derived else ())]
    missing = [name for name in dict.fromkeys(needed) if name not in rows.columns]
    if missing:
        raise KeyError(f"feature rows lack columns: {', '.join(missing)}")
    absent_scalers = [name for name in inputs if name in NUMERIC_FEATURES and name not in scalers]
    if absent_scalers:
        raise KeyError(f"no scaler for numeric features: {', '.join(absent_scalers)}")

    prepared: dict[str, object] = {}
    for name in inputs:
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
            for name in DERIVED_TEXTS
        }
        prepared.update(derived_columns(numbers, *(texts[name] for name in DERIVED_TEXTS)))
    return pd.DataFrame(
        {name: prepared[name] for name in columns}, index=rows.index, columns=list(columns)
    )


def _strings(values: pd.Series, placeholder: str) -> np.ndarray:
    out = values.astype("object").where(values.notna(), placeholder).astype(str)
    out = out.where(out.str.strip() != "", placeholder)
    return out.to_numpy(dtype=object)
