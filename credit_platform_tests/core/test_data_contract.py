"""The data contract: its rules on their own, and the promise it exists for: a raw row
loaded for training and the same row sent to the API reach the model as the same input."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from api.predictor import Predictor
from api.schemas import BatchPredictRequest, PredictRequest
from bench.sample_requests import load_sample
from credit_platform.core.data_contract import (
    ACCEPTED_RANGES,
    AMOUNT_LIMIT,
    CATEGORY_VALUES,
    PLAUSIBLE_RANGES,
    WHOLE_NUMBER_LIMIT,
    allowed_values,
    implausible_masks,
    make_implausible_missing,
    unknown_loan_types,
)
from credit_platform.core.derived_features import (
    DERIVED_CATEGORICAL_FEATURES,
    DERIVED_NUMERIC_FEATURES,
)
from credit_platform.core.features import (
    CATEGORICAL_FEATURES,
    FLOAT_FEATURES,
    INTEGER_FEATURES,
    LOAN_TYPES,
    MODEL_FEATURES,
    NUMERIC_FEATURES,
    TEXT_FEATURES,
)
from credit_platform.core.model_input import model_columns, prepare_model_input
from credit_platform.core.model_store import ModelBundle
from credit_platform.ingest.kaggle import clean_kaggle_frame
from credit_platform_tests.model_fixtures import train_tiny_model

# --- the rules ---------------------------------------------------------------------------


def test_masks_put_fillers_before_ranges_and_leave_missing_values_alone() -> None:
    names = ["age", "amount_invested_monthly", "monthly_balance"]
    numbers = np.array(
        [
            [13.0, 10_000.0, -3.33e26],
            [14.0, 5_000.0, -50_000.0],
            [100.0, 5_000.5, -1e9],
            [101.0, np.nan, 50_000.1],
            [np.nan, -0.1, -np.inf],
        ]
    )

    sentinel, below, above = implausible_masks(names, numbers)

    assert sentinel.tolist() == [
        [False, True, True],
        [False, False, False],
        [False, False, True],
        [False, False, False],
        [False, False, True],
    ]
    assert below.tolist() == [[True, False, False]] + [[False] * 3] * 3 + [[False, True, False]]
    assert above[:, 0].tolist() == [False, False, False, True, False]
    assert above[:, 1].tolist() == [False, False, True, False, False]  # 10,000 is a filler
    assert above[:, 2].tolist() == [False, False, False, True, False]

    repaired = numbers.copy()
    made_missing = make_implausible_missing(names, repaired)
    assert (made_missing == (sentinel | below | above)).all()
    assert np.isnan(repaired[made_missing]).all()
    assert (
        repaired[~made_missing & ~np.isnan(numbers)] == numbers[~made_missing & ~np.isnan(numbers)]
    ).all()


def test_loan_lists_follow_kaggle_spelling() -> None:
    assert unknown_loan_types("Auto Loan, and Payday Loan") == ()
    assert unknown_loan_types("and Auto Loan,AND Student Loan") == ()
    assert unknown_loan_types("   ") == ()
    assert unknown_loan_types("Auto Loan, Yacht Loan, and Boat Loan") == ("Boat Loan", "Yacht Loan")
    assert unknown_loan_types("Auto Loan,") == ("",)


def test_every_feature_has_words_for_what_it_allows() -> None:
    for name in MODEL_FEATURES:
        assert "null" in allowed_values(name), name
    assert allowed_values("num_of_loan") == (
        "a whole JSON number (3 or 3.0) from -1,000,000,000 to 1,000,000,000, or null "
        "(missing); values outside 0..12 are treated as missing"
    )
    with pytest.raises(KeyError):
        allowed_values("customer_id")


# --- loading and serving agree -----------------------------------------------------------


@pytest.fixture(scope="module")
def predictor(kaggle_sample: Path) -> Predictor:
    # with the derived features: the tests below hold them equal too
    sample = load_sample(kaggle_sample, rows=1500)
    model, scalers = train_tiny_model(sample, iterations=10, derived=True)
    return Predictor(
        ModelBundle("credit_score_classifier:contract", model, scalers, {}, datetime.now(UTC))
    )


def _whole_numbers(name: str) -> st.SearchStrategy[int]:
    low, high = PLAUSIBLE_RANGES[name]
    return st.one_of(
        st.integers(low, high),
        st.sampled_from([low - 1, low, high, high + 1, -100, -500, 1747, 8678]),
        st.integers(-WHOLE_NUMBER_LIMIT, WHOLE_NUMBER_LIMIT),
    )


def _amounts(name: str) -> st.SearchStrategy[float | int]:
    low, high = PLAUSIBLE_RANGES[name]
    return st.one_of(
        st.floats(low, high),
        st.sampled_from([low, high, 10_000.0, -3.33e26, -1e9, -1e9 - 1, 23_800_000.0, -0.0]),
        st.floats(-AMOUNT_LIMIT, AMOUNT_LIMIT),
        st.integers(-(10**15), 10**15),
    )


def _loan_lists() -> st.SearchStrategy[str]:
    def spell(loans: list[str], last_and: bool, padding: str) -> str:
        if last_and and len(loans) > 1:
            return f"{padding}{', '.join(loans[:-1])}, and {loans[-1]}{padding}"
        return f"{padding}{', '.join(loans)}{padding}"

    return st.builds(
        spell,
        st.lists(st.sampled_from(LOAN_TYPES), max_size=4),
        st.booleans(),
        st.sampled_from(["", " ", "  "]),
    )


RAW_VALUES: dict[str, st.SearchStrategy[Any]] = {
    **{name: _whole_numbers(name) for name in INTEGER_FEATURES},
    **{name: _amounts(name) for name in FLOAT_FEATURES},
    **{name: st.sampled_from(values) for name, values in CATEGORY_VALUES.items()},
    "type_of_loan": _loan_lists(),
}


@st.composite
def raw_rows(draw: st.DrawFn) -> dict[str, Any]:
    """A row as a client would send it: each feature a valid value or null, numbers often
    implausible (outside the range, Kaggle's fillers) but never absurd."""
    return {name: draw(st.none() | RAW_VALUES[name]) for name in MODEL_FEATURES}


def _csv_text(name: str, value: Any, style: int) -> str:
    """The cell a Kaggle file would hold for `value`: Kaggle's own spellings (`40_`,
    "N Years and M Months", blanks for missing) as well as plain ones."""
    if value is None:
        return ""
    if name not in NUMERIC_FEATURES:
        return value
    text = repr(value) if isinstance(value, float) else str(value)
    if name == "credit_history_age" and value >= 0 and style == 1:
        return f"{value // 12} Years and {value % 12} Months"
    return f"{text}_" if style == 2 else text


def loaded_model_input(rows: list[dict], styles: list[int], predictor: Predictor) -> np.ndarray:
    """The loader's path: the rows as a Kaggle CSV frame, cleaned and stored, then the
    training transform."""
    raw = pd.DataFrame(
        [
            {
                "id": f"0x{index:x}",
                "customer_id": "CUS_0x1",
                "month": "March",
                "credit_score": "Standard",
                **{name: _csv_text(name, row[name], style) for name in MODEL_FEATURES},
            }
            for index, (row, style) in enumerate(zip(rows, styles, strict=True))
        ],
        dtype=object,
    )
    frames, summary = clean_kaggle_frame(raw, 2025)
    assert len(frames) == len(rows) and summary.total_dropped == 0
    stored = frames.credit_score_features
    prepared = prepare_model_input(stored, predictor.bundle.scalers, derived=True)
    return prepared.to_numpy(dtype=object), stored


def assert_same_model_input(served: np.ndarray, loaded: np.ndarray) -> None:
    columns = model_columns(derived=True)
    numeric = [columns.index(name) for name in (*NUMERIC_FEATURES, *DERIVED_NUMERIC_FEATURES)]
    text = [
        columns.index(name)
        for name in (*CATEGORICAL_FEATURES, *TEXT_FEATURES, *DERIVED_CATEGORICAL_FEATURES)
    ]
    assert served.shape[1] == loaded.shape[1] == len(columns)
    np.testing.assert_array_equal(
        served[:, numeric].astype("float64"), loaded[:, numeric].astype("float64")
    )
    assert served[:, text].tolist() == loaded[:, text].tolist()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(raw_rows(), min_size=1, max_size=6), data=st.data())
