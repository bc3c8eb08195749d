"""A tiny real CatBoost model trained on the shared Kaggle sample, for tests that need a
model in the BentoML store (the API above all) without running the training pipeline.

It goes through the same seams as production: `fit_scalers` and `prepare_model_input`
for the input, `save_model_bundle` into the (test session's) BentoML store.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
from catboost import CatBoostClassifier

from credit_platform.features import (
    CATEGORICAL_FEATURES,
    INTEGER_FEATURES,
    MODEL_FEATURES,
    NUMERIC_FEATURES,
    TARGET,
    TEXT_FEATURES,
)
from credit_platform.model_input import Scalers, fit_scalers, prepare_model_input
from credit_platform.model_store import save_model_bundle

_HISTORY_AGE = re.compile(r"^\s*(\d+)\s+Years?\s+and\s+(\d+)\s+Months?\s*$")

# CatBoost's default text processing builds a bigram dictionary, which is empty for the
# one-token payment_behaviour values; a comma tokenizer with a word dictionary fits both.
TEXT_PROCESSING = {
    "tokenizers": [{"tokenizer_id": "Comma", "delimiter": ",", "lowercasing": "true"}],
    "dictionaries": [{"dictionary_id": "Word", "occurrence_lower_bound": "3", "gram_order": "1"}],
    "feature_processing": {
        "default": [
            {
                "dictionaries_names": ["Word"],
                "feature_calcers": ["BoW"],
                "tokenizers_names": ["Comma"],
            }
        ]
    },
}


def _history_months(value: Any) -> float:
    """ "21 Years and 5 Months" -> 257; anything else -> NaN (the model handles it)."""
    match = _HISTORY_AGE.match(str(value))
    return float(int(match[1]) * 12 + int(match[2])) if match else math.nan


def load_sample(path: Path, rows: int = 3000) -> pd.DataFrame:
    """The first `rows` rows: customer_id, the 22 features with numbers coerced, the label."""
    frame = pd.read_csv(path, nrows=rows)
    frame["credit_history_age"] = frame["credit_history_age"].map(_history_months)
    for name in NUMERIC_FEATURES:
        frame[name] = pd.to_numeric(frame[name], errors="coerce")
    for name in (*CATEGORICAL_FEATURES, *TEXT_FEATURES):
        frame[name] = frame[name].astype("object").where(frame[name].notna(), None)
    return frame[["customer_id", *MODEL_FEATURES, TARGET]].reset_index(drop=True)


def train_tiny_model(
    frame: pd.DataFrame, *, iterations: int = 20, depth: int = 4, seed: int = 0
) -> tuple[CatBoostClassifier, Scalers]:
    """A CatBoost model in seconds (iterations <= 30), with categorical and text features."""
    if iterations > 30:
        raise ValueError("the test model is meant to be tiny: at most 30 iterations")
    scalers = fit_scalers(frame)
    model = CatBoostClassifier(
        iterations=iterations,
        depth=depth,
        learning_rate=0.3,
        loss_function="MultiClassOneVsAll",
        cat_features=list(CATEGORICAL_FEATURES),
        text_features=list(TEXT_FEATURES),
        text_processing=TEXT_PROCESSING,
        random_seed=seed,
        thread_count=2,
        verbose=False,
        allow_writing_files=False,
    )
    model.fit(prepare_model_input(frame, scalers), frame[TARGET])
    return model, scalers


def save_tiny_model(
    frame: pd.DataFrame,
    *,
    partition: str = "2025-01-15",
    iterations: int = 20,
    depth: int = 4,
    seed: int = 0,
) -> str:
    """Train and save to the BentoML store; returns the tag."""
    model, scalers = train_tiny_model(frame, iterations=iterations, depth=depth, seed=seed)
    accuracy = float(
        (model.predict(prepare_model_input(frame, scalers)).ravel() == frame[TARGET]).mean()
    )
    return save_model_bundle(
        model,
        scalers,
        partition=partition,
        metrics={"train_accuracy": accuracy},
        params={"iterations": iterations, "depth": depth, "learning_rate": 0.3, "seed": seed},
        extra={"source": "credit_platform_tests.model_fixtures"},
    )


def request_payload(row: dict[str, Any]) -> dict[str, Any]:
    """A sample row as the JSON a client sends: ints as ints, gaps as null."""
    payload: dict[str, Any] = {"customer_id": str(row["customer_id"])}
    for name in MODEL_FEATURES:
        value = row[name]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            payload[name] = None
        elif name in INTEGER_FEATURES:
            payload[name] = int(value)
        elif name in NUMERIC_FEATURES:
            payload[name] = float(value)
        else:
            payload[name] = str(value)
    return payload


def valid_request_payloads(frame: pd.DataFrame, count: int) -> list[dict[str, Any]]:
    """The first `count` sample rows that pass the API's validation, as request JSON."""
    from pydantic import ValidationError

    from api.schemas import PredictionFeatures

    payloads = []
    for row in frame.to_dict(orient="records"):
        payload = request_payload(row)
        try:
            PredictionFeatures.model_validate(payload)
        except ValidationError:
            continue
        payloads.append(payload)
        if len(payloads) == count:
            return payloads
    raise ValueError(f"only {len(payloads)} sample rows pass the API validation, not {count}")
