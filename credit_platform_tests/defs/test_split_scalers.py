"""The split (train / valid / test: stratified, deterministic, stable across overlapping
windows, stored as Parquet) and scalers fit on train only."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from dagster import DagsterEventType, build_asset_context, materialize

from credit_platform.core.db import init_schema
from credit_platform.core.features import NUMERIC_FEATURES, TARGET
from credit_platform.defs.assets.scalers import scalers as scalers_asset
from credit_platform.defs.assets.scalers import train_rows
from credit_platform.defs.assets.split import (
    SIDES,
    SPLIT_COLUMN,
    TEST,
    TRAIN,
    VALID,
    SplitError,
    stratified_split,
    train_valid_split,
)
from credit_platform_tests.training_fixtures import (
    insert_partition,
    synthetic_partition,
    training_resources,
)

DAY = date(2025, 1, 31)
PARTITION = DAY.isoformat()


def _ids(split: pd.DataFrame, side: str) -> set[str]:
    return set(split.loc[split[SPLIT_COLUMN] == side, "id"])


def test_split_is_stratified_by_label():
    rows = synthetic_partition(DAY, rows=500)
    split = stratified_split(rows, valid_fraction=0.2, seed=42, test_fraction=0.2)

    assert len(split) == 500
    sizes = split[SPLIT_COLUMN].value_counts()
    assert abs(sizes[VALID] - 100) <= 2 and abs(sizes[TEST] - 100) <= 2
    overall = rows[TARGET].value_counts(normalize=True)
    for side in SIDES:
        shares = split.loc[split[SPLIT_COLUMN] == side, TARGET].value_counts(normalize=True)
        for label, share in overall.items():
            # each label is cut by its own share: within a couple of rows of the overall mix
            assert abs(shares[label] - share) <= 2 / sizes[side] + 1e-9


def test_split_is_deterministic_whatever_the_row_order():
    rows = synthetic_partition(DAY, rows=300)
    first = stratified_split(rows, valid_fraction=0.2, seed=42)
    shuffled = rows.sample(frac=1.0, random_state=3)
    second = stratified_split(shuffled, valid_fraction=0.2, seed=42)
    other_seed = stratified_split(rows, valid_fraction=0.2, seed=43)

    for side in SIDES:
        assert _ids(first, side) == _ids(second, side)
    assert _ids(first, TEST) != _ids(other_seed, TEST)
    assert _ids(first, TRAIN).isdisjoint(_ids(first, VALID) | _ids(first, TEST))
    assert _ids(first, VALID).isdisjoint(_ids(first, TEST))


def test_a_row_keeps_its_side_in_the_next_days_overlapping_window():
    """The next partition's window drops the oldest rows and adds new ones; rows in both stay
    on their side (but for a few at a label's cut), so the next day's test rows are not rows
    the previous day's model was trained on."""
    rows = synthetic_partition(DAY, rows=1000, seed=5)
    today = rows.iloc[:900]
    tomorrow = rows.iloc[60:]
    split_today = stratified_split(today, valid_fraction=0.2, seed=42)
    split_tomorrow = stratified_split(tomorrow, valid_fraction=0.2, seed=42)

    trained_today = _ids(split_today, TRAIN) | _ids(split_today, VALID)
    test_tomorrow = _ids(split_tomorrow, TEST)
    leaked = test_tomorrow & trained_today
    assert len(leaked) <= 0.05 * len(test_tomorrow)
    # a random split of each day would put about 80 % of tomorrow's shared test rows in train
    shared_test = test_tomorrow & set(today["id"])
    assert len(shared_test & _ids(split_today, TEST)) >= 0.9 * len(shared_test)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["Good"] * 10 + ["Poor"] * 10 + ["Standard"], "Standard: 1"),
        (["Good"] * 20, "at least two labels"),
        (["Good"] * 10 + ["Excellent"] * 10, "Excellent"),
        (["Good", "Good", "Poor", "Poor", "Standard", "Standard"], "at least 3"),
    ],
)
def test_split_refuses_rows_it_cannot_stratify(labels, message):
    rows = synthetic_partition(DAY, rows=len(labels)).assign(**{TARGET: labels})
    with pytest.raises(SplitError, match=message):
        stratified_split(rows, valid_fraction=0.2, seed=42, test_fraction=0.4)


def test_split_refuses_a_label_left_without_train_rows():
    rows = synthetic_partition(DAY, rows=33).assign(**{TARGET: ["Good"] * 3 + ["Poor"] * 30})
    with pytest.raises(SplitError, match="no train rows would be left for Good"):
        stratified_split(rows, valid_fraction=0.5, seed=42, test_fraction=0.4)


def test_split_refuses_a_test_side_below_the_minimum():
    rows = synthetic_partition(DAY, rows=100)
    with pytest.raises(SplitError, match=r"100 rows .* 20 test rows; .* at least 30 rows"):
        stratified_split(rows, valid_fraction=0.2, seed=42, min_test_rows=30)


