"""The served model in-process: model input built from small and large requests alike (equal
to the training transform of the same rows as loaded), implausible values scored as
missing and named, scalers that cannot scale refused at load, and concurrent single rows
scored in groups."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from api.predictor import CoalescingScorer, ModelRefused, Predictor, ServedModel, as_scored
from bench.sample_requests import load_sample, request_payload
from credit_platform.core.features import MODEL_FEATURES
from credit_platform.core.model_input import model_columns, prepare_model_input
from credit_platform.core.model_store import ModelBundle
from credit_platform_tests.contract_fixtures import as_loaded
from credit_platform_tests.model_fixtures import train_tiny_model


@pytest.fixture(scope="module")
def sample(kaggle_sample: Path) -> pd.DataFrame:
    return load_sample(kaggle_sample, rows=1500)


def bundle_of(model: Any, scalers: dict, tag: str) -> ModelBundle:
    return ModelBundle(
        tag=tag,
        model=model,
        scalers=scalers,
        metadata={"partition": "2025-01-15"},
        creation_time=datetime.now(UTC),
    )


@pytest.fixture(scope="module")
def trained(sample: pd.DataFrame) -> tuple[Any, dict]:
    return train_tiny_model(sample, iterations=15)


@pytest.fixture(scope="module")
def predictor(trained: tuple[Any, dict]) -> Predictor:
    model, scalers = trained
    return Predictor(bundle_of(model, scalers, "credit_score_classifier:first"))


@pytest.fixture(scope="module")
def records(sample: pd.DataFrame) -> list[dict[str, Any]]:
    rows = sample.iloc[:300].to_dict(orient="records")
    return [
        {name: payload[name] for name in MODEL_FEATURES} for payload in map(request_payload, rows)
    ]


@pytest.mark.parametrize("count", [1, 2, 7, 300])
def test_model_input_equals_the_training_transform(
    predictor: Predictor, sample: pd.DataFrame, records: list[dict], count: int
) -> None:
    reference = prepare_model_input(as_loaded(sample.iloc[:count]), predictor.bundle.scalers)
    expected = predictor.bundle.model.predict_proba(reference)
    np.testing.assert_array_equal(predictor.probabilities(records[:count]), expected)


@pytest.fixture(scope="module")
def derived_predictor(sample: pd.DataFrame) -> Predictor:
    model, scalers = train_tiny_model(sample, iterations=15, derived=True)
    return Predictor(bundle_of(model, scalers, "credit_score_classifier:derived"))


@pytest.mark.parametrize("count", [1, 300])
def test_a_model_with_derived_features_scores_as_training_does(
    derived_predictor: Predictor, sample: pd.DataFrame, records: list[dict], count: int
) -> None:
    model = derived_predictor.bundle.model
    assert list(model.feature_names_) == list(model_columns(derived=True))
    reference = prepare_model_input(
        as_loaded(sample.iloc[:count]), derived_predictor.bundle.scalers, derived=True
    )
    np.testing.assert_array_equal(
        derived_predictor.probabilities(records[:count]), model.predict_proba(reference)
    )
    # an implausible number is repaired before the ratios are taken from it
    row = {**records[0], "annual_income": 23_800_000.0}
    missing = {**records[0], "annual_income": None}
    np.testing.assert_array_equal(
        derived_predictor.probabilities([row]), derived_predictor.probabilities([missing])
    )
    assert derived_predictor.predict([row])[0].repaired == ("annual_income",)


def test_a_model_with_unknown_extra_features_is_refused(trained: tuple[Any, dict]) -> None:
    model, scalers = trained
    renamed = copy.deepcopy(model)
    renamed.set_feature_names([*MODEL_FEATURES[:-1], "shoe_size"])
    with pytest.raises(ModelRefused, match="shoe_size"):
        Predictor(bundle_of(renamed, scalers, "x:renamed"))


def test_scalers_that_cannot_scale_are_refused(trained: tuple[Any, dict]) -> None:
    model, scalers = trained
    for bad_scale in (0.0, float("nan"), float("inf")):
        broken = copy.deepcopy(scalers["outstanding_debt"])
        broken.scale_ = np.array([bad_scale])
        with pytest.raises(ModelRefused, match="outstanding_debt"):
            Predictor(bundle_of(model, {**scalers, "outstanding_debt": broken}, "x:broken"))


def test_concurrent_rows_share_one_model_call(predictor: Predictor, records: list[dict]) -> None:
    scorer = CoalescingScorer(ServedModel(predictor, loader=lambda tag: predictor))

    async def many() -> list:
        return await asyncio.gather(*(scorer.score(row) for row in records[:40]))

    answers = asyncio.run(many())

    assert scorer.groups == 1 and scorer.rows == 40
    expected = predictor.predict(records[:40])
    assert [prediction for _, prediction in answers] == expected
    assert all(used is predictor for used, _ in answers)


def test_a_lone_request_is_scored_at_once_and_groups_follow_a_reload(
    predictor: Predictor, trained: tuple[Any, dict], records: list[dict]
) -> None:
    model, scalers = trained
    second = Predictor(bundle_of(model, scalers, "credit_score_classifier:second"))
    served = ServedModel(predictor, loader=lambda tag: second)
    scorer = CoalescingScorer(served)

    async def one_then_reload_then_many() -> tuple:
        lone = await scorer.score(records[0])
        served.reload("second")
        later = await asyncio.gather(*(scorer.score(row) for row in records[1:5]))
        return lone, later

    (lone_model, lone_answer), later = asyncio.run(one_then_reload_then_many())

    assert lone_model is predictor and lone_answer == predictor.predict(records[:1])[0]
    assert {used.tag for used, _ in later} == {"credit_score_classifier:second"}
    assert scorer.groups == 2


def test_a_row_that_breaks_the_model_fails_only_its_own_request(
    predictor: Predictor, records: list[dict]
) -> None:
    scorer = CoalescingScorer(ServedModel(predictor))
    poison = {**records[1], "age": "not a number"}

    async def group() -> list:
        rows = [records[0], poison, records[2]]
        return await asyncio.gather(*(scorer.score(row) for row in rows), return_exceptions=True)

    first, failed, third = asyncio.run(group())

    assert isinstance(failed, ValueError)
    assert first[1] == predictor.predict([records[0]])[0]
    assert third[1] == predictor.predict([records[2]])[0]


def test_implausible_values_are_scored_as_missing_and_named(
    predictor: Predictor, records: list[dict]
) -> None:
    row = records[0]
    implausible = {
        **row,
        "num_bank_accounts": 1747,
        "annual_income": 23_800_000.0,
        "amount_invested_monthly": 10_000.0,
        "monthly_balance": -3.33e26,
        "age": -500,
    }
    as_missing = {**implausible, **dict.fromkeys(set(implausible) - {"customer_id"})}
    as_missing |= {name: row[name] for name in row if implausible[name] == row[name]}

    (answer,) = predictor.predict([implausible])

    assert answer.repaired == (
        "age",
        "annual_income",
        "num_bank_accounts",
        "amount_invested_monthly",
        "monthly_balance",
    )  # model order
    np.testing.assert_array_equal(
        predictor.probabilities([implausible]), predictor.probabilities([as_missing])
    )
    (missing_answer,) = predictor.predict([as_missing])
    assert (missing_answer.label, missing_answer.confidence) == (answer.label, answer.confidence)
    assert missing_answer.repaired == ()
    assert as_scored(implausible, answer) == as_missing
    # Values at the edges of the plausible range are kept.
    edges = {**row, "age": 14, "num_of_loan": 12, "monthly_balance": -50_000.0}
    assert predictor.predict([edges])[0].repaired == ()


# --- reasons ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corrected_predictor(sample: pd.DataFrame) -> Predictor:
    """The tuned preset's kind of model: derived features and a prior correction stored as
    the model's bias."""
    from credit_platform.core.training import apply_class_offsets

    model, scalers = train_tiny_model(sample, iterations=15, derived=True)
    apply_class_offsets(model, [0.35, -0.2, 0.15])
    return Predictor(bundle_of(model, scalers, "credit_score_classifier:corrected"))


