"""`model_monitoring` and its checks, materialized over a prediction log written by the
service's own log writer, on SQLite and on the real MariaDB server."""

from __future__ import annotations

from datetime import date

import pytest
from dagster import AssetCheckSeverity, materialize

from credit_platform.core.db import init_schema
from credit_platform.core.model_store import model_metadata
from credit_platform.core.monitoring import (
    DRIFT_SKIPPED,
    FEATURE_PSI,
    LABELLED,
    LIVE_ACCURACY,
    REQUESTS,
    TEST_ACCURACY,
)
from credit_platform.core.monitoring_store import read_day
from credit_platform.defs.assets.monitoring import (
    DRIFT_CHECK,
    LIVE_ACCURACY_CHECK,
    MONITORING_CHECKS,
    model_monitoring,
)
from credit_platform.ingest.synthetic import seed_synthetic
from credit_platform_tests.monitoring_fixtures import (
    BAD_DAY,
    GONE,
    GOOD_DAY,
    day_rows,
    log_rows,
    monitoring_resources,
    seed_store,
    train_served_model,
    write_good_and_bad_days,
    write_log,
)

EMPTY_DAY = date(2025, 2, 6)  # nothing logged


def _value(report, version, role, metric, feature=""):
    rows = report[
        (report["model_version"] == version)
        & (report["role"] == role)
        & (report["metric"] == metric)
        & (report["feature"] == feature)
    ]
    assert len(rows) == 1, (version, role, metric, feature)
    value = rows["value"].iloc[0]
    return None if value != value or value is None else float(value)


def _checks(result):
    return {
        evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()
    }


def _monitor(url: str, day: date, **policy: str):
    return materialize(
        [model_monitoring, *MONITORING_CHECKS],
        partition_key=day.isoformat(),
        resources=monitoring_resources(url, **policy),
    )


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory):
    """(url, served model tag, the good day's true accuracy)."""
    tmp = tmp_path_factory.mktemp("monitoring")
    url = f"sqlite:///{tmp / 'store.db'}"
    engine = seed_store(url)
    served_tag = train_served_model(engine)
    engine.dispose()
    return url, served_tag, write_good_and_bad_days(url, tmp, served_tag)


def test_a_good_day_reports_live_accuracy_drift_volume_and_latency(sqlite_store):
    url, served_tag, accuracy = sqlite_store
    result = _monitor(url, GOOD_DAY)
    assert result.success
    engine = init_schema(url)
    report = read_day(engine, GOOD_DAY)
    engine.dispose()

    assert _value(report, served_tag, "champion", REQUESTS) == 300
    assert _value(report, served_tag, "champion", LABELLED) == 300
    assert _value(report, served_tag, "champion", LIVE_ACCURACY) == pytest.approx(accuracy)
    test_accuracy = model_metadata(served_tag)["metrics"]["test_accuracy"]
    assert _value(report, served_tag, "champion", TEST_ACCURACY) == pytest.approx(test_accuracy)
    assert _value(report, served_tag, "champion", FEATURE_PSI, "age") < 0.2
    assert _value(report, "all", "all", REQUESTS) == 340
    # the shadow's model is not in the store: counted, scored, its drift skipped
    assert _value(report, GONE, "shadow", REQUESTS) == 40
    assert _value(report, GONE, "shadow", LIVE_ACCURACY) == 0.0
    assert _value(report, GONE, "shadow", DRIFT_SKIPPED) == 1

    materialization = result.asset_materializations_for_node("model_monitoring")[0]
    metadata = materialization.metadata
    assert metadata["champion_live_accuracy"].value == pytest.approx(accuracy)
    assert metadata["champion_model_version"].value == served_tag
    assert metadata["shadow_live_accuracy"].value == 0.0
    assert metadata["requests"].value == 340
    assert 5.0 <= metadata["latency_p50_ms"].value <= 24.0
    assert "| feature | model version |" in metadata["top_drifting_features"].value
    assert "no longer in the BentoML model store" in metadata["drift_skipped"].value
    checks = _checks(result)
    assert checks[DRIFT_CHECK].passed, checks[DRIFT_CHECK].description
    assert checks[LIVE_ACCURACY_CHECK].passed, checks[LIVE_ACCURACY_CHECK].description


