"""The split (stratified, deterministic, stored as Parquet) and scalers fit on train only."""

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
    SPLIT_COLUMN,
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
    split = stratified_split(rows, valid_fraction=0.2, seed=42)

    assert len(split) == 500
    assert (split[SPLIT_COLUMN] == VALID).sum() == 100
    overall = rows[TARGET].value_counts(normalize=True)
    for side in (TRAIN, VALID):
        shares = split.loc[split[SPLIT_COLUMN] == side, TARGET].value_counts(normalize=True)
        for label, share in overall.items():
            # stratification keeps each label's share within one row of the overall share
            assert abs(shares[label] - share) <= 1 / (split[SPLIT_COLUMN] == side).sum() + 1e-9


def test_split_is_deterministic_whatever_the_row_order():
    rows = synthetic_partition(DAY, rows=300)
    first = stratified_split(rows, valid_fraction=0.2, seed=42)
    shuffled = rows.sample(frac=1.0, random_state=3)
    second = stratified_split(shuffled, valid_fraction=0.2, seed=42)
    other_seed = stratified_split(rows, valid_fraction=0.2, seed=43)

    assert _ids(first, VALID) == _ids(second, VALID)
    assert _ids(first, VALID) != _ids(other_seed, VALID)
    assert _ids(first, TRAIN).isdisjoint(_ids(first, VALID))


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["Good"] * 10 + ["Poor"] * 10 + ["Standard"], "Standard: 1 row"),
        (["Good"] * 20, "at least two labels"),
        (["Good"] * 10 + ["Excellent"] * 10, "Excellent"),
        (["Good", "Good", "Poor", "Poor", "Standard", "Standard"], "each side needs"),
    ],
)
def test_split_refuses_rows_it_cannot_stratify(labels, message):
    rows = synthetic_partition(DAY, rows=len(labels)).assign(**{TARGET: labels})
    with pytest.raises(SplitError, match=message):
        stratified_split(rows, valid_fraction=0.2, seed=42)


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
    assert set(stored[SPLIT_COLUMN]) == {TRAIN, VALID}
    assert stored["annual_income"].isna().any()  # missing values survive the round trip
    pd.testing.assert_frame_equal(stored, result.output_for_node("train_valid_split"))

    (materialization,) = result.asset_materializations_for_node("train_valid_split")
    metadata = materialization.metadata
    assert metadata["rows_train"].value == 160
    assert metadata["rows_valid"].value == 40
    assert "| Good |" in metadata["label_distribution"].value
    preview = metadata["preview"].value
    assert preview.startswith("| base_dt | id | customer_id |")
    assert preview.count("\n") == 6  # header, rule, five rows


def test_split_asset_fails_clearly_on_an_empty_partition(sqlite_url, tmp_path):
    init_schema(sqlite_url).dispose()
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
    message = failure.step_failure_data.user_failure_data.description
    assert PARTITION in message
    assert "credit_score_features_target" in message
    assert not (tmp_path / "storage" / "train_valid_split" / f"{PARTITION}.parquet").exists()


def test_scalers_are_fit_on_train_rows_only():
    split = stratified_split(synthetic_partition(DAY, rows=300), valid_fraction=0.2, seed=42)
    context = build_asset_context(partition_key=PARTITION)
    fitted = scalers_asset(context, split).value

    train = train_rows(split)
    for name in NUMERIC_FEATURES:
        median = np.nanmedian(pd.to_numeric(train[name], errors="coerce").astype(float))
        assert fitted[name].center_[0] == pytest.approx(median)

    # Wildly different validation rows change nothing.
    tampered = split.copy()
    is_valid = tampered[SPLIT_COLUMN] == VALID
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