def test_a_raw_row_reaches_the_model_the_same_loaded_or_served(
    predictor: Predictor, rows: list[dict], data: st.DataObject
) -> None:
    styles = data.draw(st.lists(st.integers(0, 2), min_size=len(rows), max_size=len(rows)))
    loaded, stored = loaded_model_input(rows, styles, predictor)

    body = json.dumps({"data": [{"customer_id": "CUS_0x1", **row} for row in rows]})
    validated = BatchPredictRequest.model_validate_json(body).data
    served = predictor.model_input([row.features() for row in validated])

    assert_same_model_input(served.matrix, loaded)
    # What the answer lists as repaired is exactly what the loader nulled.
    for row, repaired, (_, kept) in zip(rows, served.repaired, stored.iterrows(), strict=True):
        sent = [name for name in MODEL_FEATURES if str(row[name]).strip() not in ("None", "")]
        nulled = [name for name in sent if pd.isna(kept[name])]
        assert list(repaired) == nulled


def test_the_served_model_input_is_the_stored_rows_training_input(
    predictor: Predictor, kaggle_sample: Path
) -> None:
    """The shared sample's real rows, raw as a client reads them, against the loader."""
    client_rows = load_sample(kaggle_sample, rows=10_000)
    valid = []
    for row in client_rows.to_dict(orient="records"):
        payload = {
            name: None if isinstance(row[name], float) and math.isnan(row[name]) else row[name]
            for name in MODEL_FEATURES
        }
        for name in INTEGER_FEATURES:
            if payload[name] is not None:
                payload[name] = int(payload[name])
        try:
            PredictRequest.model_validate({"data": {"customer_id": "C", **payload}})
        except ValidationError:  # unknown categories: the loader nulls them, the API refuses
            continue
        valid.append(payload)
    assert len(valid) > 6_000
    served = predictor.model_input(valid)
    assert sum(map(bool, served.repaired)) > 1_000  # the real rows' implausible values
    loaded, _ = loaded_model_input(valid, [0] * len(valid), predictor)
    assert_same_model_input(served.matrix, loaded)


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(NUMERIC_FEATURES),
    value=st.integers() | st.floats() | st.text(max_size=5) | st.booleans(),
)
def test_any_json_number_is_accepted_within_the_limits_or_refused_naming_the_field(
    predictor: Predictor, name: str, value: Any
) -> None:
    from api.predictor import SMOKE_ROW

    body = json.dumps({"data": {"customer_id": "C", **SMOKE_ROW, name: value}})
    acceptable = _within(ACCEPTED_RANGES[name], value) and (
        name not in INTEGER_FEATURES or float(value).is_integer()
    )
    try:
        row = PredictRequest.model_validate_json(body).data
    except ValidationError as error:
        assert not acceptable, value
        ((problem),) = error.errors()
        assert problem["loc"] == ("data", name)
        assert problem["msg"] == f"must be {allowed_values(name)}"
        return
    assert acceptable, value
    (answer,) = predictor.predict([row.features()])
    plausible = _within(PLAUSIBLE_RANGES[name], value) and not _is_filler(name, value)
    assert answer.repaired == (() if plausible else (name,))


def _within(bounds: tuple[float, float], value: Any) -> bool:
    """A JSON number (not text, not a boolean), as a double, finite and within bounds."""
    if isinstance(value, bool | str):
        return False
    try:
        number = float(value)
    except OverflowError:
        return False
    return math.isfinite(number) and bounds[0] <= number <= bounds[1]


def _is_filler(name: str, value: float) -> bool:
    return (name == "amount_invested_monthly" and value == 10_000) or (
        name == "monthly_balance" and value <= -1e9
    )
