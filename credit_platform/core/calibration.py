"""Calibration of the classifier's probabilities: measure it, and fix it by temperature.

A lender reads a confidence of 0.3 as "three in ten". The expected calibration error (ECE)
measures how far that holds: rows are binned by their confidence (the probability the model
gives the class it answers), and each bin's mean confidence is compared with the share of
its rows answered right, weighted by the bin's rows. The answered class is not always the
most probable one: with a prior correction (`core.answers`) the label is the argmax of the
corrected scores while the confidence is the uncorrected probability of that label, so every
function here takes the answered class explicitly where it matters (`answered`), and the
ECE is always the one of what the API returns. The class-wise ECE does the same for every
class's probability (not only the answered one) and averages over the classes.

Temperature scaling divides the model's raw class scores by one number T fitted on rows the
model did not learn from (lowest log loss of its uncorrected probabilities). It is stored
in the CatBoost model itself (its scale and bias), so every copy of the model -- MLflow,
BentoML, the API, batch scoring -- gives the calibrated probabilities; the decision offsets
kept beside the model are divided by the same T (`Calibration.served_offsets`). Dividing
every score and offset by the same positive T never changes which class wins, so the
answered class, and every accuracy, stays exactly what it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from catboost import CatBoostClassifier, Pool
from scipy.optimize import minimize_scalar

CALIBRATION_BINS = 10
CALIBRATION_METHODS = ("temperature", "none")
# T is searched on a log scale within these bounds (a T at a bound is reported as such).
TEMPERATURE_BOUNDS = (0.05, 20.0)
# Losses whose probabilities are a softmax of the class scores; the one-vs-all loss gives a
# sigmoid of each class's score instead.
SOFTMAX_LOSSES = ("MultiClass",)
ONE_VS_ALL_LOSSES = ("MultiClassOneVsAll",)
_PROBABILITY_FLOOR = 1e-12


# --- measuring ---------------------------------------------------------------------------


def top_label(
    probabilities: np.ndarray,
    classes: Sequence[Any],
    truth: Sequence[Any],
    answered: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) per row as the API answers: the probability of the answered
    class (position in `classes`; the most probable one when `answered` is None) and whether
    that class is the true label."""
    probabilities = np.asarray(probabilities, dtype=float)
    names = np.asarray([str(label) for label in classes])
    best = probabilities.argmax(axis=1) if answered is None else np.asarray(answered, dtype=int)
    correct = names[best] == np.asarray(truth).astype(str)
    return probabilities[np.arange(len(best)), best], correct


def reliability_bins(
    confidence: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS
) -> list[dict[str, float]]:
    """Equal-width bins of [0, 1] (the last one closed): per bin its bounds, rows, mean
    confidence and share correct (None for an empty bin)."""
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    index = np.clip((confidence * bins).astype(int), 0, bins - 1)
    rows = []
    for position in range(bins):
        inside = index == position
        count = int(inside.sum())
        rows.append(
            {
                "lower": position / bins,
                "upper": (position + 1) / bins,
                "rows": count,
                "mean_confidence": float(confidence[inside].mean()) if count else None,
                "accuracy": float(correct[inside].mean()) if count else None,
            }
        )
    return rows


def ece_from_bins(bins: Sequence[dict[str, Any]]) -> float | None:
    """The rows-weighted mean gap between confidence and accuracy (None without rows)."""
    total = sum(item["rows"] for item in bins)
    if not total:
        return None
    return float(
        sum(
            item["rows"] * abs(item["mean_confidence"] - item["accuracy"])
            for item in bins
            if item["rows"]
        )
        / total
    )


def classwise_ece(
    probabilities: np.ndarray,
    classes: Sequence[Any],
    truth: Sequence[Any],
    bins: int = CALIBRATION_BINS,
) -> float | None:
    """The mean over classes of the ECE of that class's probability against whether the
    row is of that class (every probability the model gives, not only the top one)."""
    probabilities = np.asarray(probabilities, dtype=float)
    if not len(probabilities):
        return None
    truth = np.asarray(truth).astype(str)
    values = [
        ece_from_bins(reliability_bins(probabilities[:, k], truth == str(label), bins))
        for k, label in enumerate(classes)
    ]
    return float(np.mean(values))


