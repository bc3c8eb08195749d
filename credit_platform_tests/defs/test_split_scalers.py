"""The split (train / valid / test: grouped by customer, stratified, deterministic, stable
across overlapping windows, optionally out of time, stored as Parquet) and scalers fit on
train only."""

from __future__ import annotations

from datetime import date, timedelta

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
    customer_labels,
    grouped_split,
    out_of_time_cutoff,
    train_valid_split,
    typed_rows,
)
from credit_platform.ingest.kaggle import clean_kaggle_frame, read_kaggle_csv
from credit_platform.ingest.synthetic import generate_synthetic
from credit_platform_tests.training_fixtures import (
    insert_partition,
    synthetic_partition,
    training_resources,
)

DAY = date(2025, 1, 31)
PARTITION = DAY.isoformat()


def _ids(split: pd.DataFrame, side: str) -> set[str]:
    return set(split.loc[split[SPLIT_COLUMN] == side, "id"])


def _customers(split: pd.DataFrame, side: str) -> set[str]:
    return set(split.loc[split[SPLIT_COLUMN] == side, "customer_id"])


def _assert_customers_on_one_side(split: pd.DataFrame) -> None:
    train, valid, test = (_customers(split, side) for side in SIDES)
    assert train and valid and test
    assert train.isdisjoint(valid | test)
    assert valid.isdisjoint(test)


