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
    FEATURES,
    INTEGER_FEATURES,
    LOAN_TYPES,
    MODEL_FEATURES,
    NUMERIC_FEATURES,
)

# Plausible ranges (inclusive), from each feature's declaration in `core.features`, which
# also notes the real and the corrupted values the ranges were chosen between.
PLAUSIBLE_RANGES = MappingProxyType(
    {feature.name: feature.plausible for feature in FEATURES if feature.numeric}
)

# Fillers for a missing number, checked before the ranges: Kaggle writes
# amount_invested_monthly == 10,000 ("__10000__") and monthly_balance <= -1e9
# ("__-333333333333333333333333333__").
FILLERS = MappingProxyType({feature.name: feature.filler for feature in FEATURES if feature.filler})
AMOUNT_INVESTED_SENTINEL = FILLERS["amount_invested_monthly"].equal
MONTHLY_BALANCE_SENTINEL_AT_OR_BELOW = FILLERS["monthly_balance"].at_or_below
SENTINEL_DESCRIPTIONS = MappingProxyType(
    {name: filler.description for name, filler in FILLERS.items()}
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

# Closed categories (and closed single-valued texts) and their allowed values.
CATEGORY_VALUES = MappingProxyType(
    {
        feature.name: feature.values
        for feature in FEATURES
        if not feature.numeric and not feature.listing
    }
)
# Texts listing several values at once (Kaggle's loan list); loan types are the only such
# list the rules below know how to read.
LISTING_FEATURES: tuple[str, ...] = tuple(feature.name for feature in FEATURES if feature.listing)

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
        filler = FILLERS.get(name)
        if filler is not None and filler.equal is not None:
            equal[position] = filler.equal
        if filler is not None and filler.at_or_below is not None:
            at_or_below[position] = filler.at_or_below
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
    if name in LISTING_FEATURES:
        return (
            'a comma list of loan types, e.g. "Auto Loan, and Payday Loan", each one of '
            f"{', '.join(LOAN_TYPES)}; empty or null when none is listed"
        )
    raise KeyError(f"{name!r} is not a model feature")


assert set(PLAUSIBLE_RANGES) == set(NUMERIC_FEATURES)
assert set(CATEGORY_VALUES) | set(NUMERIC_FEATURES) | set(LISTING_FEATURES) == set(MODEL_FEATURES)
# A listing is read as a loan list (`loan_list_items`, `unknown_loan_types`).
assert all(FEATURES[MODEL_FEATURES.index(name)].values == LOAN_TYPES for name in LISTING_FEATURES)
# Fillers are implausible values too, which lets `make_implausible_missing` test ranges only.
for _name, _filler in FILLERS.items():
    _low, _high = PLAUSIBLE_RANGES[_name]
    assert _filler.equal is None or not _low <= _filler.equal <= _high, _name
    assert _filler.at_or_below is None or _filler.at_or_below < _low, _name