def test_a_drifted_day_with_wrong_answers_fails_both_checks_without_blocking(sqlite_store):
    result = _monitor(sqlite_store[0], BAD_DAY)
    assert result.success  # the asset is materialized whatever its checks say
    assert result.asset_materializations_for_node("model_monitoring")
    checks = _checks(result)
    drift, accuracy = checks[DRIFT_CHECK], checks[LIVE_ACCURACY_CHECK]
    assert not drift.passed and drift.severity == AssetCheckSeverity.WARN
    assert "age" in drift.description and "outstanding_debt" in drift.description
    assert not accuracy.passed and accuracy.severity == AssetCheckSeverity.ERROR
    assert "live accuracy 0.0000 on 300 labelled" in accuracy.description


def test_accuracy_is_not_judged_below_the_labelled_minimum(sqlite_store):
    result = _monitor(sqlite_store[0], BAD_DAY, min_labelled="301")
    accuracy = _checks(result)[LIVE_ACCURACY_CHECK]
    assert accuracy.passed
    assert "300 labelled, fewer than 301: not judged yet" in accuracy.description


def test_a_drift_threshold_set_higher_passes_the_drifted_day(sqlite_store):
    assert _checks(_monitor(sqlite_store[0], BAD_DAY, psi_threshold="1000"))[DRIFT_CHECK].passed


def test_a_day_without_predictions_materializes_an_empty_report(sqlite_store):
    result = _monitor(sqlite_store[0], EMPTY_DAY)
    assert result.success
    metadata = result.asset_materializations_for_node("model_monitoring")[0].metadata
    assert (
        metadata["status"].value
        == f"no predictions were logged on {EMPTY_DAY}: the report of the day is empty"
    )
    assert metadata["requests"].value == 0
    checks = _checks(result)
    assert checks[DRIFT_CHECK].passed and checks[LIVE_ACCURACY_CHECK].passed
    assert "no predictions of the served model" in checks[LIVE_ACCURACY_CHECK].description


def test_predictions_whose_labels_have_not_arrived_are_not_yet_known(tmp_path, sqlite_store):
    served_tag = sqlite_store[1]
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = init_schema(url)
    seed_synthetic(engine, customers=50, days=5, start=date(2025, 2, 1), seed=4, progress=False)
    later = date(2025, 2, 20)  # after the newest label day
    rows = log_rows(day_rows(engine, date(2025, 2, 5)), day=later, model_version=served_tag)
    engine.dispose()
    write_log(url, tmp_path / "spool", rows)

    result = _monitor(url, later)
    engine = init_schema(url)
    report = read_day(engine, later)
    engine.dispose()
    assert _value(report, served_tag, "champion", LABELLED) == 0
    assert _value(report, served_tag, "champion", LIVE_ACCURACY) is None
    metadata = result.asset_materializations_for_node("model_monitoring")[0].metadata
    assert metadata["champion_labelled"].value == 0
    assert "not yet known" in metadata["summary"].value
    assert _checks(result)[LIVE_ACCURACY_CHECK].passed


@pytest.mark.mariadb
def test_monitoring_on_mariadb_replaces_the_day_when_materialized_again(
    mariadb_url, tmp_path, sqlite_store
):
    served_tag = sqlite_store[1]
    seed_store(mariadb_url).dispose()
    accuracy = write_good_and_bad_days(mariadb_url, tmp_path, served_tag)
    assert _monitor(mariadb_url, GOOD_DAY).success
    engine = init_schema(mariadb_url)
    try:
        report = read_day(engine, GOOD_DAY)
        assert _value(report, served_tag, "champion", LIVE_ACCURACY) == pytest.approx(accuracy)
        assert _value(report, served_tag, "champion", REQUESTS) == 300
        assert _value(report, GONE, "shadow", DRIFT_SKIPPED) == 1
        late = log_rows(
            day_rows(engine, GOOD_DAY).iloc[:30],
            day=GOOD_DAY,
            model_version=served_tag,
            right=False,
            prefix="late",
        )
        write_log(mariadb_url, tmp_path / "spool2", late)
        assert _monitor(mariadb_url, GOOD_DAY).success
        again = read_day(engine, GOOD_DAY)
        assert len(again) == len(report)  # replaced, not appended
        assert _value(again, served_tag, "champion", REQUESTS) == 330
        expected = accuracy * 300 / 330
        assert _value(again, served_tag, "champion", LIVE_ACCURACY) == pytest.approx(expected)
        bad = _monitor(mariadb_url, BAD_DAY)
        assert not _checks(bad)[DRIFT_CHECK].passed
        assert not _checks(bad)[LIVE_ACCURACY_CHECK].passed
    finally:
        engine.dispose()
