"""The derived features: what each one holds for real-looking and missing values, and the
training transform placing them after the inputs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from credit_platform.core.derived_features import (
    DERIVED_FEATURES,
    DERIVED_INPUTS,
    derived_columns,
)
from credit_platform.core.features import MODEL_FEATURES, NUMERIC_FEATURES
from credit_platform.core.model_input import (
    fit_scalers,
    model_columns,
    prepare_model_input,
    uses_derived_features,
)


def _numbers(**values: list[float]) -> dict[str, np.ndarray]:
    return {name: np.array(values[name], dtype="float64") for name in DERIVED_INPUTS}


def test_ratios_counts_and_behaviour_parts_of_two_customers() -> None:
    columns = derived_columns(
        _numbers(
            outstanding_debt=[1200.0, 500.0],
            annual_income=[48_000.0, 0.0],
            monthly_inhand_salary=[4000.0, math.nan],
            total_emi_per_month=[200.0, 80.0],
            amount_invested_monthly=[400.0, 10.0],
            monthly_balance=[-100.0, 20.0],
        ),
        ["Auto Loan, Payday Loan, and Auto Loan", None],
        ["High_spent_Large_value_payments", None],
    )
    assert list(columns) == list(DERIVED_FEATURES)
    assert columns["debt_to_income"][0] == 1200 / 48_000
    assert columns["debt_to_salary"][0] == 1200 / 4000
    assert columns["emi_to_salary"][0] == 200 / 4000
    assert columns["invested_to_salary"][0] == 400 / 4000
    assert columns["balance_to_salary"][0] == -100 / 4000
    # a zero income or a missing salary makes the ratios missing, never infinite
    assert all(math.isnan(columns[name][1]) for name in list(DERIVED_FEATURES)[:5])
    assert columns["loans_auto_loan"].tolist() == [2.0, 0.0]
    assert columns["loans_payday_loan"].tolist() == [1.0, 0.0]
    assert columns["loans_student_loan"].tolist() == [0.0, 0.0]
    assert columns["loans_listed"].tolist() == [3.0, 0.0]
    assert columns["spent_level"].tolist() == ["High", "missing"]
    assert columns["payment_value"].tolist() == ["Large", "missing"]


def test_the_training_transform_appends_them_from_unscaled_values() -> None:
    rows = pd.DataFrame(
        {
            **{
                name: [float(index + 1), float(index + 3)]
                for index, name in enumerate(NUMERIC_FEATURES)
            },
            "occupation": ["Lawyer", None],
            "credit_mix": ["Good", "Bad"],
            "payment_of_min_amount": ["No", "Yes"],
            "type_of_loan": ["Student Loan", None],
            "payment_behaviour": ["Low_spent_Small_value_payments", None],
        }
    )
    scalers = fit_scalers(rows)
    plain = prepare_model_input(rows, scalers)
    derived = prepare_model_input(rows, scalers, derived=True)
    assert list(plain.columns) == list(MODEL_FEATURES) == list(model_columns(False))
    assert list(derived.columns) == list(model_columns(True))
    assert list(derived.columns) == [*MODEL_FEATURES, *DERIVED_FEATURES]
    pd.testing.assert_frame_equal(derived[list(MODEL_FEATURES)], plain)
    ratio = rows["outstanding_debt"] / rows["annual_income"]
    np.testing.assert_array_equal(derived["debt_to_income"].to_numpy(), ratio.to_numpy())
    assert derived["loans_student_loan"].tolist() == [1.0, 0.0]
    assert derived["spent_level"].tolist() == ["Low", "missing"]


def test_a_model_says_whether_it_takes_them() -> None:
    class Named:
        def __init__(self, names: tuple[str, ...]) -> None:
            self.feature_names_ = list(names)

    assert not uses_derived_features(Named(MODEL_FEATURES))
    assert uses_derived_features(Named(model_columns(True)))