def test_split_asset_reads_its_partition_and_stores_parquet(store_url, tmp_path):
    engine = init_schema(store_url)
    insert_partition(engine, synthetic_partition(DAY, rows=200, seed=1))
    # another day's rows must not leak into this partition
    insert_partition(engine, synthetic_partition(date(2025, 1, 30), rows=50, seed=2))
    engine.dispose()

    result = materialize(
        [train_valid_split],
        partition_key=PARTITION,
        resources=training_resources(tmp_path, store_url),
    )

    stored_file = tmp_path / "storage" / "train_valid_split" / f"{PARTITION}.parquet"
    stored = pd.read_parquet(stored_file)
    assert len(stored) == 200
    assert set(stored["base_dt"]) == {DAY}
    assert set(stored[SPLIT_COLUMN]) == {TRAIN, VALID, TEST}
    assert stored["annual_income"].isna().any()  # missing values survive the round trip
    pd.testing.assert_frame_equal(stored, result.output_for_node("train_valid_split"))

    (materialization,) = result.asset_materializations_for_node("train_valid_split")
    metadata = materialization.metadata
    sizes = stored[SPLIT_COLUMN].value_counts()
    for side in SIDES:
        assert metadata[f"rows_{side}"].value == sizes[side]
    assert abs(sizes[TEST] - 40) <= 1 and abs(sizes[VALID] - 40) <= 1
    assert "| Good |" in metadata["label_distribution"].value
    preview = metadata["preview"].value
    assert preview.startswith("| base_dt | id | customer_id |")
    assert preview.count("\n") == 6  # header, rule, five rows


def split_failure(tmp_path, sqlite_url) -> str:
    """Materializes the split of PARTITION, which must fail; returns the failure's text."""
    result = materialize(
        [train_valid_split],
        partition_key=PARTITION,
        resources=training_resources(tmp_path, sqlite_url),
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [
        event for event in result.all_events if event.event_type == DagsterEventType.STEP_FAILURE
    ]
    return failure.step_failure_data.user_failure_data.description


def test_split_asset_fails_clearly_on_an_empty_partition(sqlite_url, tmp_path):
    init_schema(sqlite_url).dispose()
    message = split_failure(tmp_path, sqlite_url)
    assert PARTITION in message
    assert "credit_score_features_target" in message
    assert not (tmp_path / "storage" / "train_valid_split" / f"{PARTITION}.parquet").exists()


def test_split_asset_fails_naming_the_day_and_counts_when_test_would_be_too_small(
    sqlite_url, tmp_path
):
    engine = init_schema(sqlite_url)
    insert_partition(engine, synthetic_partition(DAY, rows=60))
    engine.dispose()
    message = split_failure(tmp_path, sqlite_url)
    assert PARTITION in message
    assert "60 rows" in message and "12 test rows" in message and "at least 30" in message
    assert not (tmp_path / "storage" / "train_valid_split" / f"{PARTITION}.parquet").exists()


def test_scalers_are_fit_on_train_rows_only():
    split = stratified_split(synthetic_partition(DAY, rows=300), valid_fraction=0.2, seed=42)
    context = build_asset_context(partition_key=PARTITION)
    fitted = scalers_asset(context, split).value

    train = train_rows(split)
    for name in NUMERIC_FEATURES:
        median = np.nanmedian(pd.to_numeric(train[name], errors="coerce").astype(float))
        assert fitted[name].center_[0] == pytest.approx(median)

    # Wildly different validation and test rows change nothing.
    tampered = split.copy()
    is_valid = tampered[SPLIT_COLUMN] != TRAIN
    for name in NUMERIC_FEATURES:
        tampered.loc[is_valid, name] = 1e9
    refitted = scalers_asset(build_asset_context(partition_key=PARTITION), tampered).value
    for name in NUMERIC_FEATURES:
        assert refitted[name].center_[0] == fitted[name].center_[0]
        assert refitted[name].scale_[0] == fitted[name].scale_[0]


def test_scalers_asset_reads_the_stored_split(sqlite_url, tmp_path):
    engine = init_schema(sqlite_url)
    insert_partition(engine, synthetic_partition(DAY, rows=200))
    engine.dispose()

    result = materialize(
        [train_valid_split, scalers_asset],
        partition_key=PARTITION,
        resources=training_resources(tmp_path, sqlite_url),
    )

    stored = pd.read_parquet(tmp_path / "storage" / "train_valid_split" / f"{PARTITION}.parquet")
    fitted = result.output_for_node("scalers")
    expected = np.nanmedian(train_rows(stored)["age"].astype(float))
    assert fitted["age"].center_[0] == pytest.approx(expected)
    (materialization,) = result.asset_materializations_for_node("scalers")
    assert "| age |" in materialization.metadata["scalers"].value
    assert materialization.metadata["fit_rows"].value == len(train_rows(stored))
