"""The data contract: what each model feature may hold, for the loaders and the API alike.

A value outside its plausible range, or a filler standing for "unknown", is made missing
by the same rule (`implausible_masks`) when rows are loaded for training and when a
request is scored, so the model never sees one value two ways. What a request may send at
all (`ACCEPTED_RANGES`, categories, loan lists) is also fixed here.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from types import MappingProxyType
from typing import NamedTuple

import numpy as np

from credit_platform.core.features import (
    CREDIT_MIX_VALUES,
    INTEGER_FEATURES,
    LOAN_TYPES,
    MODEL_FEATURES,
    NUMERIC_FEATURES,
    OCCUPATION_VALUES,
    PAYMENT_BEHAVIOUR_VALUES,
    PAYMENT_OF_MIN_AMOUNT_VALUES,
)

# Plausible ranges (inclusive). They come from the real Kaggle data: the true values sit
# well inside them and the corrupted ones (injected by the dataset's author) far outside.
#
# | column                   | min     | max     | real Kaggle values | corrupted values seen   |
# | ------------------------ | ------- | ------- | ------------------ | ----------------------- |
# | age                      | 14      | 100     | 14 .. 56           | -500, 169 .. 8,678      |
# | annual_income            | 0       | 200,000 | 7,006 .. 179,987   | up to 23.8 million      |
# | monthly_inhand_salary    | 0       | 20,000  | 303 .. 15,205      |                         |
# | num_bank_accounts        | 0       | 20      | 0 .. 11            | -1, 26 .. 1,747         |
# | num_credit_card          | 0       | 20      | 0 .. 11            | 21 .. 1,499             |
# | interest_rate            | 0       | 50      | 1 .. 34 (percent)  | 99 .. 5,773             |
# | num_of_loan              | 0       | 12      | 0 .. 9             | -100, 18 .. 1,495       |
# | delay_from_due_date      | -30     | 180     | -5 .. 67 (days)    |                         |
# | num_of_delayed_payment   | 0       | 40      | 0 .. 28            | -3 .. -1, 47 .. 4,281   |
# | changed_credit_limit     | -50     | 100     | -6.5 .. 35         |                         |
# | num_credit_inquiries     | 0       | 30      | 0 .. 17            | 46 .. 2,554             |
# | outstanding_debt         | 0       | 100,000 | 0.2 .. 5,000       |                         |
# | credit_utilization_ratio | 0       | 100     | 20 .. 50 (percent) |                         |
# | credit_history_age       | 0       | 1,200   | 1 .. 404 (months)  |                         |
# | total_emi_per_month      | 0       | 2,000   | 0 .. 1,779         | whole numbers 2,004 ..  |
# |                          |         |         |                    | 81,971 (above salary)   |
# | amount_invested_monthly  | 0       | 5,000   | 0 .. 1,888         | sentinel 10,000         |
# | monthly_balance          | -50,000 | 50,000  | 0.7 .. 1,602       | sentinel -3.33e26       |
PLAUSIBLE_RANGES = MappingProxyType(
    {
        "age": (14, 100),
        "annual_income": (0, 200_000),
        "monthly_inhand_salary": (0, 20_000),
        "num_bank_accounts": (0, 20),
        "num_credit_card": (0, 20),
        "interest_rate": (0, 50),
        "num_of_loan": (0, 12),
        "delay_from_due_date": (-30, 180),
        "num_of_delayed_payment": (0, 40),
        "changed_credit_limit": (-50, 100),
        "num_credit_inquiries": (0, 30),
        "outstanding_debt": (0, 100_000),
        "credit_utilization_ratio": (0, 100),
        "credit_history_age": (0, 1_200),
        "total_emi_per_month": (0, 2_000),
        "amount_invested_monthly": (0, 5_000),
        "monthly_balance": (-50_000, 50_000),
    }
)

# Kaggle's fillers for a missing number, checked before the ranges:
# amount_invested_monthly == 10,000 ("__10000__") and monthly_balance <= -1e9
# ("__-333333333333333333333333333__").
AMOUNT_INVESTED_SENTINEL = 10_000.0
MONTHLY_BALANCE_SENTINEL_AT_OR_BELOW = -1e9
SENTINEL_DESCRIPTIONS = MappingProxyType(
    {
        "amount_invested_monthly": "10000 is Kaggle's filler",
        "monthly_balance": "<= -1e9 (Kaggle's -3.33e26 filler)",
    }
)

# What a request may send at all. Inside these limits an implausible value is made
# missing; beyond them it is malformed (a 400): no source holds such values, a whole
# number this size would not fit the store's INTEGER columns, and the float limit is
# far above Kaggle's -3.33e26 filler, which must still be recognised as a filler.
WHOLE_NUMBER_LIMIT = 10**9
AMOUNT_LIMIT = 1e30
ACCEPTED_RANGES = MappingProxyType(
    {
        name: (-WHOLE_NUMBER_LIMIT, WHOLE_NUMBER_LIMIT)
        if name in INTEGER_FEATURES
        else (-AMOUNT_LIMIT, AMOUNT_LIMIT)
        for name in NUMERIC_FEATURES
    }
)

# Closed categories and their allowed values (from the feature contract; NM is allowed).
CATEGORY_VALUES = MappingProxyType(
    {
        "occupation": OCCUPATION_VALUES,
        "credit_mix": CREDIT_MIX_VALUES,
        "payment_of_min_amount": PAYMENT_OF_MIN_AMOUNT_VALUES,
        "payment_behaviour": PAYMENT_BEHAVIOUR_VALUES,
    }
)

# Every feature can be missing in the stored data (blank, filler, implausible or unknown
# values are nulled there) and the model learns from those gaps, so a request may send
# null for any of them.
NULLABLE_FEATURES: tuple[str, ...] = MODEL_FEATURES


class ImplausibleMasks(NamedTuple):
    """Where values are fillers, below or above their plausible range (disjoint masks of
    the same shape as the numbers; a missing value is in none of them)."""

    sentinel: np.ndarray
    below: np.ndarray
    above: np.ndarray

    def any(self) -> np.ndarray:
        return self.sentinel | self.below | self.above


@functools.lru_cache(maxsize=64)
def _bounds(names: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    """Per-column lows, highs, filler values (== test) and filler ceilings (<= test); NaN
    where a column has no filler, so no comparison with it is ever true."""
    lows = np.array([PLAUSIBLE_RANGES[name][0] for name in names], dtype="float64")
    highs = np.array([PLAUSIBLE_RANGES[name][1] for name in names], dtype="float64")
    equal = np.full(len(names), np.nan)
    at_or_below = np.full(len(names), np.nan)
    for position, name in enumerate(names):
        if name == "amount_invested_monthly":
            equal[position] = AMOUNT_INVESTED_SENTINEL
        elif name == "monthly_balance":
            at_or_below[position] = MONTHLY_BALANCE_SENTINEL_AT_OR_BELOW
    for array in (lows, highs, equal, at_or_below):
        array.setflags(write=False)
    return lows, highs, equal, at_or_below


def implausible_masks(names: Sequence[str], numbers: np.ndarray) -> ImplausibleMasks:
    """Fillers and out-of-range values in `numbers` (float64, one column per name in
    `names`, NaN for missing): one vectorized pass over all columns."""
    lows, highs, equal, at_or_below = _bounds(tuple(names))
    sentinel = (numbers == equal) | (numbers <= at_or_below)
    below = (numbers < lows) & ~sentinel
    above = (numbers > highs) & ~sentinel
    return ImplausibleMasks(sentinel, below, above)


def make_implausible_missing(names: Sequence[str], numbers: np.ndarray) -> np.ndarray:
    """Set fillers and out-of-range values of `numbers` to NaN in place; returns where.

    The same values `implausible_masks` finds, in three numpy operations instead of ten
    (every filler lies outside its plausible range, checked below): this runs on every
    request, where each operation on a one-row array costs about a microsecond."""
    lows, highs, _, _ = _bounds(tuple(names))
    made_missing = (numbers < lows) | (numbers > highs)
    if made_missing.any():
        numbers[made_missing] = np.nan
    return made_missing


def fractional(values: np.ndarray) -> np.ndarray:
    """Where a value of a whole-number feature has a fraction. Text sources carry such
    typos and the loader nulls them; a typed request sending one is refused instead."""
    return ~np.isnan(values) & (values != np.round(values))


def loan_list_items(listing: str) -> list[str]:
    """The loans of a Kaggle list: "Auto Loan, and Payday Loan" -> [Auto Loan, Payday Loan]
    (an empty item stays, and is no loan type)."""
    items = []
    for part in listing.split(","):
        item = part.strip()
        if item.lower().startswith("and "):
            item = item[4:].strip()
        items.append(item)
    return items


@functools.lru_cache(maxsize=4096)
def unknown_loan_types(listing: str) -> tuple[str, ...]:
    """The items of a loan list that are not known loan types, sorted; a blank list names
    no loan and has none (cached: real data repeats a few hundred lists)."""
    if not listing.strip():
        return ()
    return tuple(sorted(set(loan_list_items(listing)) - set(LOAN_TYPES)))


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def allowed_values(name: str) -> str:
    """What a request may send for feature `name`, in words, for errors and the API docs."""
    if name in NUMERIC_FEATURES:
        low, high = ACCEPTED_RANGES[name]
        plausible_low, plausible_high = PLAUSIBLE_RANGES[name]
        kind = "a whole JSON number (3 or 3.0)" if name in INTEGER_FEATURES else "a JSON number"
        filler = f"{SENTINEL_DESCRIPTIONS[name]} and " if name in SENTINEL_DESCRIPTIONS else ""
        return (
            f"{kind} from {_number(low)} to {_number(high)}, or null (missing); {filler}"
            f"values outside {_number(plausible_low)}..{_number(plausible_high)} are treated "
            "as missing"
        )
    if name in CATEGORY_VALUES:
        return f"one of {', '.join(CATEGORY_VALUES[name])}, or null (missing)"
    if name == "type_of_loan":
        return (
            'a comma list of loan types, e.g. "Auto Loan, and Payday Loan", each one of '
            f"{', '.join(LOAN_TYPES)}; empty or null when none is listed"
        )
    raise KeyError(f"{name!r} is not a model feature")


assert set(PLAUSIBLE_RANGES) == set(NUMERIC_FEATURES)
# Fillers are implausible values too, which lets `make_implausible_missing` test ranges only.
_invested_low, _invested_high = PLAUSIBLE_RANGES["amount_invested_monthly"]
assert not _invested_low <= AMOUNT_INVESTED_SENTINEL <= _invested_high
assert PLAUSIBLE_RANGES["monthly_balance"][0] > MONTHLY_BALANCE_SENTINEL_AT_OR_BELOW
assert set(CATEGORY_VALUES) | set(NUMERIC_FEATURES) | {"type_of_loan"} == set(MODEL_FEATURES)
