"""Features derived from the declared inputs, computed by one function for training and serving.

The trees see ratios they cannot build from thresholds on single columns (debt and
instalments against income), how many loans of each kind a customer lists (the text
feature only gives the words), and the two halves of payment_behaviour (spending level,
payment size). `derived_columns` works on plain arrays of the already repaired, unscaled
values, so `model_input.prepare_model_input` (training) and `api.predictor` (serving) call
the very same code; a model trained with them names them in its `feature_names_`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from credit_platform.core.data_contract import loan_list_items
from credit_platform.core.features import LOAN_TYPES

MISSING_PART = "missing"

RATIO_FEATURES: dict[str, tuple[str, str]] = {
    # name: (numerator, denominator); missing when the denominator is missing or not > 0
    "debt_to_income": ("outstanding_debt", "annual_income"),
    "debt_to_salary": ("outstanding_debt", "monthly_inhand_salary"),
    "emi_to_salary": ("total_emi_per_month", "monthly_inhand_salary"),
    "invested_to_salary": ("amount_invested_monthly", "monthly_inhand_salary"),
    "balance_to_salary": ("monthly_balance", "monthly_inhand_salary"),
}
# one count per loan type, in LOAN_TYPES order
LOAN_COUNT_FEATURES: tuple[str, ...] = tuple(
    "loans_" + re.sub(r"[^a-z]+", "_", loan.lower()) for loan in LOAN_TYPES
)
LOANS_LISTED = "loans_listed"
SPENT_LEVEL = "spent_level"
PAYMENT_VALUE = "payment_value"

DERIVED_NUMERIC_FEATURES: tuple[str, ...] = (
    *RATIO_FEATURES,
    *LOAN_COUNT_FEATURES,
    LOANS_LISTED,
)
DERIVED_CATEGORICAL_FEATURES: tuple[str, ...] = (SPENT_LEVEL, PAYMENT_VALUE)
DERIVED_FEATURES: tuple[str, ...] = DERIVED_NUMERIC_FEATURES + DERIVED_CATEGORICAL_FEATURES
# The raw numbers the derived ones need.
DERIVED_INPUTS: tuple[str, ...] = tuple(
    dict.fromkeys(name for pair in RATIO_FEATURES.values() for name in pair)
)


@functools.lru_cache(maxsize=4096)
def loan_counts(listing: str) -> tuple[float, ...]:
    """How often each of LOAN_TYPES is listed, then how many items are listed (cached: real
    data repeats a few hundred lists, and a request must not pay for parsing them)."""
    items = [item for item in loan_list_items(listing) if item]
    return (*(float(items.count(loan)) for loan in LOAN_TYPES), float(len(items)))


def _behaviour_parts(value: Any) -> tuple[str, str]:
    """("Low", "Small") from "Low_spent_Small_value_payments"; unknown shapes are missing."""
    if isinstance(value, str):
        parts = value.split("_")
        if len(parts) == 5 and parts[1] == "spent" and parts[3] == "value":
            return parts[0], parts[2]
    return MISSING_PART, MISSING_PART


def derived_columns(
    numbers: Mapping[str, np.ndarray],
    type_of_loan: Sequence[Any],
    payment_behaviour: Sequence[Any],
) -> dict[str, np.ndarray]:
    """Every derived feature, by name, for the rows given column-wise: `numbers` maps each
    of DERIVED_INPUTS to float64 values (NaN missing), the texts are raw (None missing)."""
    columns: dict[str, np.ndarray] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for name, (top, bottom) in RATIO_FEATURES.items():
            denominator = np.asarray(numbers[bottom], dtype="float64")
            usable = np.where(denominator > 0, denominator, np.nan)
            columns[name] = np.asarray(numbers[top], dtype="float64") / usable
    counts = np.array(
        [loan_counts(value if isinstance(value, str) else "") for value in type_of_loan],
        dtype="float64",
    ).reshape(len(type_of_loan), len(LOAN_TYPES) + 1)
    for position, name in enumerate((*LOAN_COUNT_FEATURES, LOANS_LISTED)):
        columns[name] = counts[:, position]
    parts = [_behaviour_parts(value) for value in payment_behaviour]
    columns[SPENT_LEVEL] = np.array([spent for spent, _ in parts], dtype=object)
    columns[PAYMENT_VALUE] = np.array([size for _, size in parts], dtype=object)
    return columns