def _one_customer_per_row(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.assign(customer_id=[f"CUS_{row_id}" for row_id in rows["id"]])


def _synthetic_window(last_day: date, days: int = 30, customers: int = 200) -> pd.DataFrame:
    """The real generator's labelled rows of `days` days ending on `last_day`, as the
    feature-target table holds them (a row per customer and day)."""
    frames = generate_synthetic(customers, days, last_day - timedelta(days=days - 1), seed=4)
    labels = frames.credit_score[["id", "customer_id", TARGET]]
    return typed_rows(frames.credit_score_features.merge(labels, on=["id", "customer_id"]))


def test_no_customer_has_rows_on_two_sides():
    """The synthetic generator's labels carry a persistent per-customer term: a customer's
    rows of other days on the train side would flatter the test accuracy."""
    rows = _synthetic_window(DAY)
    split = grouped_split(rows, valid_fraction=0.2, seed=42, test_fraction=0.2)

    assert len(split) == len(rows)
    _assert_customers_on_one_side(split)
    per_customer = split.groupby("customer_id")[SPLIT_COLUMN].nunique()
    assert (per_customer == 1).all()
    assert split.groupby("customer_id").size().min() >= 25  # a month of rows each


def test_split_is_stratified_by_each_customers_newest_label():
    rows = _synthetic_window(DAY, customers=500)
    split = grouped_split(rows, valid_fraction=0.2, seed=42, test_fraction=0.2)

    strata = customer_labels(rows)
    overall = strata.value_counts(normalize=True)
    sizes = {side: len(_customers(split, side)) for side in SIDES}
    assert abs(sizes[VALID] - 100) <= 2 and abs(sizes[TEST] - 100) <= 2
    for side in SIDES:
        shares = strata.loc[sorted(_customers(split, side))].value_counts(normalize=True)
        for label, share in overall.items():
            # each label's customers are cut by its own share: within a couple of customers
            assert abs(shares[label] - share) <= 2 / sizes[side] + 1e-9
    # and so the rows' label mix is close to the whole window's on every side
    row_mix = rows[TARGET].value_counts(normalize=True)
    for side in SIDES:
        side_mix = split.loc[split[SPLIT_COLUMN] == side, TARGET].value_counts(normalize=True)
        for label, share in row_mix.items():
            assert abs(side_mix[label] - share) < 0.06


def test_split_is_deterministic_whatever_the_row_order():
    rows = synthetic_partition(DAY, rows=300)
    first = grouped_split(rows, valid_fraction=0.2, seed=42)
    shuffled = rows.sample(frac=1.0, random_state=3)
    second = grouped_split(shuffled, valid_fraction=0.2, seed=42)
    other_seed = grouped_split(rows, valid_fraction=0.2, seed=43)

    for side in SIDES:
        assert _ids(first, side) == _ids(second, side)
    assert _customers(first, TEST) != _customers(other_seed, TEST)
    _assert_customers_on_one_side(first)


def test_a_customer_keeps_its_side_in_the_next_days_overlapping_window():
    """The next partition's window drops the oldest day and adds a new one; customers stay
    on their side (but for a few at a label's cut or whose newest label changed), so the
    next day's test customers are not customers the previous day's model was trained on."""
    today = _synthetic_window(DAY, customers=400)
    tomorrow = _synthetic_window(DAY + timedelta(days=1), customers=400)
    split_today = grouped_split(today, valid_fraction=0.2, seed=42)
    split_tomorrow = grouped_split(tomorrow, valid_fraction=0.2, seed=42)

    trained_today = _customers(split_today, TRAIN) | _customers(split_today, VALID)
    test_tomorrow = _customers(split_tomorrow, TEST)
    assert len(test_tomorrow & trained_today) <= 0.05 * len(test_tomorrow)
    # a draw per row (or a fresh draw per day) would put about 80 % of them in training
    assert len(test_tomorrow & _customers(split_today, TEST)) >= 0.95 * len(test_tomorrow)


def test_kaggle_rows_of_one_customer_stay_together(kaggle_sample):
    """Kaggle's full data has a row a month per customer: the loader dates each row in its
    month, and the split keeps a customer's months on one side."""
    raw = read_kaggle_csv(kaggle_sample).head(400)
    months = []
    for number, month in enumerate(("June", "July", "August")):
        months.append(raw.assign(id=raw["id"] + f"_{number}", month=month))
    frames, _ = clean_kaggle_frame(pd.concat(months, ignore_index=True), 2025)
    labels = frames.credit_score[["id", "customer_id", TARGET]]
    rows = typed_rows(frames.credit_score_features.merge(labels, on=["id", "customer_id"]))
    assert rows.groupby("customer_id")["date"].nunique().max() == 3

    split = grouped_split(rows, valid_fraction=0.2, seed=42)
    _assert_customers_on_one_side(split)
    assert (split.groupby("customer_id")[SPLIT_COLUMN].nunique() == 1).all()


def test_out_of_time_tests_new_customers_on_the_newest_days():
    rows = _synthetic_window(DAY)
    cutoff = out_of_time_cutoff(rows["date"], 7)
    assert cutoff == DAY - timedelta(days=7)
    split = grouped_split(rows, valid_fraction=0.2, seed=42, test_after=cutoff)

    _assert_customers_on_one_side(split)
    dates = pd.to_datetime(split["date"]).dt.date
    assert (dates[split[SPLIT_COLUMN] == TEST] > cutoff).all()
    assert (dates[split[SPLIT_COLUMN] != TEST] <= cutoff).all()
    # the test customers are the grouped split's own: out of time only drops rows
    plain = grouped_split(rows, valid_fraction=0.2, seed=42)
    assert _customers(split, TEST) == _customers(plain, TEST)
    assert len(split) < len(rows)


def test_out_of_time_needs_rows_on_both_sides_of_the_cut():
    one_day = pd.Series([DAY] * 10)
    assert out_of_time_cutoff(one_day, 7) is None
    assert out_of_time_cutoff(pd.Series([DAY, DAY - timedelta(days=8)]), 7) is not None
    assert out_of_time_cutoff(pd.Series([DAY, DAY - timedelta(days=8)]), 0) is None


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["Good"] * 10 + ["Poor"] * 10 + ["Standard"], "Standard: 1"),
        (["Good"] * 20, "at least two labels"),
        (["Good"] * 10 + ["Excellent"] * 10, "Excellent"),
        (["Good", "Good", "Poor", "Poor", "Standard", "Standard"], "at least 3 customers"),
    ],
)
def test_split_refuses_rows_it_cannot_stratify(labels, message):
    rows = _one_customer_per_row(synthetic_partition(DAY, rows=len(labels)))
    with pytest.raises(SplitError, match=message):
        grouped_split(
            rows.assign(**{TARGET: labels}), valid_fraction=0.2, seed=42, test_fraction=0.4
        )


