"""The loader's cleaning of single columns: numbers read from text as the API reads them
from JSON, and the contract's rules applied and counted by reason."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from pydantic import TypeAdapter

from credit_platform.ingest.cleaning import CleaningLog, apply_numeric_rules, numbers_from_text


def test_numbers_are_read_as_the_nearest_double_like_json() -> None:
    # Decimals of the shared sample that pandas' own parser reads one unit off.
    texts = ["227.92190248971215", "237.24886762319957", "195.71956277239212", "0.1", "1e4"]
    rng = np.random.default_rng(7)
    texts += [repr(float(value)) for value in rng.uniform(-5e4, 5e4, 2000)]

    parsed = numbers_from_text("monthly_balance", pd.Series(texts, dtype=object), CleaningLog())

    from_json = TypeAdapter(list[float]).validate_json(f"[{','.join(texts)}]")
    assert parsed.tolist() == from_json == [float(text) for text in texts]
    assert json.loads(f"[{texts[0]}]")[0] == parsed.iloc[0]


def test_text_that_is_no_number_is_nulled_and_counted() -> None:
    log = CleaningLog()
    texts = pd.Series(["12_", "1_000", "abc", "", "_", "4.5"], dtype=object)

    parsed = numbers_from_text("num_of_loan", texts, log)

    assert parsed.tolist() == [12, pd.NA, pd.NA, pd.NA, pd.NA, pd.NA]
    assert log.nulled[("num_of_loan", "not_a_number")] == 2  # 1_000 and abc
    assert log.nulled[("num_of_loan", "placeholder")] == 1
    assert log.nulled[("num_of_loan", "not_an_integer")] == 1
    assert log.missing["num_of_loan"] == 1
    assert log.repaired[("num_of_loan", "trailing_underscore")] == 1


def test_fillers_and_out_of_range_values_are_nulled_by_reason() -> None:
    log = CleaningLog()
    balances = pd.Series([-3.33e26, -1e9, -50_000.0, 50_000.5, 12.5, np.nan, -np.inf])

    cleaned = apply_numeric_rules("monthly_balance", balances, log)

    assert cleaned.isna().tolist() == [True, True, False, True, False, True, True]
    assert log.nulled[("monthly_balance", "sentinel")] == 3  # <= -1e9, -inf included
    assert log.nulled[("monthly_balance", "above_range")] == 1
    assert ("monthly_balance", "below_range") not in log.nulled

    invested = apply_numeric_rules(
        "amount_invested_monthly", pd.Series([10_000.0, 5_000.0, 5_001.0, -0.5]), log
    )
    assert invested.isna().tolist() == [True, False, True, True]
    assert log.nulled[("amount_invested_monthly", "sentinel")] == 1
    assert log.nulled[("amount_invested_monthly", "above_range")] == 1
    assert log.nulled[("amount_invested_monthly", "below_range")] == 1
