"""Grid search and evaluation of the CatBoost credit-score classifier (no Dagster, no MLflow).

The Dagster asset wraps each trial in an MLflow run; everything that decides what is
trained, how a trial is chosen (on the valid rows) and how the chosen model is reported (on
the test rows, once) lives here so it can be tested on its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from catboost import CatBoostClassifier, Pool
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from credit_platform.core.answers import OFFSETS_KEY, answered_labels, offsets_document
from credit_platform.core.derived_features import DERIVED_CATEGORICAL_FEATURES
from credit_platform.core.features import CATEGORICAL_FEATURES, LABELS, TEXT_FEATURES

# Text features are tokenized on spaces into single words. CatBoost's default text
# processing also builds a word-pair dictionary, which is empty for one-word values such as
# payment_behaviour ("Low_spent_Small_value_payments") and makes training fail with
# "Dictionary size is 0" -- on the Kaggle data as much as on synthetic data.
TEXT_PROCESSING: dict[str, Any] = {
    "tokenizers": [
        {
            "tokenizer_id": "Space",
            "separator_type": "ByDelimiter",
            "delimiter": " ",
            "lowercasing": "true",
        }
    ],
    "dictionaries": [{"dictionary_id": "Word", "gram_order": "1", "occurrence_lower_bound": "2"}],
    "feature_processing": {
        "default": [
            {
                "dictionaries_names": ["Word"],
                "feature_calcers": ["BoW", "NaiveBayes"],
                "tokenizers_names": ["Space"],
            }
        ]
    },
}


SELECTION_METRICS = ("accuracy", "macro_f1")
CLASS_WEIGHTS = ("none", "Balanced", "SqrtBalanced")


@dataclass(frozen=True)
class FitSettings:
    """What stays fixed across the grid. The defaults are the seed design: lr 0.3, up to 2000
    rounds, stop after 50 without a better valid accuracy, no class weights, the trial with
    the best valid accuracy wins."""

    iterations: int = 2000
    learning_rate: float = 0.3
    early_stopping_rounds: int = 50
    thread_count: int = -1
    random_seed: int = 42
    loss_function: str = "MultiClassOneVsAll"
    eval_metric: str = "Accuracy"
    class_weights: str = "none"
    selection_metric: str = "accuracy"
    # Prior correction: the label is chosen on raw scores with `strength * log(largest
    # class count / class count)` added per class (counted on the model's training rows),
    # raising the rarer classes after training instead of through weights; 0 leaves the
    # scores alone. The offsets are kept beside the model (`core.answers`), never in it, so
    # the probabilities (the confidence) stay the model's own.
    class_offset_strength: float = 0.0
    # Refit the chosen trial on train + valid rows (its best round count scaled by the row
    # ratio) as the final model; the valid rows still chose the trial and its rounds.
    refit_on_train_valid: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.class_offset_strength <= 2:
            raise ValueError(
                f"class_offset_strength must be within [0, 2], not {self.class_offset_strength!r}"
            )
        if self.selection_metric not in SELECTION_METRICS:
            raise ValueError(
                f"selection_metric must be one of {', '.join(SELECTION_METRICS)}, "
                f"not {self.selection_metric!r}"
            )
        if self.class_weights not in CLASS_WEIGHTS:
            raise ValueError(
                f"class_weights must be one of {', '.join(CLASS_WEIGHTS)}, "
                f"not {self.class_weights!r}"
            )


@dataclass(frozen=True)
class TrialParams:
    depth: int
    rsm: float
    l2_leaf_reg: float

    def as_dict(self) -> dict[str, float | int]:
        return {"depth": self.depth, "rsm": self.rsm, "l2_leaf_reg": self.l2_leaf_reg}


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    macro_f1: float
    confusion: np.ndarray  # rows: true label, columns: predicted label, in LABELS order
    labels: tuple[str, ...] = LABELS

    @property
    def recall(self) -> dict[str, float]:
        """Share of each label's rows predicted as that label (0 for a label with no rows)."""
        totals = self.confusion.sum(axis=1)
        return {
            label: float(self.confusion[index, index] / totals[index]) if totals[index] else 0.0
            for index, label in enumerate(self.labels)
        }

    def score(self, metric: str) -> float:
        return self.accuracy if metric == "accuracy" else self.macro_f1

    def metrics(self, prefix: str) -> dict[str, float]:
        """Accuracy, macro F1 and per-label recall named "<prefix>_accuracy" and so on."""
        return {
            f"{prefix}_accuracy": self.accuracy,
            f"{prefix}_macro_f1": self.macro_f1,
            **{f"{prefix}_recall_{label}": value for label, value in self.recall.items()},
        }

    def confusion_rows(self) -> list[list[int]]:
        return [[int(count) for count in row] for row in self.confusion]