@dataclass(frozen=True)
class CalibrationFigures:
    """How well a set of probabilities is calibrated on some rows."""

    rows: int
    ece: float | None
    classwise_ece: float | None
    log_loss: float | None
    bins: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibration_figures(
    probabilities: np.ndarray,
    classes: Sequence[Any],
    truth: Sequence[Any],
    bins: int = CALIBRATION_BINS,
    answered: np.ndarray | None = None,
) -> CalibrationFigures:
    """ECE (top label and class-wise), log loss of the true class (over normalised
    probabilities) and the reliability bins of `probabilities` against `truth`. The top-label
    figures are those of the `answered` class (see `top_label`)."""
    probabilities = np.asarray(probabilities, dtype=float)
    confidence, correct = top_label(probabilities, classes, truth, answered)
    names = [str(label) for label in classes]
    position = {name: k for k, name in enumerate(names)}
    truth_index = np.array([position.get(str(label), -1) for label in truth])
    known = truth_index >= 0
    loss = None
    if known.any():
        normalised = probabilities / probabilities.sum(axis=1, keepdims=True)
        chosen = normalised[np.flatnonzero(known), truth_index[known]]
        loss = float(-np.mean(np.log(np.clip(chosen, _PROBABILITY_FLOOR, 1.0))))
    reliability = reliability_bins(confidence, correct, bins)
    return CalibrationFigures(
        rows=len(probabilities),
        ece=ece_from_bins(reliability),
        classwise_ece=classwise_ece(probabilities, classes, truth, bins),
        log_loss=loss,
        bins=reliability,
    )


# --- temperature scaling -----------------------------------------------------------------


def probabilities_from_scores(scores: np.ndarray, loss_function: str) -> np.ndarray:
    """CatBoost's probabilities from raw class scores (scale and bias applied): a softmax
    for MultiClass, a sigmoid per class for MultiClassOneVsAll."""
    scores = np.asarray(scores, dtype=float)
    if loss_function in SOFTMAX_LOSSES:
        shifted = scores - scores.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)
    if loss_function in ONE_VS_ALL_LOSSES:
        return 1.0 / (1.0 + np.exp(-scores))
    raise ValueError(f"no calibration for the loss {loss_function!r}")


def raw_scores(model: CatBoostClassifier, pool: Pool) -> np.ndarray:
    """The model's raw class scores with its scale and bias (a temperature, and in models
    saved before the decision offsets were kept apart, the prior correction) applied."""
    return np.asarray(model.predict(pool, prediction_type="RawFormulaVal"), dtype=float)


def loss_function_of(model: CatBoostClassifier) -> str:
    return str(model.get_all_params()["loss_function"]).split(":")[0]


def _temperature_loss(scores: np.ndarray, truth_index: np.ndarray, loss_function: str) -> Any:
    """The model's own loss of the scores divided by T, as a function of log T."""
    rows = np.arange(len(truth_index))
    one_hot = np.zeros_like(scores)
    one_hot[rows, truth_index] = 1.0

    def loss(log_temperature: float) -> float:
        probabilities = probabilities_from_scores(scores / np.exp(log_temperature), loss_function)
        probabilities = np.clip(probabilities, _PROBABILITY_FLOOR, 1 - _PROBABILITY_FLOOR)
        if loss_function in SOFTMAX_LOSSES:
            return float(-np.mean(np.log(probabilities[rows, truth_index])))
        return float(
            -np.mean(
                np.sum(
                    one_hot * np.log(probabilities) + (1 - one_hot) * np.log(1 - probabilities),
                    axis=1,
                )
            )
        )

    return loss


def fit_temperature(
    scores: np.ndarray, classes: Sequence[Any], truth: Sequence[Any], loss_function: str
) -> float:
    """The T within TEMPERATURE_BOUNDS that minimises the model's loss (softmax log loss,
    or the one-vs-all binary log losses) of `scores / T` on these rows."""
    position = {str(label): k for k, label in enumerate(classes)}
    truth_index = np.array([position[str(label)] for label in truth])
    if not len(truth_index):
        raise ValueError("no rows to fit a temperature on")
    loss = _temperature_loss(np.asarray(scores, dtype=float), truth_index, loss_function)
    low, high = np.log(TEMPERATURE_BOUNDS[0]), np.log(TEMPERATURE_BOUNDS[1])
    found = minimize_scalar(loss, bounds=(low, high), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(found.x))


