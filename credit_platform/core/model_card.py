"""The model card of a trained model: one markdown page a model validator reads first.

It says what data the model learnt from (window, rows and customers per side, how they were
split), how well it does overall and per segment of customers, how far its probabilities
can be trusted (calibration), what drives its answers (mean |SHAP| per feature), how it was
trained (preset and parameters), and what it is for and not for. Built from figures the
training run has already computed; nothing here scores the model again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from credit_platform.core.calibration import Calibration, CalibrationFigures
from credit_platform.core.fairness import FairnessPolicy, describe_findings, segment_markdown
from credit_platform.core.features import LABELS

INTENDED_USE = (
    "Scores a customer's credit standing as Good, Standard or Poor from the input features of "
    "the feature store (`POST /predict`), with `confidence`, the probability of the answered "
    "class. It supports a credit officer's decision and the platform's batch scores; it is "
    "not meant to decide alone on credit, and not for customers or products unlike those of "
    "the training window."
)
KNOWN_LIMITS = (
    "Labels are the institution's past grades, not observed defaults: the model learns how "
    "customers were graded, biases included.",
    "The window is one month: seasonal or economic change outside it is not seen; "
    "`model_monitoring` watches drift, live accuracy and live calibration for that.",
    "Age and occupation are model features; the segment table shows how outcomes differ "
    "by them, and a flagged segment needs a human review before the model is used for it.",
    "Segments with fewer rows than the policy's minimum are reported but not judged: their "
    "figures are noisy.",
    "Calibration is one temperature fitted on the valid rows of the chosen trial; with the "
    "refit on train + valid rows it is carried over to the refit model, whose test-row "
    "figures show whether it holds. The prior correction only chooses the label (decision "
    "offsets beside the model): the confidence is the model's own probability of that "
    "label, so when the correction chose a rarer class it can be below another class's "
    "probability.",
)


@dataclass(frozen=True)
class ModelCardFacts:
    """Everything the card reports, gathered by the training asset."""

    model_tag: str
    partition: str
    mlflow_model_version: str
    window: tuple[str, str]
    split_rows: Mapping[str, int]
    split_customers: Mapping[str, int]
    split_method: str
    metrics: Mapping[str, float]
    validation_metrics: Mapping[str, float]
    confusion_markdown: str
    calibration: Calibration
    test_before: CalibrationFigures
    test_after: CalibrationFigures
    segments: Sequence[Mapping[str, Any]]
    policy: FairnessPolicy
    shap_top: Sequence[tuple[str, float]]
    preset: str
    params: Mapping[str, Any]
    limits: Sequence[str] = field(default_factory=lambda: list(KNOWN_LIMITS))


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(_fmt(cell) for cell in row) + " |" for row in rows]
    return lines


def model_card_markdown(facts: ModelCardFacts) -> str:
    calibration = facts.calibration
    lines = [
        f"# Model card: `{facts.model_tag}`",
        "",
        f"CatBoost credit-score classifier trained on partition {facts.partition} "
        f"(MLflow model version {facts.mlflow_model_version}).",
        "",
        "## Data",
        "",
        f"Labelled rows dated {facts.window[0]} .. {facts.window[1]}, split {facts.split_method}.",
        "",
        *_table(
            ["side", "rows", "customers", "used for"],
            [
                [
                    "train",
                    facts.split_rows.get("train"),
                    facts.split_customers.get("train"),
                    "fitting the trees",
                ],
                [
                    "valid",
                    facts.split_rows.get("valid"),
                    facts.split_customers.get("valid"),
                    "early stopping, choice of trial, calibration"
                    + (", then the refit" if facts.params.get("refit_on_train_valid") else ""),
                ],
                [
                    "test",
                    facts.split_rows.get("test"),
                    facts.split_customers.get("test"),
                    "the figures below, once",
                ],
            ],
        ),
        "",
        "## Metrics on the test rows",
        "",
        *_table(
            ["metric", "value"],
            [
                ["accuracy", facts.metrics.get("test_accuracy")],
                ["macro F1", facts.metrics.get("test_macro_f1")],
                *[
                    [f"recall {label}", facts.metrics.get(f"test_recall_{label}")]
                    for label in LABELS
                ],
                [
                    "valid accuracy of the chosen trial",
                    facts.validation_metrics.get("val_accuracy"),
                ],
            ],
        ),
        "",
        facts.confusion_markdown,
        "",
        "## Calibration",
        "",
        "`confidence` is the model's own (calibrated) probability of the answered class; "
        "a prior correction, when the model has one, only chooses that class (decision "
        "offsets kept beside the model). Every ECE below is that of the class answered. "
        f"Method: {calibration.method}; {calibration.reason}.",
        "",
        *_table(
            ["rows", "probabilities", "ECE", "class-wise ECE", "log loss"],
            [
                *(
                    [
                        [
                            calibration.fitted_on,
                            "of the prior-corrected scores (not served)",
                            calibration.prior_corrected.ece,
                            calibration.prior_corrected.classwise_ece,
                            calibration.prior_corrected.log_loss,
                        ]
                    ]
                    if calibration.prior_corrected is not None
                    else []
                ),
                [
                    calibration.fitted_on,
                    "the model's own, as trained",
                    calibration.before.ece if calibration.before else None,
                    calibration.before.classwise_ece if calibration.before else None,
                    calibration.before.log_loss if calibration.before else None,
                ],
                *(
                    [
                        [
                            calibration.fitted_on,
                            f"temperature {calibration.temperature:.3f}",
                            calibration.after.ece,
                            calibration.after.classwise_ece,
                            calibration.after.log_loss,
                        ]
                    ]
                    if calibration.after is not None
                    else []
                ),
                [
                    "test rows",
                    "served model uncalibrated",
                    facts.test_before.ece,
                    facts.test_before.classwise_ece,
                    facts.test_before.log_loss,
                ],
                [
                    "test rows",
                    "served model (what the API answers)",
                    facts.test_after.ece,
                    facts.test_after.classwise_ece,
                    facts.test_after.log_loss,
                ],
            ],
        ),
        "",
        "The reliability diagram is `test_reliability_diagram.png` in the same MLflow run.",
        "",
        "## Segments (test rows)",
        "",
        f"Policy: segments {', '.join(facts.policy.segments)}; age bands at "
        f"{', '.join(f'{edge:g}' for edge in facts.policy.age_bands)}; a segment of at least "
        f"{facts.policy.min_segment_rows} rows is flagged when its rate of Good is below "
        f"{facts.policy.min_rate_ratio:g} of the best segment's (four-fifths rule) or its "
        f"accuracy is more than {facts.policy.max_accuracy_gap:g} below the whole's, and the "
        f"shortfall is beyond chance (one-sided z-test against the feature's other rows, "
        f"p <= {facts.policy.max_p_value:g} divided by the number of tests).",
        "",
        f"Finding: {describe_findings(facts.segments, facts.policy)}.",
        "",
        segment_markdown(facts.segments),
        "",
        "## What drives the answers",
        "",
        "Top features by mean |SHAP| (CatBoost ShapValues on the test rows, averaged over "
        "rows and classes, in raw score units):",
        "",
        *_table(["feature", "mean abs. SHAP"], [[name, value] for name, value in facts.shap_top]),
        "",
        "## Training",
        "",
        f"Preset `{facts.preset}`; parameters of the chosen trial and the fit:",
        "",
        *_table(["parameter", "value"], sorted((str(k), v) for k, v in facts.params.items())),
        "",
        "## Intended use",
        "",
        INTENDED_USE,
        "",
        "## Known limits",
        "",
        *[f"- {limit}" for limit in facts.limits],
        "",
    ]
    return "\n".join(lines)