@dataclass(frozen=True)
class TrialResult:
    params: TrialParams
    model: CatBoostClassifier
    evaluation: Evaluation
    best_iteration: int
    # The decision offsets the trial was evaluated with (model class order; empty: none).
    offsets: tuple[float, ...] = ()

    @property
    def metrics(self) -> dict[str, float]:
        """The trial's valid-row scores (what chose it, hence optimistic for the winner)."""
        return {**self.evaluation.metrics("val"), "best_iteration": float(self.best_iteration)}


def parameter_grid(
    depths: Sequence[int], rsms: Sequence[float], l2_leaf_regs: Sequence[float]
) -> list[TrialParams]:
    """Every depth × rsm × l2_leaf_reg combination, in a stable order."""
    for name, values in (("depths", depths), ("rsms", rsms), ("l2_leaf_regs", l2_leaf_regs)):
        if not values:
            raise ValueError(f"the training grid needs at least one value in {name}")
    bad_rsm = [value for value in rsms if not 0 < value <= 1]
    if bad_rsm:
        raise ValueError(f"rsm values must be in (0, 1], got {bad_rsm}")
    return [
        TrialParams(depth=int(depth), rsm=float(rsm), l2_leaf_reg=float(l2))
        for depth, rsm, l2 in itertools.product(depths, rsms, l2_leaf_regs)
    ]


def make_pool(features: pd.DataFrame, labels: pd.Series | None = None) -> Pool:
    """A CatBoost pool of prepared model input (see `model_input.prepare_model_input`), with
    or without the derived features."""
    categorical = CATEGORICAL_FEATURES + DERIVED_CATEGORICAL_FEATURES
    return Pool(
        features,
        label=None if labels is None else labels.to_numpy(),
        cat_features=[name for name in features.columns if name in categorical],
        text_features=[name for name in features.columns if name in TEXT_FEATURES],
    )


def fit_trial(
    train: Pool, valid: Pool, valid_labels: pd.Series, params: TrialParams, fit: FitSettings
) -> TrialResult:
    """Train one grid point with early stopping on the validation pool and score it there."""
    model = CatBoostClassifier(
        loss_function=fit.loss_function,
        learning_rate=fit.learning_rate,
        iterations=fit.iterations,
        depth=params.depth,
        rsm=params.rsm,
        l2_leaf_reg=params.l2_leaf_reg,
        early_stopping_rounds=fit.early_stopping_rounds,
        eval_metric=fit.eval_metric,
        auto_class_weights=None if fit.class_weights == "none" else fit.class_weights,
        random_seed=fit.random_seed,
        thread_count=fit.thread_count,
        text_processing=TEXT_PROCESSING,
        allow_writing_files=False,
        verbose=False,
    )
    model.fit(train, eval_set=valid, use_best_model=True)
    offsets = tuple(class_offsets(train.get_label(), model.classes_, fit))
    best = model.get_best_iteration()
    return TrialResult(
        params=params,
        model=model,
        evaluation=evaluate(model, valid, valid_labels, offsets),
        best_iteration=int(best if best is not None else model.tree_count_ - 1),
        offsets=offsets if any(offsets) else (),
    )


def class_offsets(labels: Sequence[Any], classes: Sequence[Any], fit: FitSettings) -> list[float]:
    """Per class (in `classes` order) the prior correction of `fit` for these training
    labels: strength * log(largest count / class count); zeros at strength 0."""
    if not fit.class_offset_strength:
        return [0.0] * len(classes)
    names, counts = np.unique(np.asarray(labels).astype(str), return_counts=True)
    count = dict(zip(names.tolist(), counts.tolist(), strict=True))
    missing = [str(label) for label in classes if count.get(str(label), 0) == 0]
    if missing:
        raise ValueError(f"no training rows of {', '.join(missing)}: cannot weigh its prior")
    largest = max(count.values())
    return [
        float(fit.class_offset_strength * np.log(largest / count[str(label)])) for label in classes
    ]


def apply_class_offsets(model: CatBoostClassifier, offsets: Sequence[float]) -> None:
    """Add `offsets` to the model's raw score of each class, in its bias. Training no longer
    does this (the offsets are kept beside the model, see `core.answers`); it makes a model
    as they were saved before, whose probabilities carry the correction."""
    if not any(offsets):
        return
    scale, bias = model.get_scale_and_bias()
    current = list(bias) if isinstance(bias, Sequence) else [float(bias)] * len(offsets)
    model.set_scale_and_bias(scale, [b + o for b, o in zip(current, offsets, strict=True)])


class FinalModel(NamedTuple):
    """The model to report and serve, and its decision offsets (empty: none)."""

    model: CatBoostClassifier
    offsets: tuple[float, ...]