def test_customers_label_is_their_newest_rows():
    rows = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "customer_id": ["C1", "C1", "C2", "C2"],
            "date": [DAY, DAY - timedelta(days=3), DAY - timedelta(days=1), DAY],
            TARGET: ["Poor", "Good", "Good", "Standard"],
        }
    )
    assert customer_labels(rows).to_dict() == {"C1": "Poor", "C2": "Standard"}


def test_split_refuses_a_label_left_without_train_rows():
    rows = _one_customer_per_row(synthetic_partition(DAY, rows=33))
    rows = rows.assign(**{TARGET: ["Good"] * 3 + ["Poor"] * 30})
    with pytest.raises(SplitError, match="no train rows would be left for Good"):
        grouped_split(rows, valid_fraction=0.5, seed=42, test_fraction=0.4)


def test_split_refuses_a_test_side_below_the_minimum():
    rows = synthetic_partition(DAY, rows=100)
    test_rows = len(grouped_split(rows, valid_fraction=0.2, seed=42).query("split == 'test'"))
    assert 10 < test_rows < 30
    with pytest.raises(
        SplitError,
        match=rf"100 rows of 50 customers .* {test_rows} test rows; .* at least 30 rows",
    ):
        grouped_split(rows, valid_fraction=0.2, seed=42, min_test_rows=30)


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
        assert metadata[f"customers_{side}"].value == len(_customers(stored, side))
    _assert_customers_on_one_side(stored)
    # 100 customers of two rows: a fifth of each label's customers in test, a fifth in valid
    assert abs(metadata["customers_test"].value - 20) <= 2
    assert abs(metadata["customers_valid"].value - 20) <= 2
    assert sizes[TEST] == 2 * metadata["customers_test"].value
    assert metadata["split_method"].value == "grouped by customer"
    assert metadata["rows_left_out"].value == 0
    assert "| Good |" in metadata["label_distribution"].value
    preview = metadata["preview"].value
    assert preview.startswith("| base_dt | id | customer_id |")
    assert preview.count("\n") == 6  # header, rule, five rows


def _split_with_config(tmp_path, url, rows: pd.DataFrame, config: dict):
    engine = init_schema(url)
    insert_partition(engine, rows)
    engine.dispose()
    result = materialize(
        [train_valid_split],
        partition_key=PARTITION,
        resources=training_resources(tmp_path, url),
        run_config={"ops": {"train_valid_split": {"config": config}}},
    )
    (materialization,) = result.asset_materializations_for_node("train_valid_split")
    return result.output_for_node("train_valid_split"), materialization.metadata


def test_split_asset_tests_out_of_time_when_configured(sqlite_url, tmp_path):
    rows = synthetic_partition(DAY, rows=800, seed=1)  # dated over the 28 days before DAY
    stored, metadata = _split_with_config(tmp_path, sqlite_url, rows, {"out_of_time_days": 10})

    cutoff = DAY - timedelta(days=10)
    assert metadata["split_method"].value == (
        f"grouped by customer, out of time: test rows dated after {cutoff}"
    )
    dates = pd.to_datetime(stored["date"]).dt.date
    assert (dates[stored[SPLIT_COLUMN] == TEST] > cutoff).all()
    assert (dates[stored[SPLIT_COLUMN] != TEST] <= cutoff).all()
    assert metadata["rows_left_out"].value == len(rows) - len(stored) > 0
    _assert_customers_on_one_side(stored)


def test_split_asset_says_when_the_window_is_too_short_for_out_of_time(sqlite_url, tmp_path):
    rows = synthetic_partition(DAY, rows=200, seed=1).assign(date=DAY)  # one day only
    stored, metadata = _split_with_config(tmp_path, sqlite_url, rows, {"out_of_time_days": 7})

    assert "no out-of-time test" in metadata["split_method"].value
    assert len(stored) == 200 and metadata["rows_left_out"].value == 0
    _assert_customers_on_one_side(stored)


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
    split = grouped_split(synthetic_partition(DAY, rows=300), valid_fraction=0.2, seed=42)
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
