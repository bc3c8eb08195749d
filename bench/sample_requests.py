"""Prediction requests built from the rows of a Kaggle-format CSV.

What the benchmarks send and the service's tests replay: a client's view of the API, held
to the service's own request schema. Not part of the Bento."""

from __future__ import annotations

import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from api.schemas import PredictionFeatures
from credit_platform.core.features import (
    CATEGORICAL_FEATURES,
    INTEGER_FEATURES,
    MODEL_FEATURES,
    NUMERIC_FEATURES,
    TARGET,
    TEXT_FEATURES,
)

_HISTORY_AGE = re.compile(r"^\s*(\d+)\s+Years?\s+and\s+(\d+)\s+Months?\s*$")


def _history_months(value: Any) -> float:
    """ "21 Years and 5 Months" -> 257; anything else -> NaN (the model handles it)."""
    match = _HISTORY_AGE.match(str(value))
    return float(int(match[1]) * 12 + int(match[2])) if match else math.nan


def load_sample(path: Path, rows: int = 3000) -> pd.DataFrame:
    """The first `rows` rows: customer_id, the model features with numbers coerced (a
    declared feature the file lacks is missing throughout), the label."""
    frame = pd.read_csv(path, nrows=rows)
    for name in MODEL_FEATURES:
        if name not in frame.columns:
            frame[name] = None
    frame["credit_history_age"] = frame["credit_history_age"].map(_history_months)
    for name in NUMERIC_FEATURES:
        frame[name] = pd.to_numeric(frame[name], errors="coerce")
    for name in (*CATEGORICAL_FEATURES, *TEXT_FEATURES):
        frame[name] = frame[name].astype("object").where(frame[name].notna(), None)
    return frame[["customer_id", *MODEL_FEATURES, TARGET]].reset_index(drop=True)


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


def log_row(payload: dict[str, Any], request_id: str, created_at: datetime):
    """The prediction log's row of an answered `payload`, as the service writes it."""
    from api.prediction_log import PredictionLogRow

    return PredictionLogRow(
        request_id=request_id,
        customer_id=payload["customer_id"],
        features={key: value for key, value in payload.items() if key != "customer_id"},
        prediction="Standard",
        confidence=0.61234,
        elapsed_ms=3.25,
        model_version="credit_score_classifier:abcdef123456",
        created_at=created_at,
        role="champion",
    )
