"""The model being served: fast inference on validated rows, and a safe hot swap.

`Predictor` wraps one loaded `ModelBundle`. It turns feature rows into the model's input
without a pandas DataFrame, a column at a time (numbers scaled with numpy exactly as
`credit_platform.model_input.prepare_model_input` scales), and calls CatBoost's
`predict_proba` once per request on the calling thread: the label is the argmax over
`model.classes_`, the confidence its probability. A test holds this path equal to the
reference one.

`ServedModel` holds the current `Predictor` behind one reference. A reload loads the new
bundle and smoke-tests it on a fixed row before swapping that reference, so a request that
already picked up a predictor finishes on it, and a broken model never serves.
"""

from __future__ import annotations

import gc
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from credit_platform.features import (
    CATEGORICAL_FEATURES,
    LABELS,
    MODEL_FEATURES,
    NUMERIC_FEATURES,
)
from credit_platform.model_input import MISSING_CATEGORY, MISSING_TEXT
from credit_platform.model_store import ModelBundle, load_model_bundle
from credit_platform.settings import MODEL_NAME

# A plausible applicant every model must score before it may serve.
SMOKE_ROW: dict[str, Any] = {
    "age": 35,
    "occupation": "Scientist",
    "annual_income": 42_000.0,
    "monthly_inhand_salary": 3_400.0,
    "num_bank_accounts": 4,
    "num_credit_card": 4,
    "interest_rate": 11,
    "num_of_loan": 2,
    "type_of_loan": "Auto Loan, and Personal Loan",
    "delay_from_due_date": 12,
    "num_of_delayed_payment": 8,
    "changed_credit_limit": 6.5,
    "num_credit_inquiries": 4,
    "credit_mix": "Standard",
    "outstanding_debt": 1_250.0,
    "credit_utilization_ratio": 31.5,
    "credit_history_age": 220,
    "payment_of_min_amount": "No",
    "total_emi_per_month": 80.0,
    "amount_invested_monthly": 150.0,
    "payment_behaviour": "Low_spent_Small_value_payments",
    "monthly_balance": 320.0,
}


# CatBoost scores on one thread: each worker process has a core of its own, and spreading
# a 1,000-row batch over threads cost 70% more CPU per row for the same answers.
CATBOOST_THREADS = 1


class ModelRefused(RuntimeError):
    """A model was loaded but cannot serve (it failed the smoke test)."""


class ModelNotFound(LookupError):
    """No model with the requested tag is in the BentoML store."""


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float


@dataclass(frozen=True)
class _NumericColumn:
    """A numeric feature: float (None becomes NaN), then the trained RobustScaler's shift."""

    name: str
    center: float
    scale: float

    def encode(self, values: list[Any]) -> np.ndarray:
        return (np.array(values, dtype="float64") - self.center) / self.scale


@dataclass(frozen=True)
class _StringColumn:
    """A categorical or text feature: missing or blank values become the placeholder the
    model was trained with."""

    name: str
    placeholder: str

    def encode(self, values: list[Any]) -> list[str]:
        placeholder = self.placeholder
        encoded = []
        for value in values:
            if value is None or (isinstance(value, float) and math.isnan(value)):
                encoded.append(placeholder)
            else:
                text = value if isinstance(value, str) else str(value)
                encoded.append(text if text.strip() else placeholder)
        return encoded


def _column(name: str, scalers: Mapping[str, Any]) -> _NumericColumn | _StringColumn:
    """How one raw feature becomes a model column, mirroring `prepare_model_input`."""
    if name in NUMERIC_FEATURES:
        scaler = scalers[name]
        return _NumericColumn(name, float(scaler.center_[0]), float(scaler.scale_[0]))
    return _StringColumn(name, MISSING_CATEGORY if name in CATEGORICAL_FEATURES else MISSING_TEXT)


