"""Model quality per segment of customers, and the rules that flag unequal treatment.

A segment is a band of a numeric feature (age: under 25, 25-40, 40-60, 60 and over by
default) or a value of a categorical one (occupation); a missing value is a segment of its
own, "(missing)". Per segment: rows, accuracy, the recall of each class and the rate of
"Good" answers (the favourable outcome, the selection rate of the four-fifths rule), beside
the share of its rows labelled Good (does the model repeat a gap of the labels, or widen
it?).

Two rules flag a segment, each among the segments of one feature that have at least
`min_segment_rows` rows (smaller ones are reported, not judged, and never count as the best):

- four-fifths: its rate of "Good" is below `min_rate_ratio` (0.8) of the best segment's;
- accuracy: its accuracy is more than `max_accuracy_gap` (0.05) below the whole's.

Each shortfall must also be more than chance: a one-sided two-proportion z-test of the
segment against the other rows of the feature (its rate of Good, its accuracy) must give a
p-value of at most `max_p_value` (0.05) divided by the number of tests the table makes (two
per judged segment, over every feature: Bonferroni), so a model that treats no segment
unequally draws a warning with a chance of at most `max_p_value`. Test rows are few per
segment (a hundred rows give an accuracy a standard error of about 0.05), and fifteen
occupations are fifteen chances to find one short by luck: without the test the rules flag
noise. A shortfall as clear as a band never graded Good has a p-value far below any of
these. The test is against the other rows, not the best segment: the best of fifteen small
segments is high by luck, and the ratio to it is only the practical half of the rule.

Segments are tallied as confusion matrices (true x answered label, in LABELS order), which
add up, so the live monitoring can merge chunks and models the way it merges the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from credit_platform.core import settings
from credit_platform.core.data_contract import make_implausible_missing
from credit_platform.core.features import LABELS, NUMERIC_FEATURES

FAVOURABLE = "Good"
MISSING_SEGMENT = "(missing)"
# Features that can be segmented: the numeric ones by bands (only age has bands as a
# setting), the categorical ones by value.
BANDED_FEATURES = ("age",)
SEGMENT_FEATURES = settings.FAIRNESS_SEGMENT_FEATURES
FOUR_FIFTHS = "four_fifths"
ACCURACY_GAP = "accuracy_gap"

_LABEL_INDEX = {label: index for index, label in enumerate(LABELS)}


@dataclass(frozen=True)
class FairnessPolicy:
    """Which segments are compared, and the thresholds of the two rules."""

    segments: tuple[str, ...] = ("age", "occupation")
    age_bands: tuple[float, ...] = (25.0, 40.0, 60.0)
    min_rate_ratio: float = settings.DEFAULT_FAIRNESS_MIN_RATE_RATIO
    max_accuracy_gap: float = settings.DEFAULT_FAIRNESS_MAX_ACCURACY_GAP
    min_segment_rows: int = settings.DEFAULT_FAIRNESS_MIN_SEGMENT_ROWS
    max_p_value: float = settings.DEFAULT_FAIRNESS_MAX_P_VALUE

    def __post_init__(self) -> None:
        unknown = [name for name in self.segments if name not in SEGMENT_FEATURES]
        if unknown or not self.segments:
            raise ValueError(
                f"segments must be among {', '.join(SEGMENT_FEATURES)}, not {list(self.segments)}"
            )
        if list(self.age_bands) != sorted(set(self.age_bands)) or not self.age_bands:
            raise ValueError(f"age bands must be increasing edges, not {list(self.age_bands)}")
        if not 0 < self.min_rate_ratio <= 1:
            raise ValueError(f"min_rate_ratio must be in (0, 1], not {self.min_rate_ratio}")
        if self.max_accuracy_gap < 0 or self.min_segment_rows < 1:
            raise ValueError("max_accuracy_gap must be >= 0 and min_segment_rows >= 1")
        if not 0 < self.max_p_value <= 1:
            raise ValueError(f"max_p_value must be in (0, 1], not {self.max_p_value}")

    def document(self) -> dict[str, Any]:
        return {
            "segments": list(self.segments),
            "age_bands": list(self.age_bands),
            "min_rate_ratio": self.min_rate_ratio,
            "max_accuracy_gap": self.max_accuracy_gap,
            "min_segment_rows": self.min_segment_rows,
            "max_p_value": self.max_p_value,
        }


def _edge(value: float) -> str:
    return f"{value:g}"


def band_names(edges: Sequence[float]) -> list[str]:
    """ "under 25", "25-40", "40-60", "60 and over" for edges (25, 40, 60)."""
    names = [f"under {_edge(edges[0])}"]
    names += [f"{_edge(low)}-{_edge(high)}" for low, high in zip(edges, edges[1:], strict=False)]
    return [*names, f"{_edge(edges[-1])} and over"]


def segment_values(rows: pd.DataFrame, feature: str, policy: FairnessPolicy) -> np.ndarray:
    """Each row's segment of `feature`: its band (an implausible value, as the data
    contract makes it, counts as missing) or its category; "(missing)" when missing."""
    values = rows[feature] if feature in rows.columns else pd.Series([None] * len(rows))
    if feature in NUMERIC_FEATURES:
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64").reshape(-1, 1)
        make_implausible_missing([feature], numbers)
        numbers = numbers[:, 0]
        names = np.asarray(band_names(policy.age_bands), dtype=object)
        position = np.searchsorted(np.asarray(policy.age_bands), numbers, side="right")
        segments = names[np.clip(position, 0, len(names) - 1)]
        return np.where(np.isnan(numbers), MISSING_SEGMENT, segments).astype(object)
    text = values.astype(object).where(values.notna(), None).to_numpy()
    return np.array(
        [MISSING_SEGMENT if value is None or value == "" else str(value) for value in text],
        dtype=object,
    )


SegmentKey = tuple[str, str]  # (feature, segment)


def segment_confusions(
    rows: pd.DataFrame,
    truth: Sequence[Any],
    predicted: Sequence[Any],
    policy: FairnessPolicy,
) -> dict[SegmentKey, np.ndarray]:
    """Per (feature, segment) the confusion matrix of the rows whose true and answered
    labels are both known classes."""
    truth_index = pd.Series(np.asarray(truth, dtype=object)).map(_LABEL_INDEX)
    answer_index = pd.Series(np.asarray(predicted, dtype=object)).map(_LABEL_INDEX)
    known = (truth_index.notna() & answer_index.notna()).to_numpy()
    pairs = np.stack(
        [truth_index[known].to_numpy(dtype=int), answer_index[known].to_numpy(dtype=int)]
    )
    rows = rows.reset_index(drop=True).loc[known]
    confusions: dict[SegmentKey, np.ndarray] = {}
    for feature in policy.segments:
        segments = segment_values(rows, feature, policy)
        for name in pd.unique(segments):
            inside = segments == name
            matrix = np.zeros((len(LABELS), len(LABELS)), dtype=np.int64)
            np.add.at(matrix, (pairs[0][inside], pairs[1][inside]), 1)
            confusions[(feature, str(name))] = matrix
    return confusions


def merge_confusions(
    into: dict[SegmentKey, np.ndarray], other: Mapping[SegmentKey, np.ndarray]
) -> None:
    for key, matrix in other.items():
        if key in into:
            into[key] = into[key] + matrix
        else:
            into[key] = np.array(matrix, dtype=np.int64)


def shortfall_p_value(hits: int, rows: int, other_hits: int, other_rows: int) -> float:
    """One-sided two-proportion z-test (pooled): the chance of a rate this far or further
    below the other's if both groups shared one rate. 1 when it is not below, or when the
    pooled rate is 0 or 1 (no spread to test against)."""
    if not rows or not other_rows:
        return 1.0
    rate, other = hits / rows, other_hits / other_rows
    pooled = (hits + other_hits) / (rows + other_rows)
    spread = np.sqrt(pooled * (1 - pooled) * (1 / rows + 1 / other_rows))
    if rate >= other or spread == 0:
        return 1.0
    return float(norm.sf((other - rate) / spread))


def _accuracy(matrix: np.ndarray) -> float | None:
    total = int(matrix.sum())
    return float(np.trace(matrix) / total) if total else None


def _segment_order(feature: str, name: str, policy: FairnessPolicy) -> tuple[int, str]:
    if feature in BANDED_FEATURES:
        names = band_names(policy.age_bands)
        return (names.index(name) if name in names else len(names), name)
    return (1 if name == MISSING_SEGMENT else 0, name)


def segment_table(
    confusions: Mapping[SegmentKey, np.ndarray], policy: FairnessPolicy
) -> list[dict[str, Any]]:
    """One row per segment (features in policy order, bands in age order, categories by
    name): rows, accuracy, recall per class, rate of Good, its ratio to the best judged
    segment of the feature, accuracy gap to the whole, whether judged, and the rules it
    breaks (`flags`). The whole is the sum of one feature's segments (every row is in one
    segment of each feature)."""
    table: list[dict[str, Any]] = []
    tests = 2 * sum(
        1
        for key, matrix in confusions.items()
        if key[0] in policy.segments and matrix.sum() >= policy.min_segment_rows
    )
    significance = policy.max_p_value / max(1, tests)
    for feature in policy.segments:
        keys = sorted(
            (key for key in confusions if key[0] == feature),
            key=lambda key: _segment_order(feature, key[1], policy),
        )
        if not keys:
            continue
        whole = sum(confusions[key] for key in keys)
        overall = _accuracy(whole)
        judged = [key for key in keys if confusions[key].sum() >= policy.min_segment_rows]
        good = _LABEL_INDEX[FAVOURABLE]
        rates = {
            key: float(confusions[key][:, good].sum() / confusions[key].sum()) for key in judged
        }
        best_key = max(rates, key=lambda key: rates[key]) if rates else None
        best = rates[best_key] if best_key is not None else None
        for key in keys:
            matrix = confusions[key]
            rows = int(matrix.sum())
            totals = matrix.sum(axis=1)
            accuracy = _accuracy(matrix)
            good_rate = float(matrix[:, _LABEL_INDEX[FAVOURABLE]].sum() / rows) if rows else None
            entry: dict[str, Any] = {
                "feature": feature,
                "segment": key[1],
                "rows": rows,
                "accuracy": accuracy,
                **{
                    f"recall_{label}": (float(matrix[k, k] / totals[k]) if totals[k] else None)
                    for k, label in enumerate(LABELS)
                },
                "good_rate": good_rate,
                # the share of the segment's rows labelled Good: whether the model only
                # repeats a gap of the labels or widens it
                "label_good_rate": float(matrix[good].sum() / rows) if rows else None,
                "good_rate_ratio": (good_rate / best if best and good_rate is not None else None),
                "accuracy_gap": (
                    overall - accuracy if overall is not None and accuracy is not None else None
                ),
                "judged": key in rates,
                "good_rate_p_value": None,
                "accuracy_p_value": None,
                "flags": [],
            }
            if entry["judged"]:
                rest = whole - matrix
                entry["good_rate_p_value"] = shortfall_p_value(
                    int(matrix[:, good].sum()), rows, int(rest[:, good].sum()), int(rest.sum())
                )
                entry["accuracy_p_value"] = shortfall_p_value(
                    int(np.trace(matrix)), rows, int(np.trace(rest)), int(rest.sum())
                )
                if (
                    best
                    and entry["good_rate_ratio"] < policy.min_rate_ratio
                    and entry["good_rate_p_value"] <= significance
                ):
                    entry["flags"].append(FOUR_FIFTHS)
                if (
                    entry["accuracy_gap"] > policy.max_accuracy_gap + 1e-12
                    and entry["accuracy_p_value"] <= significance
                ):
                    entry["flags"].append(ACCURACY_GAP)
            table.append(entry)
    return table


def flagged(table: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [row for row in table if row["flags"]]


def describe_findings(table: Sequence[Mapping[str, Any]], policy: FairnessPolicy) -> str:
    """One sentence per flagged segment, or that none is flagged (and how many were too
    small to judge)."""
    findings = []
    for row in flagged(table):
        parts = []
        if FOUR_FIFTHS in row["flags"]:
            parts.append(
                f"rate of Good {row['good_rate']:.3f} is {row['good_rate_ratio']:.2f} of the "
                f"best {row['feature']} segment's (four-fifths rule: at least "
                f"{policy.min_rate_ratio:g}; p = {row['good_rate_p_value']:.2g})"
            )
        if ACCURACY_GAP in row["flags"]:
            parts.append(
                f"accuracy {row['accuracy']:.3f} is {row['accuracy_gap']:.3f} below the whole "
                f"(at most {policy.max_accuracy_gap:g}; p = {row['accuracy_p_value']:.2g})"
            )
        findings.append(
            f"{row['feature']} {row['segment']} ({row['rows']} rows): " + "; ".join(parts)
        )
    small = sum(1 for row in table if not row["judged"])
    tail = (
        f" ({small} segment(s) under {policy.min_segment_rows} rows reported, not judged)"
        if small
        else ""
    )
    if not findings:
        return f"no segment breaks the four-fifths or the accuracy rule{tail}"
    return "; ".join(findings) + tail


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list):
        return ", ".join(value) if value else ""
    return str(value).replace("|", "\\|")


SEGMENT_COLUMNS = (
    "feature",
    "segment",
    "rows",
    "accuracy",
    *(f"recall_{label}" for label in LABELS),
    "good_rate",
    "label_good_rate",
    "good_rate_ratio",
    "accuracy_gap",
    "good_rate_p_value",
    "accuracy_p_value",
    "flags",
)


def segment_markdown(table: Sequence[Mapping[str, Any]]) -> str:
    """The table as GitHub markdown (a segment too small to judge says so in `flags`)."""
    lines = [
        "| " + " | ".join(SEGMENT_COLUMNS) + " |",
        "|" + " --- |" * len(SEGMENT_COLUMNS),
    ]
    for row in table:
        cells = [_cell(row[name]) for name in SEGMENT_COLUMNS[:-1]]
        flags = _cell(row["flags"]) if row["judged"] else "not judged (few rows)"
        lines.append("| " + " | ".join([*cells, flags]) + " |")
    return "\n".join(lines)
