"""The model being served: fast inference on validated rows, and a safe hot swap.

`Predictor` wraps one loaded `ModelBundle`. It turns feature rows into the model's input
without a pandas DataFrame, a column at a time: numbers outside their plausible range are
made missing by the data contract's rule, the one the loader applies for training
(`credit_platform.core.data_contract`), then scaled with numpy exactly as
`credit_platform.core.model_input.prepare_model_input` scales; each answer lists the
fields so repaired. A model trained with the derived features gets them from
`credit_platform.core.derived_features.derived_columns`, the function training uses.
One CatBoost call scores a whole list of rows, and `core.answers.AnswerRule` (the
rule batch scoring uses too) makes the answer: the label is the argmax of the class scores
plus the model's decision offsets (the prior correction, kept in its metadata), the
confidence the model's own calibrated probability of that label. A model without offsets
(or saved with its correction in its bias, before they were kept apart) answers the argmax
of `predict_proba` with its probability, as before. Tests hold this path equal to the
reference one, and to loading the same row.

`CoalescingScorer` gathers the single rows of concurrent /predict requests into one such
call on the worker's event loop; the service scores a large batch, and any rows with
reasons, on a thread off that loop instead.

`ServedModel` holds the current `Predictor` behind one reference. A reload loads the new
bundle and smoke-tests it on a fixed row before swapping that reference, so a request that
already picked up a predictor finishes on it, and a broken model never serves.
"""

from __future__ import annotations

import asyncio
import gc
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np

from credit_platform.core.answers import AnswerRule
from credit_platform.core.data_contract import make_implausible_missing
from credit_platform.core.derived_features import (
    DERIVED_FEATURES,
    DERIVED_INPUTS,
    derived_columns,
)
from credit_platform.core.features import (
    CATEGORICAL_FEATURES,
    FEATURES,
    LABELS,
    MODEL_FEATURES,
    NUMERIC_FEATURES,
)
from credit_platform.core.model_input import MISSING_CATEGORY, MISSING_TEXT
from credit_platform.core.model_store import (
    ModelBundle,
    ModelNotFound,
    load_model_bundle,
    normalize_tag,
)
from credit_platform.core.reasons import DEFAULT_REASONS, ReasonMap, explain_rows

# A plausible applicant every model must score before it may serve: each declared
# feature's example value (`core.features`).
SMOKE_ROW: dict[str, Any] = {feature.name: feature.example for feature in FEATURES}


# CatBoost scores on one thread: each worker process has a core of its own, and spreading
# a 1,000-row batch over threads cost 70% more CPU per row for the same answers.
CATBOOST_THREADS = 1


class ModelRefused(RuntimeError):
    """A model was loaded but cannot serve (it failed the smoke test)."""


@dataclass(frozen=True)
class Prediction:
    """A row's answer; `repaired` names the features scored as missing because their value
    was implausible (in model order; empty for most rows)."""

    label: str
    confidence: float
    repaired: tuple[str, ...] = ()
    # The reasons for the label, when asked for (`Predictor.explain`): the document
    # `RowExplanation.document` makes, as answered and logged.
    explanation: dict[str, Any] | None = None


class ModelInput(NamedTuple):
    """Rows as the model's input, and per row the features made missing on the way."""

    matrix: np.ndarray
    repaired: list[tuple[str, ...]]


def as_scored(features: dict[str, Any], prediction: Prediction) -> dict[str, Any]:
    """A row's features as the model scored them: its repaired features are null."""
    if not prediction.repaired:
        return features
    return {**features, **dict.fromkeys(prediction.repaired)}