@pytest.mark.parametrize("which", ["predictor", "corrected_predictor"])
def test_an_explained_answer_equals_the_unexplained_one(
    which: str, request: pytest.FixtureRequest, records: list[dict]
) -> None:
    served: Predictor = request.getfixturevalue(which)
    rows = [*records[:120], {**records[0], "annual_income": 23_800_000.0}]  # one repaired
    plain = served.predict(rows)
    explained = served.explain(rows, plain, reasons=3)
    assert [(p.label, p.confidence, p.repaired) for p in explained] == [
        (p.label, p.confidence, p.repaired) for p in plain
    ]
    assert all(p.explanation is None for p in plain)
    for prediction in explained:
        document = prediction.explanation
        assert document is not None and document["label"] == prediction.label
        assert len(document["reasons"]) == 3
    # the repaired income is explained as missing, as it was scored
    (income,) = [
        reason
        for reason in served.explain(rows[-1:], plain[-1:], reasons=27)[0].explanation["reasons"]
        if reason["feature"] == "annual_income"
    ]
    assert income["value"] is None and income["text"].startswith("Annual income not given")


@pytest.mark.parametrize("which", ["predictor", "corrected_predictor"])
def test_reasons_sum_to_the_served_models_raw_score(
    which: str, request: pytest.FixtureRequest, records: list[dict]
) -> None:
    """SHAP's identity against the model as served: its raw score (bias included) of the
    predicted class, computed from the served input of each row."""
    served: Predictor = request.getfixturevalue(which)
    rows = records[:150]
    explained = served.explain(rows, served.predict(rows), reasons=27)
    raw = served.bundle.model.predict(served.encode(rows), prediction_type="RawFormulaVal")
    classes = [str(label) for label in served.bundle.model.classes_]
    for row, prediction in enumerate(explained):
        document = prediction.explanation
        assert document["other_reasons"] == 0.0
        total = document["base_value"] + sum(r["contribution"] for r in document["reasons"])
        expected = raw[row, classes.index(prediction.label)]
        assert total == pytest.approx(expected, abs=1e-9)
        assert document["raw_score"] == pytest.approx(expected, abs=1e-9)
        # the predicted class has the largest raw score: the answer and the reasons agree
        assert expected == pytest.approx(raw[row].max())