def final_model(
    chosen: TrialResult,
    train_valid: Callable[[], Pool],
    train_rows: int,
    fit: FitSettings,
) -> FinalModel:
    """The model to report and serve with its offsets: the chosen trial's, or with
    `refit_on_train_valid` the same settings refit on the train + valid rows (`train_valid`
    builds their pool, only then) for (best rounds x row ratio) rounds, its offsets counted
    on the rows it was fit on."""
    if not fit.refit_on_train_valid:
        return FinalModel(chosen.model, chosen.offsets)
    pool = train_valid()
    params = chosen.model.get_params()
    params.pop("early_stopping_rounds", None)
    params["iterations"] = max(1, round((chosen.best_iteration + 1) * pool.num_row() / train_rows))
    model = CatBoostClassifier(**params)
    model.fit(pool)
    offsets = tuple(class_offsets(pool.get_label(), model.classes_, fit))
    return FinalModel(model, offsets if any(offsets) else ())


def predict_labels(
    model: CatBoostClassifier, pool: Pool, offsets: Sequence[float] | None = None
) -> np.ndarray:
    """Class names of the answered class: the most likely one, or with decision `offsets`
    (model class order) the highest corrected score, as `core.answers` answers."""
    return answered_labels(model, {OFFSETS_KEY: offsets_document(model.classes_, offsets)}, pool)


def evaluate(
    model: CatBoostClassifier,
    pool: Pool,
    labels: pd.Series,
    offsets: Sequence[float] | None = None,
) -> Evaluation:
    truth = labels.astype(str).to_numpy()
    predicted = predict_labels(model, pool, offsets)
    return Evaluation(
        accuracy=float(accuracy_score(truth, predicted)),
        macro_f1=float(
            f1_score(truth, predicted, labels=list(LABELS), average="macro", zero_division=0)
        ),
        confusion=confusion_matrix(truth, predicted, labels=list(LABELS)),
    )


def best_trial(results: Iterable[TrialResult], metric: str = "accuracy") -> TrialResult:
    """Highest validation score by `metric` ("accuracy" or "macro_f1"); ties go to the other
    score, then the earlier trial."""
    if metric not in SELECTION_METRICS:
        raise ValueError(f"metric must be one of {', '.join(SELECTION_METRICS)}, not {metric!r}")
    other = "macro_f1" if metric == "accuracy" else "accuracy"
    ranked = list(results)
    if not ranked:
        raise ValueError("no trial was trained")
    return max(
        enumerate(ranked),
        key=lambda item: (
            item[1].evaluation.score(metric),
            item[1].evaluation.score(other),
            -item[0],
        ),
    )[1]


def feature_importances(model: CatBoostClassifier, top: int = 10) -> list[tuple[str, float]]:
    """The `top` features by CatBoost's prediction-values-change importance."""
    pairs = zip(model.feature_names_, model.get_feature_importance(), strict=True)
    return sorted(((str(name), float(value)) for name, value in pairs), key=lambda p: -p[1])[:top]


# CatBoost's names of the data sets in `get_evals_result()`, as the curves are named.
_CURVE_SETS = {"learn": "train", "validation": "valid"}


def learning_curves(model: CatBoostClassifier) -> dict[str, list[float]]:
    """The model's per-iteration metrics, as `curve_<train|valid>_<metric>` (characters MLflow
    refuses in a metric name, such as ':' and '=' in "TotalF1:average=Macro", become '_')."""
    curves = {}
    for data_set, metrics in model.get_evals_result().items():
        prefix = _CURVE_SETS.get(data_set, data_set)
        for metric, values in metrics.items():
            name = "".join(c if c.isalnum() or c in "_-." else "_" for c in metric)
            curves[f"curve_{prefix}_{name}"] = [float(value) for value in values]
    return curves


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-style table for Dagster's markdown metadata."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def confusion_document(evaluation: Evaluation) -> dict[str, Any]:
    """The confusion matrix as plain JSON: rows are true labels, columns predicted ones."""
    return {"labels": list(evaluation.labels), "rows": evaluation.confusion_rows()}


def confusion_markdown(evaluation: Evaluation) -> str:
    headers = ["true \\ predicted", *evaluation.labels]
    rows = [
        [label, *(int(count) for count in evaluation.confusion[index])]
        for index, label in enumerate(evaluation.labels)
    ]
    return markdown_table(headers, rows)


def mean_abs_shap(model: CatBoostClassifier, pool: Pool, top: int = 10) -> list[tuple[str, float]]:
    """The `top` features by mean |SHAP value| over the pool's rows (and, for a multiclass
    model, over the classes), in raw score units: CatBoost's own ShapValues."""
    values = np.asarray(model.get_feature_importance(data=pool, type="ShapValues"))
    # rows x features+1 (the last column is the expected value), or rows x classes x
    # features+1 for several classes
    contributions = values[..., :-1]
    axes = tuple(range(contributions.ndim - 1))
    means = np.abs(contributions).mean(axis=axes)
    pairs = zip(model.feature_names_, means.tolist(), strict=True)
    return sorted(((str(name), float(value)) for name, value in pairs), key=lambda p: -p[1])[:top]


def preset_name(config: dict[str, Any], presets: dict[str, dict[str, Any]]) -> str:
    """The name of the preset whose every field `config` has, or "custom"."""
    for name, preset in presets.items():
        if all(config.get(key) == value for key, value in preset.items()):
            return name
    return "custom"
