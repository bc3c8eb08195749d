"""From a model's class scores to an answer: the label, and the confidence given with it.

The `tuned` preset adds a prior correction to the class scores (`training.class_offsets`)
so that the rarer classes are answered more often. That correction is a decision rule, not
a better probability: softmax of the corrected scores is measurably worse calibrated than
the model's own. So the two are kept apart:

- the **label** is the class with the highest corrected score, argmax(scores + offsets);
- the **confidence** is the model's own probability of that label, from the scores alone
  (with the temperature, which is stored in the model: see `core.calibration`).

The offsets are saved beside the model, in its BentoML metadata under `OFFSETS_KEY`, in the
units of the saved model's raw scores (already divided by the temperature). A model saved
before this rule carries its correction inside its bias and no offsets in its metadata: it
is answered as it always was, with the argmax of `predict_proba` and that probability.

`AnswerRule.answer` is the one place that turns a model's output into answers; the API's
`Predictor`, batch scoring and the fairness check all go through it. It asks CatBoost once
(raw scores, or the probabilities for a model without offsets) and does the rest in numpy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from credit_platform.core.calibration import (
    CalibrationFigures,
    calibration_figures,
    loss_function_of,
    probabilities_from_scores,
    raw_scores,
)

OFFSETS_KEY = "decision_offsets"


def offsets_document(classes: Sequence[Any], offsets: Sequence[float] | None) -> dict | None:
    """The metadata entry of the decision offsets (None when there are none, or all zero):
    the classes they belong to and one offset per class, in that order."""
    if offsets is None or not any(offsets):
        return None
    names = [str(label) for label in classes]
    if len(names) != len(offsets):
        raise ValueError(f"{len(offsets)} decision offsets for {len(names)} classes")
    return {"classes": names, "offsets": [float(value) for value in offsets]}


def offsets_from_metadata(metadata: Mapping[str, Any], classes: Sequence[Any]) -> np.ndarray | None:
    """The decision offsets a model's metadata holds, in the order of `classes` (the model's
    `classes_`); None when it holds none (a model without a correction, or one saved with
    the correction in its bias). Offsets naming other classes than the model's are refused."""
    document = metadata.get(OFFSETS_KEY)
    if not document:
        return None
    names = [str(label) for label in classes]
    stored = dict(zip(document["classes"], document["offsets"], strict=True))
    if sorted(stored) != sorted(names):
        raise ValueError(
            f"the decision offsets are for the classes {sorted(stored)}, "
            f"the model predicts {sorted(names)}"
        )
    values = np.array([float(stored[name]) for name in names], dtype="float64")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"the decision offsets must be finite numbers, not {values.tolist()}")
    return values if values.any() else None


@dataclass(frozen=True)
class AnswerRule:
    """How one model's scores become answers: `offsets` (model class order) or None."""

    loss_function: str
    offsets: np.ndarray | None = None

    @classmethod
    def of(cls, model: Any, metadata: Mapping[str, Any] | None = None) -> AnswerRule:
        """The rule of a model with its metadata (read once: the loss function is looked up
        in the model's parameters, which is slow)."""
        offsets = offsets_from_metadata(metadata or {}, model.classes_)
        return cls(loss_function_of(model) if offsets is not None else "", offsets)

    def answer(
        self, model: Any, data: Any, thread_count: int = -1
    ) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, answered) for the rows of `data`: every class's probability, in
        the model's class order, and per row the position of the answered class."""
        if self.offsets is None:
            probabilities = np.asarray(
                model.predict_proba(data, thread_count=thread_count), dtype="float64"
            )
            return probabilities, probabilities.argmax(axis=1)
        scores = np.asarray(
            model.predict(data, prediction_type="RawFormulaVal", thread_count=thread_count),
            dtype="float64",
        )
        if scores.ndim == 1:  # one row
            scores = scores.reshape(1, -1)
        probabilities = probabilities_from_scores(scores, self.loss_function)
        return probabilities, (scores + self.offsets).argmax(axis=1)

    def base_offsets(self, class_index: np.ndarray) -> np.ndarray | None:
        """Per row, the offset of the class given (what an explanation adds to the model's
        expected value so the sum is the score the class was chosen on); None without."""
        if self.offsets is None:
            return None
        return self.offsets[np.asarray(class_index, dtype=int)]


def answered_labels(model: Any, metadata: Mapping[str, Any] | None, data: Any) -> np.ndarray:
    """The class names a model with this metadata answers for the rows of `data`."""
    _, answered = AnswerRule.of(model, metadata).answer(model, data)
    return np.asarray([str(label) for label in model.classes_])[answered]


def answer_figures(
    model: Any, data: Any, truth: Sequence[Any], offsets: Sequence[float] | None = None
) -> tuple[CalibrationFigures, CalibrationFigures | None]:
    """Calibration figures, on rows with labels `truth`, of what `model` with decision
    `offsets` (model class order, in its score units) answers -- the label and its
    confidence -- and of the probabilities of the corrected scores for the same labels, as a
    model holding the correction in its bias gave them (None without offsets)."""
    rule = AnswerRule.of(model, {OFFSETS_KEY: offsets_document(model.classes_, offsets)})
    probabilities, answered = rule.answer(model, data)
    classes = [str(label) for label in model.classes_]
    truth = [str(label) for label in truth]
    served = calibration_figures(probabilities, classes, truth, answered=answered)
    if rule.offsets is None:
        return served, None
    corrected = probabilities_from_scores(
        raw_scores(model, data) + rule.offsets, rule.loss_function
    )
    return served, calibration_figures(corrected, classes, truth, answered=answered)
