"""Segments and the fairness rules: bands, the table by hand, the significance guard, and a
model trained on a biased label rule for one age band against one trained without it."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from credit_platform.core import settings
from credit_platform.core.fairness import (
    ACCURACY_GAP,
    FOUR_FIFTHS,
    MISSING_SEGMENT,
    FairnessPolicy,
    band_names,
    describe_findings,
    flagged,
    segment_confusions,
    segment_markdown,
    segment_table,
    segment_values,
    shortfall_p_value,
)
from credit_platform.core.features import LABELS, TARGET
from credit_platform.core.model_input import fit_scalers, prepare_model_input
from credit_platform.core.training import (
    FitSettings,
    TrialParams,
    fit_trial,
    make_pool,
    predict_labels,
)
from credit_platform.defs.assets.split import SPLIT_COLUMN, TEST, TRAIN, VALID, grouped_split
from credit_platform_tests.training_fixtures import age_banded_partition


def test_age_bands_and_categories_make_the_segments():
    assert band_names((25, 40, 60)) == ["under 25", "25-40", "40-60", "60 and over"]
    rows = pd.DataFrame(
        {
            "age": [18, 24.9, 25, 39, 40, 60, 99, None, 500, "x"],
            "occupation": ["Lawyer", None, "", *["Doctor"] * 7],
        }
    )
    policy = FairnessPolicy()
    assert segment_values(rows, "age", policy).tolist() == [
        "under 25",
        "under 25",
        "25-40",
        "25-40",
        "40-60",
        "60 and over",
        "60 and over",
        MISSING_SEGMENT,
        MISSING_SEGMENT,  # implausible: the data contract makes it missing
        MISSING_SEGMENT,
    ]
    occupations = segment_values(rows, "occupation", policy).tolist()
    assert occupations[:4] == ["Lawyer", MISSING_SEGMENT, MISSING_SEGMENT, "Doctor"]
    with pytest.raises(ValueError, match="segments"):
        FairnessPolicy(segments=("annual_income",))
    with pytest.raises(ValueError, match="age bands"):
        FairnessPolicy(age_bands=(40.0, 25.0))


def _matrix(rows: int, good_answers: int, right: int) -> np.ndarray:
    """A confusion matrix of `rows` rows: `good_answers` answered Good, `right` of all rows
    answered right (Good rows answered Good first, then Standard rows)."""
    matrix = np.zeros((3, 3), dtype=np.int64)
    good_right = min(good_answers, right)
    matrix[0, 0] = good_right
    matrix[1, 0] = good_answers - good_right  # Standard rows answered Good: wrong
    matrix[1, 1] = right - good_right
    matrix[2, 1] = rows - good_answers - (right - good_right)  # Poor answered Standard
    assert matrix.sum() == rows
    return matrix


def test_the_table_flags_the_four_fifths_rule_and_the_accuracy_gap():
    policy = FairnessPolicy(segments=("age",), min_segment_rows=50)
    confusions = {
        ("age", "under 25"): _matrix(300, good_answers=60, right=210),  # rate 0.20
        ("age", "25-40"): _matrix(300, good_answers=120, right=210),  # rate 0.40: the best
        ("age", "40-60"): _matrix(300, good_answers=110, right=150),  # accuracy 0.5
        ("age", "60 and over"): _matrix(20, good_answers=20, right=20),  # too few to judge
    }
    table = segment_table(confusions, policy)
    by_segment = {row["segment"]: row for row in table}
    assert [row["segment"] for row in table] == ["under 25", "25-40", "40-60", "60 and over"]
    under = by_segment["under 25"]
    assert under["good_rate"] == pytest.approx(0.2)
    assert under["good_rate_ratio"] == pytest.approx(0.5)  # against 25-40, not the tiny one
    assert under["label_good_rate"] == pytest.approx(0.2)  # rows labelled Good
    assert under["flags"] == [FOUR_FIFTHS]
    assert under["good_rate_p_value"] < 1e-6
    whole = (210 + 210 + 150 + 20) / 920
    assert by_segment["40-60"]["accuracy_gap"] == pytest.approx(whole - 0.5)
    assert by_segment["40-60"]["flags"] == [ACCURACY_GAP]
    assert by_segment["25-40"]["flags"] == []
    assert not by_segment["60 and over"]["judged"] and by_segment["60 and over"]["flags"] == []
    assert by_segment["25-40"]["recall_Good"] == pytest.approx(1.0)
    assert set(LABELS) <= {key.removeprefix("recall_") for key in under if "recall" in key}
    assert [row["segment"] for row in flagged(table)] == ["under 25", "40-60"]
    finding = describe_findings(table, policy)
    assert "age under 25 (300 rows): rate of Good 0.200 is 0.50" in finding
    assert "age 40-60" in finding and "1 segment(s) under 50 rows" in finding
    markdown = segment_markdown(table)
    assert markdown.count("\n") == 5 and "not judged (few rows)" in markdown


def test_a_shortfall_within_chance_is_not_flagged():
    policy = FairnessPolicy(segments=("age",), min_segment_rows=20)
    confusions = {
        ("age", "under 25"): _matrix(40, good_answers=10, right=28),  # 0.25
        ("age", "25-40"): _matrix(40, good_answers=14, right=28),  # 0.35: ratio 0.71
    }
    assert 0.025 < shortfall_p_value(10, 40, 14, 40) < 0.5
    assert flagged(segment_table(confusions, policy)) == []
    # p-values are compared with max_p_value / the tests made (2 segments x 2 rules)
    strict = FairnessPolicy(segments=("age",), min_segment_rows=20, max_p_value=1.0)
    assert [row["segment"] for row in flagged(segment_table(confusions, strict))] == ["under 25"]
    assert shortfall_p_value(5, 10, 1, 10) == 1.0  # not below
    assert shortfall_p_value(0, 10, 0, 10) == 1.0  # no spread


def test_segment_confusions_count_the_labelled_rows_of_each_segment():
    rows = pd.DataFrame({"age": [20, 30, 30, None], "occupation": ["A", "A", "B", "B"]})
    confusions = segment_confusions(
        rows, ["Good", "Poor", "Standard", "Good"], ["Good", "Good", None, "Good"], FairnessPolicy()
    )
    assert confusions[("age", "under 25")][0, 0] == 1
    assert confusions[("age", "25-40")].sum() == 1  # the unanswered row is left out
    assert confusions[("age", MISSING_SEGMENT)].sum() == 1
    assert confusions[("occupation", "A")][2, 0] == 1  # a Poor row answered Good


def _trained_segments(frame: pd.DataFrame, policy: FairnessPolicy) -> list[dict]:
    split = grouped_split(frame, valid_fraction=0.2, seed=42)
    sides = {side: split[split[SPLIT_COLUMN] == side] for side in (TRAIN, VALID, TEST)}
    scalers = fit_scalers(sides[TRAIN])
    pools = {
        side: make_pool(prepare_model_input(rows, scalers), rows[TARGET])
        for side, rows in sides.items()
    }
    trial = fit_trial(
        pools[TRAIN],
        pools[VALID],
        sides[VALID][TARGET],
        TrialParams(4, 1.0, 3.0),
        FitSettings(iterations=200, early_stopping_rounds=30, thread_count=2),
    )
    test = sides[TEST]
    predicted = predict_labels(trial.model, pools[TEST])
    return segment_table(segment_confusions(test, test[TARGET], predicted, policy), policy)


def test_the_rules_fire_on_a_biased_label_rule_for_one_age_band_and_not_without_it():
    policy = FairnessPolicy(
        segments=settings.parse_segments("test", settings.DEFAULT_FAIRNESS_SEGMENTS)
    )
    day = date(2025, 2, 1)
    biased = _trained_segments(age_banded_partition(day, 3000, 21, biased_band=(18, 25)), policy)
    fair = _trained_segments(age_banded_partition(day, 3000, 21), policy)

    hit = flagged(biased)
    assert [(row["feature"], row["segment"]) for row in hit] == [("age", "under 25")]
    assert FOUR_FIFTHS in hit[0]["flags"]
    assert hit[0]["good_rate"] < 0.05
    assert flagged(fair) == []
    fair_ages = [row for row in fair if row["feature"] == "age" and row["judged"]]
    assert len(fair_ages) == 4
    assert min(row["good_rate_ratio"] for row in fair_ages) > 0.8