def apply_temperature(model: CatBoostClassifier, temperature: float) -> None:
    """Divide the model's class scores by `temperature`: its scale and its bias both, saved
    with the model. Decision offsets kept beside the model must be divided by it too
    (`Calibration.served_offsets`); then the answered class does not change."""
    if not temperature > 0 or not np.isfinite(temperature):
        raise ValueError(f"a temperature must be a positive number, not {temperature!r}")
    scale, bias = model.get_scale_and_bias()
    biases = list(bias) if isinstance(bias, Sequence) else [float(bias)] * len(model.classes_)
    model.set_scale_and_bias(scale / temperature, [value / temperature for value in biases])


@dataclass(frozen=True)
class Calibration:
    """What calibration decided for a model, and the figures behind the decision.

    `fitted_on` names the rows the temperature was fitted on and the model whose scores it
    saw. Every figure's top-label ECE is that of the class answered with the decision
    offsets (`offsets`, in the model's class order; the argmax of the corrected scores) and
    differs only in the probabilities: `before` and `after` are the model's own (uncorrected)
    probabilities without and with the temperature, `prior_corrected` the probabilities of
    the corrected scores, which models saved with the correction in their bias served (None
    without offsets), so a reader sees what keeping the two apart changed."""

    method: str
    applied: bool
    temperature: float
    reason: str
    fitted_on: str
    before: CalibrationFigures | None
    after: CalibrationFigures | None
    prior_corrected: CalibrationFigures | None
    offsets: tuple[float, ...] = ()

    def served_offsets(self, offsets: Sequence[float] | None = None) -> list[float]:
        """Decision offsets (by default the ones calibrated with) in the units of the served
        model's scores: divided by the temperature when it is applied, as the scores are."""
        values = np.asarray(self.offsets if offsets is None else offsets, dtype=float)
        return (values / (self.temperature if self.applied else 1.0)).tolist()

    def document(self) -> dict[str, Any]:
        def figures(item: CalibrationFigures | None) -> dict[str, Any] | None:
            return None if item is None else item.as_dict()

        return {
            "method": self.method,
            "applied": self.applied,
            "temperature": self.temperature,
            "reason": self.reason,
            "fitted_on": self.fitted_on,
            "decision_offsets": list(self.offsets),
            "before": figures(self.before),
            "after": figures(self.after),
            "prior_corrected": figures(self.prior_corrected),
        }


def calibrate_temperature(
    model: CatBoostClassifier,
    pool: Pool,
    truth: Sequence[Any],
    *,
    method: str = "temperature",
    offsets: Sequence[float] | None = None,
    fitted_on: str = "valid rows",
) -> Calibration:
    """Fit a temperature for `model` on the rows of `pool` (labels `truth`), which the model
    must not have been fit on, and decide whether to use it: it is applied only when it
    lowers the ECE of the served confidence on these rows (the log loss it minimises falls
    with it in practice, but a lender reads the ECE). Nothing is changed on `model`;
    `apply_temperature` does that.

    `offsets` are the decision offsets (the prior correction, in `classes_` order) kept
    beside `model`, whose bias must not hold them: they choose the answered class, the
    temperature is fitted on the uncorrected scores, whose probabilities are served."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(
            f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, not {method!r}"
        )
    loss_function = loss_function_of(model)
    classes = [str(label) for label in model.classes_]
    truth = [str(label) for label in truth]
    scores = raw_scores(model, pool)
    kept = tuple(float(value) for value in offsets) if offsets is not None else ()
    corrected = scores + np.asarray(kept, dtype=float) if any(kept) else scores
    answered = corrected.argmax(axis=1)

    def figures(probabilities: np.ndarray) -> CalibrationFigures:
        return calibration_figures(probabilities, classes, truth, answered=answered)

    before = figures(probabilities_from_scores(scores, loss_function))
    prior_corrected = (
        figures(probabilities_from_scores(corrected, loss_function)) if any(kept) else None
    )
    if method == "none":
        return Calibration(
            method, False, 1.0, "calibration is off", fitted_on, before, None, prior_corrected, kept
        )
    temperature = fit_temperature(scores, classes, truth, loss_function)
    after = figures(probabilities_from_scores(scores / temperature, loss_function))
    better = after.ece is not None and before.ece is not None and after.ece < before.ece
    reason = (
        f"temperature {temperature:.4f} fitted on the {fitted_on} "
        f"(ECE {before.ece:.4f} -> {after.ece:.4f}, log loss "
        f"{before.log_loss:.4f} -> {after.log_loss:.4f}): "
        + ("applied" if better else "not applied, it does not lower the ECE")
    )
    return Calibration(
        method, better, temperature, reason, fitted_on, before, after, prior_corrected, kept
    )
