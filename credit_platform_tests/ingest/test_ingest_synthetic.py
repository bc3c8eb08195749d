"""The synthetic generator: deterministic and extendable, Kaggle-like values with some
missing and corrupted ones cleaned by the shared rules, labels a model can learn, and
idempotent loads through the API and the CLI."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.ensemble import HistGradientBoostingClassifier
from sqlalchemy import func, select

from credit_platform.cli.seed import seed
from credit_platform.core.db import init_schema
from credit_platform.core.features import (
    CATEGORICAL_FEATURES,
    CREDIT_MIX_VALUES,
    LABELS,
    LOAN_TYPES,
    MODEL_FEATURES,
    NUMERIC_FEATURES,
    OCCUPATION_VALUES,
    PAYMENT_BEHAVIOUR_VALUES,
    PAYMENT_OF_MIN_AMOUNT_VALUES,
)
from credit_platform.core.schema import credit_score, credit_score_features, customer_info
from credit_platform.ingest.cleaning import PLAUSIBLE_RANGES
from credit_platform.ingest.synthetic import build_synthetic, generate_synthetic, seed_synthetic
from credit_platform.ingest.writer import IngestError
from credit_platform_tests.contract_fixtures import nulled_in

SOURCE_TABLES = (customer_info, credit_score, credit_score_features)
START = date(2025, 3, 30)


@pytest.fixture(scope="module")
def population():
    """3,000 customers over 4 days: enough rows for shares and a learnability check."""
    return build_synthetic(3_000, 4, START, seed=11)


def _row_counts(engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
            for table in SOURCE_TABLES
        }


def test_same_seed_gives_the_same_frames_and_another_seed_does_not():
    first = generate_synthetic(40, 3, START, seed=5)
    second = generate_synthetic(40, 3, START, seed=5)
    other = generate_synthetic(40, 3, START, seed=6)
    for table in SOURCE_TABLES:
        pd.testing.assert_frame_equal(first.table_frame(table), second.table_frame(table))
    assert not first.credit_score_features["outstanding_debt"].equals(
        other.credit_score_features["outstanding_debt"]
    )
    assert set(first.credit_score["id"]).isdisjoint(other.credit_score["id"])


def test_a_wider_longer_run_contains_the_shorter_one_unchanged():
    short = generate_synthetic(25, 3, START, seed=2)
    wide = generate_synthetic(60, 6, START - timedelta(days=2), seed=2)
    for table in SOURCE_TABLES:
        small = short.table_frame(table).set_index("id")
        large = wide.table_frame(table).set_index("id").loc[small.index]
        pd.testing.assert_frame_equal(small, large)


def test_one_row_per_customer_per_day_over_the_requested_dates(population):
    frames, summary = population
    labels = frames.credit_score
    assert len(labels) == summary.rows_read == summary.rows_kept == 3_000 * 4
    assert summary.total_dropped == 0
    assert sorted(set(labels["date"])) == [START + timedelta(days=n) for n in range(4)]
    assert (summary.first_date, summary.last_date) == (START, START + timedelta(days=3))
    assert labels.groupby("date")["customer_id"].nunique().eq(3_000).all()
    assert not labels.duplicated(["customer_id", "date"]).any()
    assert labels["id"].is_unique and labels["id"].str.len().max() <= 32
    for table in SOURCE_TABLES:
        frame = frames.table_frame(table)
        assert list(frame.columns) == [column.name for column in table.columns]
        assert frame["id"].tolist() == labels["id"].tolist()


def test_labels_have_roughly_kaggle_shares(population):
    frames, _ = population
    shares = frames.credit_score["credit_score"].value_counts(normalize=True)
    assert set(shares.index) == set(LABELS)
    assert shares["Standard"] == pytest.approx(0.53, abs=0.05)
    assert shares["Poor"] == pytest.approx(0.29, abs=0.05)
    assert shares["Good"] == pytest.approx(0.18, abs=0.05)


def test_values_look_like_kaggle_and_pass_the_cleaning_rules(population):
    frames, _ = population
    features = frames.credit_score_features
    for column in NUMERIC_FEATURES:
        low, high = PLAUSIBLE_RANGES[column]
        assert features[column].dropna().astype(float).between(low, high).all(), column
    allowed = {
        "occupation": OCCUPATION_VALUES,
        "credit_mix": CREDIT_MIX_VALUES,
        "payment_of_min_amount": PAYMENT_OF_MIN_AMOUNT_VALUES,
        "payment_behaviour": PAYMENT_BEHAVIOUR_VALUES,
    }
    for column, values in allowed.items():
        assert set(features[column].dropna()) == set(values), column
    listings = features["type_of_loan"].dropna()
    assert listings.str.contains(", and ").any()
    items = {item.strip().removeprefix("and ") for text in listings for item in text.split(",")}
    assert items == set(LOAN_TYPES)
    assert features["ssn"].dropna().str.fullmatch(r"\d{3}-\d{2}-\d{4}").all()
    assert features["age"].median() == pytest.approx(35, abs=4)
    assert features["annual_income"].median() == pytest.approx(37_500, rel=0.2)


def test_about_four_percent_missing_per_feature(population):
    frames, summary = population
    features = frames.credit_score_features
    for column in MODEL_FEATURES:
        share = summary.missing[column] / len(features)
        if column == "type_of_loan":  # also empty for customers without loans, as in Kaggle
            assert share > 0.03
        else:
            assert 0.03 <= share <= 0.05, column


def test_corrupted_values_are_nulled_and_counted_by_the_shared_rules(population):
    frames, summary = population
    nulled = summary.nulled
    for key in (
        ("age", "below_range"),
        ("age", "above_range"),
        ("num_of_loan", "below_range"),
        ("num_bank_accounts", "above_range"),
        ("interest_rate", "above_range"),
        ("annual_income", "above_range"),
        ("amount_invested_monthly", "sentinel"),
        ("credit_mix", "unknown_category"),
        ("ssn", "bad_ssn"),
    ):
        assert 0 < nulled[key] < 0.05 * len(frames), key
    features = frames.credit_score_features
    for column in MODEL_FEATURES:
        assert features[column].isna().sum() == summary.missing[column] + nulled_in(
            summary, column
        ), column


def test_a_customer_drifts_a_little_from_day_to_day(population):
    frames, _ = population
    features = frames.credit_score_features
    per_customer = features.groupby("customer_id")
    income_spread = per_customer["annual_income"].agg(lambda s: s.dropna().nunique())
    assert income_spread.max() == 1  # income is a property of the customer
    debt = per_customer["outstanding_debt"].agg(lambda s: s.max() / s.min() - 1)
    assert debt.median() < 0.1 and debt.max() < 0.5
    assert debt.median() > 0  # but it does move
    categories = per_customer[list(CATEGORICAL_FEATURES)].nunique()
    assert categories.max().max() == 1


def test_labels_depend_on_the_features(population):
    """A small model trained on half of the customers predicts the other half far above
    the majority-class rate."""
    frames, _ = population
    features = frames.credit_score_features.drop(columns=["id", "date", "name", "ssn"])
    numbers = features[list(NUMERIC_FEATURES)].astype("float64")
    categories = pd.get_dummies(features[list(CATEGORICAL_FEATURES)], dtype=float)
    inputs = pd.concat([numbers, categories], axis=1)
    labels = frames.credit_score["credit_score"]
    customer = features["customer_id"].str[-7:].astype(int)
    train = customer <= 1_500
    model = HistGradientBoostingClassifier(max_iter=60, random_state=0)
    model.fit(inputs[train], labels[train])
    accuracy = float(np.mean(model.predict(inputs[~train]) == labels[~train]))
    majority = labels[~train].value_counts(normalize=True).max()
    assert accuracy >= majority + 0.15, (accuracy, majority)


@pytest.mark.parametrize(
    ("customers", "days", "seed_value", "message"),
    [(0, 1, 0, "customers"), (1, 0, 0, "days"), (1, 1, -1, "seed")],
)
def test_bad_arguments_are_refused(customers, days, seed_value, message):
    with pytest.raises(IngestError, match=message):
        generate_synthetic(customers, days, START, seed=seed_value)


def test_seeding_is_idempotent_and_a_longer_run_adds_only_new_days(store_url):
    engine = init_schema(store_url)
    try:
        first = seed_synthetic(engine, customers=120, days=3, start=START, progress=False)
        assert first.rows_written == {table.name: 360 for table in SOURCE_TABLES}
        again = seed_synthetic(engine, customers=120, days=3, start=START, progress=False)
        assert again.rows_written == {table.name: 0 for table in SOURCE_TABLES}
        longer = seed_synthetic(engine, customers=120, days=5, start=START, progress=False)
        assert longer.rows_written == {table.name: 240 for table in SOURCE_TABLES}
        assert _row_counts(engine) == {table.name: 600 for table in SOURCE_TABLES}
        with engine.connect() as connection:
            days = connection.execute(
                select(credit_score.c.date, func.count()).group_by(credit_score.c.date)
            ).all()
        assert {day: count for day, count in days} == {
            START + timedelta(days=n): 120 for n in range(5)
        }
    finally:
        engine.dispose()


def test_cli_seeds_synthetic_data(sqlite_url):
    args = ["synthetic", "--customers", "30", "--days", "2", "--start", "2025-01-31"]
    args += ["--seed", "4", "--db-url", sqlite_url]
    runner = CliRunner()
    result = runner.invoke(seed, args)
    assert result.exit_code == 0, result.output
    assert "credit_score: 60 written, 0 already present" in result.stdout
    assert "dates: 2025-01-31 .. 2025-02-01" in result.stdout
    assert "60/60" in result.stderr  # progress, unless --quiet
    quiet = runner.invoke(seed, [*args, "--quiet"])
    assert quiet.exit_code == 0
    assert "credit_score_features: 0 written, 60 already present" in quiet.stdout
    assert quiet.stderr == ""


def test_cli_rejects_a_bad_start_date(sqlite_url):
    args = ["synthetic", "--customers", "3", "--days", "2", "--start", "31/01/2025"]
    result = CliRunner().invoke(seed, [*args, "--db-url", sqlite_url])
    assert result.exit_code != 0
    assert "--start" in result.output and "Traceback" not in result.output
