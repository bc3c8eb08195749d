"""The feature-target table's asset checks, run by Dagster on a partition's real rows."""

from datetime import date

import pytest
from dagster import AssetCheckSeverity, materialize
from sqlalchemy import insert

from credit_platform.core.db import init_schema
from credit_platform.core.features import MODEL_FEATURES, TARGET
from credit_platform.core.schema import credit_score, credit_score_features
from credit_platform.defs.assets.feature_target import credit_score_features_target
from credit_platform.defs.feature_target_checks import (
    feature_target_checks,
    judge_rows,
    profile_partition,
)
from credit_platform.defs.resources.feature_store import FeatureStoreResource
from credit_platform_tests.training_fixtures import insert_partition, synthetic_partition

DAY = date(2025, 3, 10)


def _store(url: str, frame) -> str:
    """The frame's labels and features in the source tables the asset builds DAY from."""
    engine = init_schema(url)
    rows = [
        {key: (None if value != value else value) for key, value in record.items()}
        for record in frame.drop(columns=["base_dt"]).to_dict(orient="records")
    ]
    plain = [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in rows]
    with engine.begin() as connection:
        connection.execute(
            insert(credit_score),
            [{k: row[k] for k in ("id", "customer_id", "date", TARGET)} for row in plain],
        )
        connection.execute(
            insert(credit_score_features),
            [{k: row[k] for k in ("id", "customer_id", "date", *MODEL_FEATURES)} for row in plain],
        )
    engine.dispose()
    return url


def _run_checks(url: str, run_config: dict | None = None) -> dict:
    """The asset and its checks for DAY, as the continuous-training job runs them."""
    result = materialize(
        [credit_score_features_target, feature_target_checks],
        partition_key=DAY.isoformat(),
        resources={"feature_store": FeatureStoreResource(url=url)},
        run_config=run_config or {},
        raise_on_error=False,
    )
    assert result.asset_materializations_for_node("credit_score_features_target")
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_checks_pass_on_a_healthy_partition(store_url):
    frame = synthetic_partition(DAY, rows=300, seed=4)
    evaluations = _run_checks(_store(store_url, frame))
    assert set(evaluations) == {
        "feature_target_has_rows",
        "feature_target_label_mix",
        "feature_target_null_rates",
    }
    assert all(evaluation.passed for evaluation in evaluations.values()), {
        name: evaluation.description for name, evaluation in evaluations.items()
    }
    assert evaluations["feature_target_has_rows"].metadata["rows"].value == 300
    mix = evaluations["feature_target_label_mix"].metadata
    shares = [mix[f"share_{label}"].value for label in ("good", "standard", "poor")]
    assert sum(shares) == pytest.approx(1.0)
    expected_poor = (frame["credit_score"] == "Poor").sum()
    assert mix["rows_poor"].value == expected_poor
    nulls = evaluations["feature_target_null_rates"].metadata
    assert 0 < nulls["max_observed_null_rate"].value < 0.2  # a few values are missing
    assert "| annual_income |" in nulls["null_rates"].value


def test_missing_class_fails_the_label_mix(sqlite_url):
    frame = synthetic_partition(DAY, rows=200, seed=5)
    frame = frame[frame["credit_score"] != "Poor"]
    evaluations = _run_checks(_store(sqlite_url, frame))
    mix = evaluations["feature_target_label_mix"]
    assert not mix.passed
    assert mix.severity == AssetCheckSeverity.ERROR
    assert "no Poor rows" in mix.description
    assert mix.metadata["rows_poor"].value == 0
    assert evaluations["feature_target_has_rows"].passed


def test_a_dominant_class_fails_against_a_configured_share(sqlite_url):
    frame = synthetic_partition(DAY, rows=200, seed=6)
    url = _store(sqlite_url, frame)
    largest = frame["credit_score"].value_counts(normalize=True).max()
    assert _run_checks(url)["feature_target_label_mix"].passed  # default bound 0.8
    config = {
        "ops": {"feature_target_checks": {"config": {"max_share": round(float(largest) - 0.05, 2)}}}
    }
    mix = _run_checks(url, config)["feature_target_label_mix"]
    assert not mix.passed and "above the" in mix.description


def test_high_null_rate_fails_naming_the_column(sqlite_url):
    frame = synthetic_partition(DAY, rows=200, seed=7)
    frame.loc[frame.index[:120], "credit_mix"] = None  # 60% missing
    evaluations = _run_checks(_store(sqlite_url, frame))
    nulls = evaluations["feature_target_null_rates"]
    assert not nulls.passed
    assert nulls.severity == AssetCheckSeverity.WARN
    assert "credit_mix 60.0%" in nulls.description
    assert nulls.metadata["max_observed_null_rate"].value == pytest.approx(0.6)
    # The bound is config: allowing 70% passes the same rows.
    relaxed = _run_checks(
        sqlite_url, {"ops": {"feature_target_checks": {"config": {"max_null_rate": 0.7}}}}
    )["feature_target_null_rates"]
    assert relaxed.passed


def test_a_partition_without_rows_fails_the_row_check(store_url):
    """The asset itself refuses an empty day, so a partition is empty in the store only
    when its rows went afterwards (retention, a hand-made DELETE): judged on the real
    table, rows of another day do not count."""
    engine = init_schema(store_url)
    insert_partition(engine, synthetic_partition(date(2025, 3, 9), rows=50, seed=8))
    try:
        empty = profile_partition(engine, DAY)
        full = profile_partition(engine, date(2025, 3, 9))
    finally:
        engine.dispose()
    assert empty.rows == 0 and sum(empty.label_counts.values()) == 0
    verdict = judge_rows(empty)
    assert not verdict.passed and "no rows with base_dt 2025-03-10" in verdict.reason
    assert judge_rows(full).passed and full.rows == 50