def _text_value(value: Any, placeholder: str) -> str:
    """A categorical or text value; missing or blank becomes the model's placeholder."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return placeholder
    text = value if isinstance(value, str) else str(value)
    return text if text.strip() else placeholder


class Predictor:
    """One loaded model with its scalers; thread-safe for concurrent predictions."""

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle
        self.loaded_at = datetime.now(UTC)
        self.role = "champion"  # "shadow" or "canary" once attached as a challenger
        model = bundle.model
        # The model scores with the features it was trained on, in its own order: a feature
        # declared after it was trained is not among them and is left out of its input.
        feature_names = list(getattr(model, "feature_names_", None) or MODEL_FEATURES)
        derived = set(feature_names) - set(MODEL_FEATURES)
        unknown = sorted(derived - set(DERIVED_FEATURES))
        if unknown or derived not in (set(), set(DERIVED_FEATURES)):
            raise ModelRefused(
                f"{bundle.tag} expects features {feature_names}: "
                + (
                    f"{', '.join(unknown)} are neither declared features nor derived ones"
                    if unknown
                    else "some of the derived features but not all"
                )
            )
        model_numeric = [name for name in feature_names if name in NUMERIC_FEATURES]
        if derived and not set(DERIVED_INPUTS) <= set(model_numeric):
            raise ModelRefused(
                f"{bundle.tag} takes the derived features without all of their inputs "
                f"({', '.join(DERIVED_INPUTS)})"
            )
        missing = [name for name in model_numeric if name not in bundle.scalers]
        if missing:
            raise ModelRefused(f"{bundle.tag} has no scaler for: {', '.join(missing)}")
        # The input plan, mirroring `prepare_model_input`: numeric columns are scaled with the
        # trained RobustScalers in one numpy operation, the others get placeholders.
        self._width = len(feature_names)
        numeric = [
            (position, name)
            for position, name in enumerate(feature_names)
            if name in NUMERIC_FEATURES
        ]
        self._numeric_positions = [position for position, _ in numeric]
        self._numeric_names = tuple(name for _, name in numeric)
        self._centers = np.array(
            [float(bundle.scalers[name].center_[0]) for name in self._numeric_names]
        )
        self._scales = np.array(
            [float(bundle.scalers[name].scale_[0]) for name in self._numeric_names]
        )
        self._text_columns = [
            (position, name, MISSING_CATEGORY if name in CATEGORICAL_FEATURES else MISSING_TEXT)
            for position, name in enumerate(feature_names)
            if name in MODEL_FEATURES and name not in NUMERIC_FEATURES
        ]
        # Derived features (if the model was trained with them) come from the repaired,
        # unscaled numbers and the raw texts, through the function training uses.
        self._derived_positions = [
            (position, name) for position, name in enumerate(feature_names) if name in derived
        ]
        self._derived_inputs = [self._numeric_names.index(name) for name in DERIVED_INPUTS]
        unusable = [
            f"{name} (center {center}, scale {scale})"
            for name, center, scale in zip(
                self._numeric_names, self._centers, self._scales, strict=True
            )
            if not (math.isfinite(center) and math.isfinite(scale) and scale)
        ]
        if unusable:
            raise ModelRefused(
                f"{bundle.tag} has scalers that cannot scale (a zero or non-finite scale would "
                f"feed the model inf or NaN): {', '.join(unusable)}"
            )
        # Explanations: CatBoost's SHAP values need a Pool that says which columns are
        # categorical and text; the reason map sums derived columns into their reasons.
        self._feature_names = feature_names
        self._cat_positions = list(model.get_cat_feature_indices())
        self._text_positions = list(model.get_text_feature_indices())
        self._reason_map = ReasonMap(feature_names)
        self._ratio_positions = list(self._reason_map.ratio_positions.values())
        self._classes = [str(label) for label in model.classes_]
        self._class_names = np.asarray(self._classes, dtype=object)
        unknown = sorted(set(self._classes) - set(LABELS))
        if unknown:
            raise ModelRefused(f"{bundle.tag} predicts unknown labels {unknown}")
        try:
            self._rule = AnswerRule.of(model, bundle.metadata)
        except (KeyError, TypeError, ValueError) as error:
            raise ModelRefused(f"{bundle.tag} has unusable decision offsets: {error}") from error

    @property
    def tag(self) -> str:
        return self.bundle.tag

    def model_input(self, rows: Sequence[Mapping[str, Any]]) -> ModelInput:
        """Rows as the model's input: an object array in the model's column order. Numbers
        (None becomes NaN) are repaired and scaled for all rows at once: a Python call per
        value cost more than CatBoost itself on big batches."""
        count = len(rows)
        names = self._numeric_names
        numbers = np.array(
            [[row.get(name) for name in names] for row in rows], dtype="float64"
        ).reshape(count, len(names))
        made_missing = make_implausible_missing(names, numbers)
        matrix = np.empty((count, self._width), dtype=object)
        matrix[:, self._numeric_positions] = (numbers - self._centers) / self._scales
        for position, name, placeholder in self._text_columns:
            matrix[:, position] = [_text_value(row.get(name), placeholder) for row in rows]
        if self._derived_positions:
            columns = derived_columns(
                {
                    name: numbers[:, index]
                    for name, index in zip(DERIVED_INPUTS, self._derived_inputs, strict=True)
                },
                [row.get("type_of_loan") for row in rows],
                [row.get("payment_behaviour") for row in rows],
            )
            for position, name in self._derived_positions:
                matrix[:, position] = columns[name]
        return ModelInput(matrix, self._repaired_fields(made_missing))

    def _repaired_fields(self, made_missing: np.ndarray) -> list[tuple[str, ...]]:
        """Per row, the names of its numeric features made missing, in model order."""
        repaired: list[tuple[str, ...]] = [()] * len(made_missing)
        if made_missing.any():
            rows, columns = np.nonzero(made_missing)  # row-major: columns ascend in a row
            names = self._numeric_names
            grouped: dict[int, list[str]] = {}
            for row, column in zip(rows.tolist(), columns.tolist(), strict=True):
                grouped.setdefault(row, []).append(names[column])
            for row, fields in grouped.items():
                repaired[row] = tuple(fields)
        return repaired

    def encode(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return self.model_input(rows).matrix

    def _answer(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, answered class position) of the model's input rows."""
        return self._rule.answer(self.bundle.model, matrix, thread_count=CATBOOST_THREADS)

    def probabilities(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Every class's probability (the confidence's), in `model.classes_` order."""
        return self._answer(self.encode(rows))[0]

    def predict(self, rows: Sequence[Mapping[str, Any]]) -> list[Prediction]:
        """Label, confidence and repaired features per row, from one CatBoost call."""
        if not rows:
            return []
        prepared = self.model_input(rows)
        probabilities, answered = self._answer(prepared.matrix)
        labels = self._class_names[answered].tolist()
        confidence = probabilities[np.arange(len(answered)), answered].tolist()
        return [
            Prediction(label, value, repaired)
            for label, value, repaired in zip(labels, confidence, prepared.repaired, strict=True)
        ]

    def explain(
        self,
        rows: Sequence[Mapping[str, Any]],
        predictions: Sequence[Prediction],
        reasons: int = DEFAULT_REASONS,
    ) -> list[Prediction]:
        """The predictions with the reasons for their labels: CatBoost's own SHAP values of
        this model (the exact tree algorithm; the expected value holds the model's bias, and
        the label's decision offset is added to it), for each row's predicted class, summed
        into reasons (`core.reasons`), the top `reasons` shown: the base value and the
        contributions sum to the score the label was chosen on. One CatBoost call for all
        rows, on the calling thread (it releases the GIL); label and confidence are the ones
        given."""
        if not rows:
            return []
        from catboost import Pool

        prepared = self.model_input(rows)
        pool = Pool(
            prepared.matrix,
            cat_features=self._cat_positions,
            text_features=self._text_positions,
            feature_names=self._feature_names,
        )
        shap_values = self.bundle.model.get_feature_importance(
            pool, type="ShapValues", thread_count=CATBOOST_THREADS
        )
        class_index = np.array(
            [self._classes.index(prediction.label) for prediction in predictions], dtype=int
        )
        ratios = (
            prepared.matrix[:, self._ratio_positions].astype("float64")
            if self._ratio_positions
            else None
        )
        explained = explain_rows(
            self._reason_map,
            shap_values,
            class_index,
            [prediction.label for prediction in predictions],
            [
                as_scored(dict(row), prediction)
                for row, prediction in zip(rows, predictions, strict=True)
            ],
            ratios,
            self._rule.base_offsets(class_index),
        )
        return [
            Prediction(
                prediction.label,
                prediction.confidence,
                prediction.repaired,
                explanation.document(reasons),
            )
            for prediction, explanation in zip(predictions, explained, strict=True)
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

    def reload(
        self, tag: str | None = None, before_swap: Callable[[str], None] | None = None
    ) -> tuple[Predictor, Predictor]:
        """Load, smoke-test, then swap; returns (previous, new). Raises and keeps the old
        model on any failure, a failure of `before_swap(new tag)` included (the replicas'
        record is written there, so it never names a model this worker could not load).
        Concurrent reloads run one after the other."""
        with self._reload_lock:
            candidate = self._loader(tag)
            if before_swap is not None:
                before_swap(candidate.tag)
            previous = self._current
            self._current = candidate
        gc.collect()
        gc.freeze()
        return previous, candidate


class CoalescingScorer:
    """Scores the single rows of concurrent /predict requests in one model call.

    A CatBoost call costs about 100 µs before its first row, more than everything else a
    one-row request needs; under load, a worker's event loop wakes many requests in one
    iteration. Each request queues its row and waits; the first of an iteration schedules
    one model call for every row queued by the end of that iteration (`call_soon`), so a
    lone request waits for nothing, and a busy worker scores its requests in groups. All
    rows of a group are scored by the same predictor, returned with each answer.

    Runs on the event loop thread only (no locks): create it, and call `score`, there."""

    def __init__(self, served_model: ServedModel) -> None:
        self._served_model = served_model
        self._waiting: list[tuple[Mapping[str, Any], asyncio.Future]] = []
        self.groups = 0
        self.rows = 0

    async def score(self, features: Mapping[str, Any]) -> tuple[Predictor, Prediction]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._waiting.append((features, future))
        if len(self._waiting) == 1:
            loop.call_soon(self._score_waiting)
        return await future

    def _score_waiting(self) -> None:
        waiting, self._waiting = self._waiting, []
        predictor = self._served_model.current
        self.groups += 1
        self.rows += len(waiting)
        try:
            predictions = predictor.predict([features for features, _ in waiting])
        except Exception:
            # A row broke the group: score each alone, so only its own request fails.
            for features, future in waiting:
                try:
                    (prediction,) = predictor.predict([features])
                except Exception as error:
                    _settle(future, error=error)
                else:
                    _settle(future, result=(predictor, prediction))
            return
        for (_, future), prediction in zip(waiting, predictions, strict=True):
            _settle(future, result=(predictor, prediction))


def _settle(
    future: asyncio.Future, *, result: Any = None, error: BaseException | None = None
) -> None:
    if future.done():  # its request was cancelled (client gone)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
