"""The request bodies in-process (no server): what a whole-number field takes and refuses,
null in every feature, implausible values let through for repair and absurd ones refused
with what is allowed, the schema the OpenAPI page publishes, loan lists, the answer's
`repaired`, and the features a row hands to the model and the log."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from api.predictor import SMOKE_ROW
from api.schemas import (
    BatchPredictRequest,
    PredictionFeatures,
    PredictionResponse,
    PredictRequest,
)
from credit_platform.core import settings
from credit_platform.core.data_contract import PLAUSIBLE_RANGES
from credit_platform.core.features import (
    FLOAT_FEATURES,
    INTEGER_FEATURES,
    MODEL_FEATURES,
    NUMERIC_FEATURES,
)


def body(**changes: Any) -> str:
    row = {"customer_id": "CUS_0x1", **SMOKE_ROW, **changes}
    return json.dumps({"data": row})


def errors_for(raw: str) -> list[tuple[tuple, str]]:
    with pytest.raises(ValidationError) as caught:
        PredictRequest.model_validate_json(raw)
    return [(tuple(error["loc"]), error["msg"]) for error in caught.value.errors()]


@pytest.mark.parametrize("field", INTEGER_FEATURES)
def test_whole_numbers_take_integral_json_numbers(field: str) -> None:
    value = 20  # in range for every integer feature
    assert getattr(PredictRequest.model_validate_json(body(**{field: value})).data, field) == 20
    parsed = PredictRequest.model_validate_json(body(**{field: 20.0})).data
    assert getattr(parsed, field) == 20 and type(getattr(parsed, field)) is int


@pytest.mark.parametrize("field", INTEGER_FEATURES)
@pytest.mark.parametrize("raw", ['"12"', "true", "12.5", "NaN", "Infinity", "[12]"])
def test_whole_numbers_refuse_text_booleans_and_fractions(field: str, raw: str) -> None:
    document = body(**{field: "<raw>"}).replace('"<raw>"', raw)  # NaN, Infinity: raw tokens
    problems = errors_for(document)
    assert [loc for loc, _ in problems] == [("data", field)]
    assert "whole JSON number" in problems[0][1]


def test_implausible_values_are_accepted_for_repair_absurd_ones_refused() -> None:
    # Outside the plausible range but inside the accepted limits: the predictor repairs it.
    for field, value in [("age", -500), ("num_bank_accounts", 1747), ("interest_rate", 5773)]:
        parsed = PredictRequest.model_validate_json(body(**{field: value})).data
        assert getattr(parsed, field) == value
    balance = PredictRequest.model_validate_json(body(monthly_balance=-3.33e26)).data
    assert balance.monthly_balance == -3.33e26  # Kaggle's filler: repaired, not refused

    absurd = {name: [10**20, int("9" * 309), -(10**20), 1e20] for name in INTEGER_FEATURES}
    absurd |= {name: [1e31, -1e300, int("9" * 309)] for name in FLOAT_FEATURES}
    for field, values in absurd.items():
        for value in values:
            ((loc, message),) = errors_for(body(**{field: value}))
            assert loc == ("data", field)
            assert "or null" in message and "treated as missing" in message, message


def test_bounds_and_nullability_are_published() -> None:
    schema = PredictionFeatures.model_json_schema()["properties"]
    assert schema["age"]["anyOf"] == [
        {"type": "integer", "minimum": -(10**9), "maximum": 10**9},
        {"type": "null"},
    ]
    assert schema["age"]["x-plausible-minimum"] == 14
    assert schema["age"]["x-plausible-maximum"] == 100
    assert schema["age"]["description"].startswith("years; ")
    income = schema["annual_income"]["anyOf"]
    assert {"type": "number", "minimum": -1e30, "maximum": 1e30} in income
    assert {"type": "null"} in income
    for name in MODEL_FEATURES:
        assert {"type": "null"} in schema[name]["anyOf"], name
        if name in NUMERIC_FEATURES:
            low, high = PLAUSIBLE_RANGES[name]
            assert (
                f"outside {low:,}..{high:,} are treated as missing" in (schema[name]["description"])
            ), name
    assert set(PredictionFeatures.model_json_schema()["required"]) == {
        "customer_id",
        *MODEL_FEATURES,
    }


@pytest.mark.parametrize("field", MODEL_FEATURES)
def test_every_feature_may_be_null(field: str) -> None:
    assert getattr(PredictRequest.model_validate_json(body(**{field: None})).data, field) is None


def test_refusals_say_what_is_allowed() -> None:
    ((loc, message),) = errors_for(body(credit_mix="Excellent"))
    assert loc == ("data", "credit_mix")
    assert message == "must be one of Good, Standard, Bad, or null (missing)"
    ((loc, message),) = errors_for(body(age="35"))
    assert message.startswith("must be a whole JSON number (3 or 3.0) from -1,000,000,000 to ")
    assert message.endswith("or null (missing); values outside 14..100 are treated as missing")
    ((loc, message),) = errors_for(body(monthly_balance=float("inf")))
    assert "<= -1e9 (Kaggle's -3.33e26 filler)" in message
    ((loc, message),) = errors_for(body(type_of_loan=7))
    assert loc == ("data", "type_of_loan") and "null when none is listed" in message
    ((loc, message),) = errors_for(body(type_of_loan="Auto Loan,"))
    assert "an empty item" in message


def test_the_answer_lists_repaired_fields_only_when_there_are_some() -> None:
    plain = PredictionResponse(customer_id="C", predict="Good", confidence=0.5)
    assert json.loads(plain.model_dump_json()) == {
        "customer_id": "C",
        "predict": "Good",
        "confidence": 0.5,
    }
    repaired = PredictionResponse(
        customer_id="C", predict="Good", confidence=0.5, repaired=["age", "num_of_loan"]
    )
    assert json.loads(repaired.model_dump_json())["repaired"] == ["age", "num_of_loan"]
    published = PredictionResponse.model_json_schema(mode="serialization")
    assert published["properties"]["repaired"]["type"] == "array"
    assert "repaired" not in published["required"]


def test_loan_lists_name_the_unknown_loan() -> None:
    for known in ("Auto Loan, and Payday Loan", "AND Payday Loan", "", "   ", None):
        assert PredictRequest.model_validate_json(body(type_of_loan=known))
    padded = PredictRequest.model_validate_json(body(type_of_loan="  Auto Loan  ")).data
    assert padded.type_of_loan == "Auto Loan"  # stripped, as the loader stores it
    ((loc, message),) = errors_for(body(type_of_loan="Auto Loan, Yacht Loan, and Boat Loan"))
    assert loc == ("data", "type_of_loan")
    assert "'Boat Loan', 'Yacht Loan'" in message


def test_features_are_the_model_features_in_model_order() -> None:
    row = PredictRequest.model_validate_json(body(customer_id="  CUS_0x9  ")).data
    features = row.features()
    assert list(features) == list(MODEL_FEATURES)
    assert features == {name: SMOKE_ROW[name] for name in MODEL_FEATURES}
    assert row.customer_id == "CUS_0x9"
    features["age"] = 99  # a copy: the validated row stays as it was
    assert row.age == SMOKE_ROW["age"]


def test_batch_row_limit_names_the_limit_and_failing_row() -> None:
    limit = settings.api_max_batch_rows()
    row = {"customer_id": "CUS_0x1", **SMOKE_ROW}
    with pytest.raises(ValidationError) as caught:
        BatchPredictRequest.model_validate_json(json.dumps({"data": [row] * (limit + 1)}))
    (error,) = caught.value.errors()
    assert error["loc"] == ("data",) and str(limit) in error["msg"]

    rows = [dict(row) for _ in range(4)]
    rows[2]["age"] = "35"
    with pytest.raises(ValidationError) as caught:
        BatchPredictRequest.model_validate_json(json.dumps({"data": rows}))
    assert [error["loc"] for error in caught.value.errors()] == [("data", 2, "age")]
