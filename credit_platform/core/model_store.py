"""Saving and loading trained models in the BentoML store, where training meets serving.

A saved `credit_score_classifier` carries everything the service needs: the CatBoost
model, the scalers fit with it (custom object), and metadata naming its training
partition, test metrics (accuracy, macro F1, per-label recall, confusion matrix), the
chosen trial's validation metrics, params and MLflow run. The service never reads a
date-named folder. The decision offsets of a model trained with a prior correction are
there too (`core.answers.OFFSETS_KEY`): the label is chosen with them, the confidence is the
model's own probability; a model saved before they were kept apart has none (its bias holds
the correction) and is answered as it always was. Monitoring finds there the drift
reference (`DRIFT_REFERENCE_KEY`): the distributions of the model's own training rows,
fixed when it was trained, so the drift of a model on a day does not depend on what arrived
in the source tables since.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from catboost import CatBoostClassifier

from credit_platform.core.answers import OFFSETS_KEY, offsets_document
from credit_platform.core.model_input import Scalers
from credit_platform.core.settings import MODEL_NAME, export_bentoml_home

SCALERS_KEY = "scalers"
PARTITION_LABEL = "partition"
CONFUSION_KEY = "test_confusion_matrix"
DRIFT_REFERENCE_KEY = "drift_reference"
# What a model's metadata must report to be judged or deployed.
REQUIRED_TEST_METRICS = ("test_accuracy", "test_macro_f1")


@dataclass(frozen=True)
class ModelBundle:
    """A loaded model with the scalers trained with it and what is known about it."""

    tag: str
    model: CatBoostClassifier
    scalers: Scalers
    metadata: dict[str, Any]
    creation_time: datetime  # timezone-aware UTC, as BentoML records it

    @property
    def version(self) -> str:
        return self.tag.split(":", 1)[1]

    @property
    def partition(self) -> str | None:
        return self.metadata.get("partition")


def save_model_bundle(
    model: CatBoostClassifier,
    scalers: Scalers,
    *,
    partition: str,
    metrics: dict[str, float],
    params: dict[str, Any],
    confusion: dict[str, Any] | None = None,
    validation_metrics: dict[str, float] | None = None,
    drift_reference: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    decision_offsets: Sequence[float] | None = None,
) -> str:
    """Save the model with its scalers; returns the tag "credit_score_classifier:<version>".

    `metrics` are the test metrics ("test_accuracy", ...); the confusion matrix goes beside
    them as "test_confusion_matrix", so whatever reports the metrics reports it too.
    `drift_reference` (plain JSON, `core.monitoring.profile_document`) is stored in the
    metadata under DRIFT_REFERENCE_KEY, readable without loading the model.
    `decision_offsets` (model class order, in the units of the saved model's raw scores)
    are stored under `OFFSETS_KEY`."""
    export_bentoml_home()
    import bentoml

    metadata: dict[str, Any] = {
        "partition": partition,
        "metrics": {
            **{name: float(value) for name, value in metrics.items()},
            **({CONFUSION_KEY: confusion} if confusion is not None else {}),
        },
        "validation_metrics": {
            name: float(value) for name, value in (validation_metrics or {}).items()
        },
        "params": {name: _plain(value) for name, value in params.items()},
        "classes": [str(label) for label in model.classes_],
        **({DRIFT_REFERENCE_KEY: drift_reference} if drift_reference is not None else {}),
        **(extra or {}),
    }
    offsets = offsets_document(model.classes_, decision_offsets)
    if offsets is not None:
        metadata[OFFSETS_KEY] = offsets
    saved = bentoml.catboost.save_model(
        MODEL_NAME,
        model,
        labels={PARTITION_LABEL: partition},
        metadata=metadata,
        custom_objects={SCALERS_KEY: scalers},
        signatures={"predict_proba": {"batchable": False}},
    )
    return str(saved.tag)


class ModelNotFound(LookupError):
    """No model with the requested tag is in the BentoML store."""


def missing_test_metrics(metadata: dict[str, Any]) -> list[str]:
    """The required test metrics a model's metadata lacks (empty when it has them all)."""
    metrics = metadata.get("metrics") or {}
    return [name for name in REQUIRED_TEST_METRICS if type(metrics.get(name)) not in (int, float)]


def model_metadata(tag: str) -> dict[str, Any]:
    """A saved model's metadata without loading the model; ModelNotFound for an unknown tag."""
    export_bentoml_home()
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        return dict(bentoml.models.get(normalize_tag(tag)).info.metadata)
    except NotFound as error:
        raise ModelNotFound(f"no model {tag!r} in the BentoML store: {error}") from error


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


def load_model_bundle(tag: str = f"{MODEL_NAME}:latest") -> ModelBundle:
    """Load a saved model and its scalers by tag (default: the newest)."""
    export_bentoml_home()
    import bentoml

    if ":" not in tag:
        tag = f"{MODEL_NAME}:{tag}"
    stored = bentoml.models.get(tag)
    model = bentoml.catboost.load_model(stored)
    scalers = stored.custom_objects[SCALERS_KEY]
    return ModelBundle(
        tag=str(stored.tag),
        model=model,
        scalers=scalers,
        metadata=dict(stored.info.metadata),
        creation_time=stored.info.creation_time,
    )


def saved_models() -> list[Any]:
    """Every saved model of our name (BentoML `Model` objects), in no particular order."""
    export_bentoml_home()
    import bentoml

    try:
        return bentoml.models.list(MODEL_NAME)
    except bentoml.exceptions.NotFound:  # nothing saved under the name yet
        return []


def list_model_tags() -> list[str]:
    """Every saved model tag, newest first."""
    stored = saved_models()
    stored.sort(key=lambda item: item.info.creation_time, reverse=True)
    return [str(item.tag) for item in stored]


def _plain(value: Any) -> Any:
    """BentoML metadata accepts plain types only (numpy scalars are rejected)."""
    if hasattr(value, "item"):
        return value.item()
    return value