class Predictor:
    """One loaded model with its scalers; thread-safe for concurrent predictions."""

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle
        self.loaded_at = datetime.now(UTC)
        model = bundle.model
        feature_names = list(getattr(model, "feature_names_", None) or MODEL_FEATURES)
        if sorted(feature_names) != sorted(MODEL_FEATURES):
            raise ModelRefused(
                f"{bundle.tag} expects features {feature_names}, not the 22 model features"
            )
        missing = [name for name in NUMERIC_FEATURES if name not in bundle.scalers]
        if missing:
            raise ModelRefused(f"{bundle.tag} has no scaler for: {', '.join(missing)}")
        self._columns = [_column(name, bundle.scalers) for name in feature_names]
        unusable = [
            f"{column.name} (center {column.center}, scale {column.scale})"
            for column in self._columns
            if isinstance(column, _NumericColumn)
            and not (math.isfinite(column.center) and math.isfinite(column.scale) and column.scale)
        ]
        if unusable:
            raise ModelRefused(
                f"{bundle.tag} has scalers that cannot scale (a zero or non-finite scale would "
                f"feed the model inf or NaN): {', '.join(unusable)}"
            )
        self._classes = [str(label) for label in model.classes_]
        unknown = sorted(set(self._classes) - set(LABELS))
        if unknown:
            raise ModelRefused(f"{bundle.tag} predicts unknown labels {unknown}")

    @property
    def tag(self) -> str:
        return self.bundle.tag

    def encode(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Rows as the model's input: an object array in the model's column order, built a
        column at a time (a Python call per value cost more than CatBoost itself)."""
        matrix = np.empty((len(rows), len(self._columns)), dtype=object)
        for position, column in enumerate(self._columns):
            name = column.name
            matrix[:, position] = column.encode([row.get(name) for row in rows])
        return matrix

    def probabilities(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return np.asarray(
            self.bundle.model.predict_proba(self.encode(rows), thread_count=CATBOOST_THREADS),
            dtype="float64",
        )

    def predict(self, rows: Sequence[Mapping[str, Any]]) -> list[Prediction]:
        """Label and confidence per row, from one predict_proba call."""
        if not rows:
            return []
        probabilities = self.probabilities(rows)
        best = probabilities.argmax(axis=1)
        return [
            Prediction(self._classes[index], float(probabilities[row, index]))
            for row, index in enumerate(best)
        ]

    def smoke_test(self) -> None:
        """Refuse a model that cannot score SMOKE_ROW with one probability per class in [0, 1]
        (one-vs-all models need not sum to 1)."""
        try:
            probabilities = self.probabilities([SMOKE_ROW])
        except Exception as error:
            raise ModelRefused(f"{self.tag} failed the smoke prediction: {error}") from error
        if probabilities.shape != (1, len(self._classes)) or not (
            np.all(np.isfinite(probabilities))
            and np.all((probabilities >= 0) & (probabilities <= 1))
        ):
            raise ModelRefused(
                f"{self.tag} gave no valid probabilities on the smoke row: {probabilities}"
            )

    def metadata(self) -> dict[str, Any]:
        metadata = self.bundle.metadata
        return {
            "model_name": self.tag.split(":", 1)[0],
            "model_version": self.tag,
            "params": dict(metadata.get("params") or {}),
            "metrics": dict(metadata.get("metrics") or {}),
            "partition": metadata.get("partition"),
            "creation_time": self.bundle.creation_time.isoformat(),
            "loaded_at": self.loaded_at.isoformat(),
        }


def normalize_tag(tag: str | None) -> str:
    """ "v1", "credit_score_classifier:v1", "latest" or None -> a full tag of our model."""
    if tag is None or not tag.strip() or tag.strip() == "latest":
        return f"{MODEL_NAME}:latest"
    tag = tag.strip()
    if ":" not in tag:
        return f"{MODEL_NAME}:{tag}"
    name = tag.split(":", 1)[0]
    if name != MODEL_NAME:
        raise ModelNotFound(f"this service serves {MODEL_NAME} models, not {name!r}")
    return tag


def load_predictor(tag: str | None) -> Predictor:
    """Load and smoke-test a model from the BentoML store (never the request path)."""
    from bentoml.exceptions import NotFound

    full_tag = normalize_tag(tag)
    try:
        bundle = load_model_bundle(full_tag)
    except NotFound as error:
        raise ModelNotFound(f"no model {full_tag} in the BentoML store") from error
    except ValueError as error:  # a malformed tag
        raise ModelNotFound(f"{full_tag!r} is not a valid model tag: {error}") from error
    except Exception as error:  # unreadable files, no scalers saved with it, ...
        raise ModelRefused(f"cannot load {full_tag}: {error!r}") from error
    predictor = Predictor(bundle)
    predictor.smoke_test()
    return predictor


class ServedModel:
    """The predictor in service. Readers take `current` once per request; reloads swap it."""

    def __init__(
        self, initial: Predictor, loader: Callable[[str | None], Predictor] = load_predictor
    ) -> None:
        self._current = initial
        self._loader = loader
        self._reload_lock = threading.Lock()

    @property
    def current(self) -> Predictor:
        return self._current

    def reload(self, tag: str | None = None) -> tuple[Predictor, Predictor]:
        """Load, smoke-test, then swap; returns (previous, new). Raises and keeps the old
        model on any failure. Concurrent reloads run one after the other."""
        with self._reload_lock:
            candidate = self._loader(tag)
            previous = self._current
            self._current = candidate
        gc.collect()
        gc.freeze()
        return previous, candidate
