"""Load-side cleaning: parsing the text of a source file, counting every repair.

The rules themselves (plausible ranges, fillers, categories, loan lists) are the data
contract in `credit_platform.core.data_contract`, which the API applies too; this module
turns raw text into values, applies those rules to columns, and counts in a `CleaningLog`
every value it changes or sets to NULL, under its column and a reason code. Rows are only
dropped when they cannot be stored at all (no id, customer or label) and are counted too.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import pandas as pd

# The contract's names are re-exported for the loaders, which import them from here.
from credit_platform.core.data_contract import (
    AMOUNT_INVESTED_SENTINEL,
    CATEGORY_VALUES,
    MONTHLY_BALANCE_SENTINEL_AT_OR_BELOW,
    PLAUSIBLE_RANGES,
    SENTINEL_DESCRIPTIONS,
    fractional,
    implausible_masks,
    unknown_loan_types,
)
from credit_platform.core.features import INTEGER_FEATURES
from credit_platform.core.schema import ID_LENGTH, TEXT_LENGTH

# Kaggle's fillers for a missing value; a value made only of underscores is one too.
PLACEHOLDERS = frozenset({"!@9#%8", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"})
_UNDERSCORES_ONLY = re.compile(r"^_+$")
_SSN = re.compile(r"^\d{3}-\d{2}-\d{4}$")
_YEARS_AND_MONTHS = re.compile(r"^(\d+)\s*years?\s*and\s*(\d+)\s*months?$", re.IGNORECASE)

NAME_LENGTH = 128

# Reason codes and what they mean, for the summary.
REASONS = MappingProxyType(
    {
        "placeholder": "placeholder such as _ or !@9#%8 set to NULL",
        "trailing_underscore": "underscores around a number stripped (40_ -> 40)",
        "not_a_number": "not a number, set to NULL",
        "not_an_integer": "fraction in an integer column, set to NULL",
        "below_range": "below the plausible range, set to NULL",
        "above_range": "above the plausible range, set to NULL",
        "sentinel": "filler value standing for a missing one, set to NULL",
        "unknown_category": "value outside the allowed set, set to NULL",
        "bad_ssn": "not an SSN of the form 123-45-6789, set to NULL",
        "years_and_months": "'N Years and M Months' converted to months",
        "unparseable": "not 'N Years and M Months' nor a number of months, set to NULL",
        "too_long": "longer than the column allows, set to NULL",
    }
)


@dataclass
class CleaningLog:
    """What cleaning did: missing values per column, nulls and repairs per (column, reason),
    dropped rows per reason."""

    missing: Counter = field(default_factory=Counter)
    nulled: Counter = field(default_factory=Counter)
    repaired: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)

    def count(self, counter: Counter, key, mask: pd.Series | np.ndarray) -> None:
        hits = int(np.count_nonzero(np.asarray(mask, dtype=bool)))
        if hits:
            counter[key] += hits

    def count_missing(self, column: str, values: pd.Series) -> None:
        self.count(self.missing, column, values.isna())

    def merge(self, other: CleaningLog) -> None:
        for mine, theirs in (
            (self.missing, other.missing),
            (self.nulled, other.nulled),
            (self.repaired, other.repaired),
            (self.dropped, other.dropped),
        ):
            mine.update(theirs)


def _null_where(
    values: pd.Series, mask: pd.Series, column: str, reason: str, log: CleaningLog
) -> pd.Series:
    mask = mask.fillna(False).astype(bool) & values.notna()
    log.count(log.nulled, (column, reason), mask)
    if values.dtype == object:
        return values.where(~mask, None)  # text columns keep None, not NaN, for missing
    return values.mask(mask)


def text_or_null(column: str, text: pd.Series, log: CleaningLog) -> pd.Series:
    """Raw CSV strings with surrounding blanks removed; empty cells become NULL (counted as
    missing) and placeholders become NULL (counted as nulled)."""
    stripped = text.astype("object").where(text.notna(), "").astype(str).str.strip()
    empty = stripped.eq("")
    placeholder = ~empty & (stripped.isin(PLACEHOLDERS) | stripped.str.match(_UNDERSCORES_ONLY))
    log.count(log.missing, column, empty)
    log.count(log.nulled, (column, "placeholder"), placeholder)
    return stripped.where(~(empty | placeholder), None)


def apply_numeric_rules(column: str, values: pd.Series, log: CleaningLog) -> pd.Series:
    """The data contract's numeric rules: fillers and out-of-range values are nulled (see
    `credit_platform.core.data_contract`), and so are fractions in integer columns.

    Returns nullable Int64 for integer features, float64 otherwise.
    """
    values = pd.to_numeric(values, errors="coerce").astype("float64")
    masks = implausible_masks([column], values.to_numpy()[:, np.newaxis])
    for reason, mask in zip(("sentinel", "below_range", "above_range"), masks, strict=True):
        values = _null_where(values, pd.Series(mask[:, 0], index=values.index), column, reason, log)
    if column in INTEGER_FEATURES:
        fraction = pd.Series(fractional(values.to_numpy()), index=values.index)
        values = _null_where(values, fraction, column, "not_an_integer", log)
        return values.round().astype("Int64")
    return values


def parse_numbers(text: pd.Series) -> pd.Series:
    """float64 of each number written in `text`, NaN where there is none. pandas decides
    what is a number; the value is the double nearest to the text, as a JSON parser (the
    API's) reads it: pandas' own parser is off by one unit in the last place for about
    one decimal in five."""
    coerced = pd.to_numeric(text, errors="coerce").astype("float64")
    numeric = coerced.notna()
    if numeric.any():
        written = text[numeric]
        try:
            coerced[numeric] = written.astype(str).astype("float64")
        except (TypeError, ValueError):  # a form pandas reads and Python does not
            coerced[numeric] = [
                _nearest_double(item, coerced[index]) for index, item in written.items()
            ]
    return coerced


def _nearest_double(text: object, fallback: float) -> float:
    try:
        return float(str(text))
    except ValueError:
        return fallback


def numbers_from_text(column: str, text: pd.Series, log: CleaningLog) -> pd.Series:
    """Parse a raw numeric column: placeholders, `40_`-style underscores, non-numbers,
    then the numeric rules. An underscore repair is counted only if the value survives."""
    present = text_or_null(column, text, log)
    unwrapped = present.str.strip("_")
    had_underscores = present.notna() & unwrapped.ne(present)
    parsed = parse_numbers(unwrapped)
    log.count(log.nulled, (column, "not_a_number"), parsed.isna() & unwrapped.notna())
    cleaned = apply_numeric_rules(column, parsed, log)
    log.count(log.repaired, (column, "trailing_underscore"), had_underscores & cleaned.notna())
    return cleaned


def history_months_from_text(text: pd.Series, log: CleaningLog) -> pd.Series:
    """credit_history_age as months: "21 Years and 5 Months" -> 257; a plain number is
    taken as months already."""
    column = "credit_history_age"
    present = text_or_null(column, text, log)
    parts = present.str.extract(_YEARS_AND_MONTHS)
    years = pd.to_numeric(parts[0], errors="coerce")
    months = pd.to_numeric(parts[1], errors="coerce")
    from_words = years * 12 + months
    plain = parse_numbers(present.where(from_words.isna()).str.strip("_"))
    combined = from_words.fillna(plain).astype("float64")
    log.count(log.nulled, (column, "unparseable"), combined.isna() & present.notna())
    cleaned = apply_numeric_rules(column, combined, log)
    log.count(log.repaired, (column, "years_and_months"), from_words.notna() & cleaned.notna())
    return cleaned


def apply_category_rule(
    column: str, values: pd.Series, allowed: Collection[str], log: CleaningLog
) -> pd.Series:
    """Values outside `allowed` become NULL (counted as unknown_category)."""
    values = values.astype("object").where(values.notna(), None)
    unknown = values.notna() & ~values.isin(list(allowed))
    return _null_where(values, unknown, column, "unknown_category", log).astype("object")


def apply_loan_list_rule(values: pd.Series, log: CleaningLog) -> pd.Series:
    """type_of_loan stays Kaggle's text ("Auto Loan, and Payday Loan"); a list naming an
    unknown loan type (the contract's `unknown_loan_types`), or too long for the column,
    becomes NULL."""
    column = "type_of_loan"
    values = values.astype("object").where(values.notna(), None)
    distinct = values.dropna().unique()
    unknown = {value for value in distinct if unknown_loan_types(value)}
    values = _null_where(values, values.isin(unknown), column, "unknown_category", log)
    too_long = values.str.len().gt(TEXT_LENGTH)
    return _null_where(values, too_long, column, "too_long", log).astype("object")


def apply_ssn_rule(values: pd.Series, log: CleaningLog) -> pd.Series:
    values = values.astype("object").where(values.notna(), None)
    malformed = values.notna() & ~values.str.match(_SSN).eq(True)
    return _null_where(values, malformed, "ssn", "bad_ssn", log).astype("object")


def apply_length_rule(
    column: str, values: pd.Series, max_length: int, log: CleaningLog
) -> pd.Series:
    values = values.astype("object").where(values.notna(), None)
    too_long = values.str.len().gt(max_length)
    return _null_where(values, too_long, column, "too_long", log).astype("object")


def storable_rows(
    keys: pd.DataFrame,
    labels: Collection[str],
    log: CleaningLog,
    *,
    seen_ids: set[str] | None = None,
) -> pd.Series:
    """Which rows can be stored: those with an id, a customer, a known label and a date.

    `keys` has columns id, customer_id, credit_score (text or None) and date (or None).
    A row repeating an id already seen in the same input is not storable either; when the
    input comes in chunks, `seen_ids` holds the ids kept from earlier chunks and gains
    this chunk's. Each rejected row is counted once, under the first reason that applies.
    """
    checks = [
        ("missing id", keys["id"].isna()),
        (f"id longer than {ID_LENGTH} characters", keys["id"].str.len().gt(ID_LENGTH)),
        ("missing customer_id", keys["customer_id"].isna()),
        (
            f"customer_id longer than {ID_LENGTH} characters",
            keys["customer_id"].str.len().gt(ID_LENGTH),
        ),
        ("missing credit_score label", keys["credit_score"].isna()),
        (f"credit_score not one of {', '.join(labels)}", ~keys["credit_score"].isin(labels)),
        ("missing or unknown month", keys["date"].isna()),
    ]
    keep = pd.Series(True, index=keys.index)
    for reason, bad in checks:
        bad = bad.fillna(False).astype(bool) & keep
        log.count(log.dropped, reason, bad)
        keep &= ~bad
    repeated = keep & keys["id"].where(keep).duplicated(keep="first")
    if seen_ids:
        repeated |= keep & keys["id"].isin(seen_ids)
    log.count(log.dropped, "id repeated within the input", repeated)
    keep &= ~repeated
    if seen_ids is not None:
        seen_ids.update(keys["id"][keep])
    return keep


__all__ = [
    "AMOUNT_INVESTED_SENTINEL",
    "CATEGORY_VALUES",
    "MONTHLY_BALANCE_SENTINEL_AT_OR_BELOW",
    "NAME_LENGTH",
    "PLACEHOLDERS",
    "PLAUSIBLE_RANGES",
    "SENTINEL_DESCRIPTIONS",
    "REASONS",
    "CleaningLog",
    "apply_category_rule",
    "apply_length_rule",
    "apply_loan_list_rule",
    "apply_numeric_rules",
    "apply_ssn_rule",
    "storable_rows",
    "history_months_from_text",
    "numbers_from_text",
    "parse_numbers",
    "text_or_null",
]
