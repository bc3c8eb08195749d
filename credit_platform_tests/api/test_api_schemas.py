"""The request bodies in-process (no server): what a whole-number field takes and refuses,
the schema the OpenAPI page publishes for it, loan lists, and the features a row hands to
the model and the log."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from api.predictor import SMOKE_ROW
from api.schemas import BatchPredictRequest, PredictionFeatures, PredictRequest
from credit_platform.core import settings
from credit_platform.core.features import INTEGER_FEATURES, MODEL_FEATURES


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


def test_whole_number_bounds_are_checked_and_published() -> None:
    assert errors_for(body(age=13)) == [
        (("data", "age"), "Input should be greater than or equal to 14")
    ]
    assert errors_for(body(interest_rate=101.0))[0][0] == ("data", "interest_rate")
    assert errors_for(body(num_of_loan=-1))[0][0] == ("data", "num_of_loan")

    schema = PredictionFeatures.model_json_schema()["properties"]
    assert schema["age"] == {
        "type": "integer",
        "minimum": 14,
        "maximum": 100,
        "title": "Age",
        "description": "years",
    }
    assert schema["num_bank_accounts"]["type"] == "integer"
    assert schema["num_bank_accounts"]["minimum"] == 0
    nullable = schema["num_of_delayed_payment"]["anyOf"]
    assert {"type": "integer", "minimum": 0} in nullable and {"type": "null"} in nullable


def test_loan_lists_name_the_unknown_loan() -> None:
    for known in ("Auto Loan, and Payday Loan", "", "   ", None):
        assert PredictRequest.model_validate_json(body(type_of_loan=known))
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
