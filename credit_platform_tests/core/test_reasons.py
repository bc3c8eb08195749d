"""Reason codes (`core.reasons`): one text per reason, every model column counted toward one
reason, and CatBoost's SHAP identity kept through the grouping: the expected value plus
every reason's contribution is the model's raw score of the row's class, for models with
and without the derived features, with the prior correction's bias in the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.sample_requests import load_sample
from credit_platform.core.derived_features import (
    DERIVED_FEATURES,
    LOAN_COUNT_FEATURES,
    RATIO_FEATURES,
)
from credit_platform.core.features import MODEL_FEATURES
from credit_platform.core.model_input import model_columns, prepare_model_input
from credit_platform.core.reasons import (
    LOWERS,
    RAISES,
    REASON_CODES,
    REASON_TEXTS,
    ReasonMap,
    describe,
    explain_rows,
    reason_of,
)
from credit_platform.core.training import apply_class_offsets, make_pool
from credit_platform_tests.contract_fixtures import as_loaded
from credit_platform_tests.model_fixtures import train_tiny_model


def test_one_text_per_reason_and_the_names_come_from_the_feature_contract() -> None:
    assert MODEL_FEATURES + tuple(RATIO_FEATURES) == REASON_CODES
    assert tuple(REASON_TEXTS) == REASON_CODES
    for column in model_columns(derived=True):
        assert reason_of(column) in REASON_CODES
    assert {reason_of(name) for name in LOAN_COUNT_FEATURES} == {"type_of_loan"}
    assert reason_of("spent_level") == reason_of("payment_value") == "payment_behaviour"
    with pytest.raises(KeyError, match="shoe_size"):
        reason_of("shoe_size")


@pytest.mark.parametrize(
    ("code", "value", "text"),
    [
        ("delay_from_due_date", 45, "Payments 45 days late on average"),
        ("delay_from_due_date", -3, "Payments 3 days early on average"),
        ("num_credit_card", 1, "1 credit card"),
        ("num_credit_inquiries", 4, "4 credit inquiries"),
        ("credit_history_age", 257, "Credit history of 21 years and 5 months"),
        ("payment_behaviour", "Low_spent_Small_value_payments", "Low spending with small-value"),
        ("payment_of_min_amount", "Yes", "Paying only the minimum amount due"),
        ("debt_to_income", 0.35, "Outstanding debt at 35% of annual income"),
        ("annual_income", None, "Annual income not given"),
        ("type_of_loan", None, "No loan type listed"),
        ("debt_to_salary", float("nan"), "Debt against take-home pay unknown"),
    ],
)
def test_texts_read_as_a_person_says_them(code: str, value: object, text: str) -> None:
    assert describe(code, value).startswith(text)


def test_every_reason_has_a_text_for_a_value_and_for_missing() -> None:
    examples = {"occupation": "Media_Manager", "credit_mix": "Bad", "type_of_loan": "Auto Loan"}
    for code in REASON_CODES:
        assert describe(code, None) == REASON_TEXTS[code].missing
        value = examples.get(code, "Low_spent_Large_value_payments" if "behaviour" in code else 2)
        if code == "payment_of_min_amount":
            value = "No"
        assert describe(code, value) and describe(code, value) != REASON_TEXTS[code].missing


@pytest.fixture(scope="module")
def sample(kaggle_sample: Path) -> pd.DataFrame:
    return load_sample(kaggle_sample, rows=1200)


@pytest.mark.parametrize("derived", [False, True])
def test_reasons_sum_with_the_base_value_to_the_raw_score(
    sample: pd.DataFrame, derived: bool
) -> None:
    """SHAP's identity through the grouping into reasons, for the class each row is
    predicted and for every other class, with a prior correction stored as the bias."""
    model, scalers = train_tiny_model(sample.iloc[:1000], iterations=15, derived=derived)
    apply_class_offsets(model, [0.4, -0.3, 0.1])  # the tuned preset's kind of bias
    rows = as_loaded(sample.iloc[1000:1100])
    model_input = prepare_model_input(rows, scalers, derived=derived)
    pool = make_pool(model_input)
    raw = model.predict(pool, prediction_type="RawFormulaVal")
    shap_values = model.get_feature_importance(pool, type="ShapValues")
    reason_map = ReasonMap(list(model.feature_names_))
    assert len(reason_map.codes) == (len(REASON_CODES) if derived else len(MODEL_FEATURES))
    ratios = (
        model_input[list(reason_map.ratio_positions)].to_numpy(dtype="float64") if derived else None
    )
    features = rows[list(MODEL_FEATURES)].astype(object).where(rows.notna(), None)
    records = features.to_dict(orient="records")
    classes = [str(label) for label in model.classes_]
    for class_index in range(len(classes)):
        explained = explain_rows(
            reason_map,
            shap_values,
            [class_index] * len(rows),
            [classes[class_index]] * len(rows),
            records,
            ratios,
        )
        for row, explanation in enumerate(explained):
            total = explanation.base_value + explanation.contributions.sum()
            assert total == pytest.approx(raw[row, class_index], abs=1e-9)
            assert explanation.raw_score == pytest.approx(raw[row, class_index], abs=1e-9)
            document = explanation.document(3)
            shown = sum(reason["contribution"] for reason in document["reasons"])
            assert document["base_value"] + shown + document["other_reasons"] == pytest.approx(
                raw[row, class_index], abs=1e-9
            )
    # a correction kept beside the model (decision offsets): the answered class's offset
    # joins the expected value, and the sum is the score that class was chosen on
    offsets = np.array([0.25, -0.5, 0.125])
    answered = (raw + offsets).argmax(axis=1)
    kept = explain_rows(
        reason_map,
        shap_values,
        answered,
        [classes[k] for k in answered],
        records,
        ratios,
        offsets[answered],
    )
    for row, explanation in enumerate(kept):
        chosen = raw[row, answered[row]] + offsets[answered[row]]
        assert explanation.base_value + explanation.contributions.sum() == pytest.approx(
            chosen, abs=1e-9
        )
        assert explanation.raw_score == pytest.approx(chosen, abs=1e-9)
    # the bias is in the expected value: without it every base value moves by the offset
    biased_base = shap_values[:, :, -1]
    apply_class_offsets(model, [-0.4, 0.3, -0.1])
    unbiased = model.get_feature_importance(pool, type="ShapValues")
    np.testing.assert_allclose(biased_base - unbiased[:, :, -1], [[0.4, -0.3, 0.1]] * len(rows))
    np.testing.assert_allclose(shap_values[:, :, :-1], unbiased[:, :, :-1])


def test_a_document_names_feature_value_direction_and_size(sample: pd.DataFrame) -> None:
    model, scalers = train_tiny_model(sample.iloc[:1000], iterations=15, derived=True)
    rows = as_loaded(sample.iloc[1000:1040])
    model_input = prepare_model_input(rows, scalers, derived=True)
    shap_values = model.get_feature_importance(make_pool(model_input), type="ShapValues")
    reason_map = ReasonMap(list(model.feature_names_))
    ratios = model_input[list(reason_map.ratio_positions)].to_numpy(dtype="float64")
    records = rows[list(MODEL_FEATURES)].astype(object).where(rows.notna(), None)
    explained = explain_rows(
        reason_map,
        shap_values,
        [0] * len(rows),
        ["Good"] * len(rows),
        records.to_dict(orient="records"),
        ratios,
    )
    seen_ratio = False
    for explanation, record in zip(explained, records.to_dict(orient="records"), strict=True):
        document = explanation.document(len(REASON_CODES))
        sizes = [abs(reason["contribution"]) for reason in document["reasons"]]
        assert sizes == sorted(sizes, reverse=True)
        assert document["other_reasons"] == 0.0
        assert {reason["feature"] for reason in document["reasons"]} == set(REASON_CODES)
        for reason in document["reasons"]:
            assert reason["direction"] == (RAISES if reason["contribution"] > 0 else LOWERS)
            assert reason["text"].startswith(describe(reason["feature"], reason["value"]))
            assert ("more likely" in reason["text"]) == (reason["direction"] == RAISES)
            if reason["feature"] in RATIO_FEATURES:
                top, bottom = RATIO_FEATURES[reason["feature"]]
                assert reason["inputs"] == {top: record[top], bottom: record[bottom]}
                if reason["value"] is not None:
                    seen_ratio = True
                    assert reason["value"] == pytest.approx(record[top] / record[bottom])
            else:
                assert reason["inputs"] is None
                assert reason["value"] == record[reason["feature"]]
    assert seen_ratio
    assert set(DERIVED_FEATURES) <= set(model.feature_names_)
