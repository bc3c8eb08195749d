"""`model_monitoring` and its checks, materialized over a prediction log written by the
service's own log writer, on SQLite and on the real MariaDB server."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pandas as pd
import pytest
from dagster import AssetCheckSeverity, materialize

from credit_platform.core.db import init_schema
from credit_platform.core.model_store import DRIFT_REFERENCE_KEY, model_metadata
from credit_platform.core.monitoring import (
    DRIFT_SKIPPED,
    FEATURE_PSI,
    LABELLED,
    LIVE_ACCURACY,
    MAX_FEATURE_PSI,
    PREDICTION_MIX_PSI,
    REQUESTS,
    TEST_ACCURACY,
    held_out_prediction_mix,
    profile_document,
    reference_profile,
)
from credit_platform.core.monitoring_store import read_day, read_training_rows
from credit_platform.defs.assets.model import DRIFT_REFERENCE_ARTIFACT
from credit_platform.defs.assets.monitoring import (
    DRIFT_CHECK,
    LIVE_ACCURACY_CHECK,
    MONITORING_CHECKS,
    PINNED_REFERENCE,
    REREAD_REFERENCE,
    model_monitoring,
)
from credit_platform.defs.assets.split import SPLIT_COLUMN, TEST, TRAIN
from credit_platform.defs.jobs import CONTINUOUS_TRAINING_ASSETS
from credit_platform.ingest.synthetic import Drift, seed_synthetic
from credit_platform_tests.monitoring_fixtures import (
    BAD_DAY,
    GONE,
    GOOD_DAY,
    TRAINING_PARTITION,
    day_rows,
    log_rows,
    monitoring_resources,
    seed_store,
    train_served_model,
    write_good_and_bad_days,
    write_log,
)
from credit_platform_tests.training_fixtures import tiny_grid, training_resources

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


def _psi_rows(url: str, day: date, version: str) -> pd.DataFrame:
    engine = init_schema(url)
    report = read_day(engine, day)
    engine.dispose()
    drift = report[
        (report["model_version"] == version)
        & (report["role"] == "champion")
        & report["metric"].isin([FEATURE_PSI, MAX_FEATURE_PSI, PREDICTION_MIX_PSI])
    ]
    return drift[["metric", "feature", "value"]].sort_values(["metric", "feature"], kind="stable")


def _more_rows_in_the_training_window(engine) -> None:
    """Rows that arrive late for the training partition's window: other customers, poorer
    (so the window's income quantiles move)."""
    start = date(2025, 1, 10)
    seed_synthetic(
        engine,
        customers=300,
        days=20,
        start=start,
        seed=8,
        drift=Drift("income", start),
        progress=False,
    )


@pytest.mark.slow
def test_a_models_psi_for_a_day_is_the_same_whatever_arrives_later(tmp_path):
    """The drift reference is computed from the model's own training rows when it is
    trained and stored with it (BentoML metadata, MLflow artifact); rows that reach the
    source tables of its training window later change nothing in its PSI."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = seed_store(url)
    resources = {**training_resources(tmp_path, url), **monitoring_resources(url)}
    trained = materialize(
        list(CONTINUOUS_TRAINING_ASSETS),
        partition_key=TRAINING_PARTITION,
        resources=resources,
        run_config={"ops": {"credit_score_model": {"config": tiny_grid(30)}}},
    )
    model = trained.output_for_node("credit_score_model")
    tag = model["bento_tag"]
    metadata = model_metadata(tag)
    stored = metadata[DRIFT_REFERENCE_KEY]

    # the reference is the profile of the rows the served model was fit on
    split = trained.output_for_node("train_valid_split")
    refit = metadata["params"]["refit_on_train_valid"]
    fit_rows = split[split[SPLIT_COLUMN] != TEST] if refit else split[split[SPLIT_COLUMN] == TRAIN]
    expected = reference_profile(fit_rows, held_out_prediction_mix(metadata))
    assert stored == profile_document(expected)
    (materialization,) = trained.asset_materializations_for_node("credit_score_model")
    assert materialization.metadata["drift_reference_rows"].value == len(fit_rows)
    # and the same document is an artifact of the model's MLflow parent run
    artifact = (
        resources["mlflow_tracking"]
        .client()
        .download_artifacts(
            metadata["mlflow_parent_run_id"], DRIFT_REFERENCE_ARTIFACT, str(tmp_path)
        )
    )
    with open(artifact) as stream:
        assert json.load(stream) == stored

    today = day_rows(engine, GOOD_DAY)
    write_log(url, tmp_path / "spool", log_rows(today, day=GOOD_DAY, model_version=tag))
    first = _monitor(url, GOOD_DAY)
    note = first.asset_materializations_for_node("model_monitoring")[0].metadata
    assert f"{PINNED_REFERENCE}: {len(fit_rows)} training rows" in note["drift_reference"].value
    psi_first = _psi_rows(url, GOOD_DAY, tag)
    # every feature, their maximum and the prediction mix: measured, nothing skipped
    assert psi_first["value"].notna().sum() == 22 + 1 + 1
    assert (psi_first["metric"] == PREDICTION_MIX_PSI).sum() == 1

    training_day = date.fromisoformat(TRAINING_PARTITION)
    window_before = read_training_rows(engine, training_day)
    _more_rows_in_the_training_window(engine)
    window_after = read_training_rows(engine, training_day)
    # the source tables now say something else about the training window...
    assert len(window_after) > len(window_before)
    assert not np.array_equal(
        reference_profile(window_after).edges["annual_income"],
        reference_profile(window_before).edges["annual_income"],
    )
    engine.dispose()

    assert _monitor(url, GOOD_DAY).success
    # ...and the model's PSI for the day is exactly what it was
    pd.testing.assert_frame_equal(_psi_rows(url, GOOD_DAY, tag), psi_first)


def test_a_model_saved_without_a_reference_is_measured_against_its_partition_saying_so(
    tmp_path,
):
    """A model saved before references were stored with models: its training partition is
    re-read from the source tables, the metadata says so, and that PSI moves when rows
    arrive for the window (the reason references are stored now)."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = seed_store(url)
    tag = train_served_model(engine)  # saved without a drift reference
    assert DRIFT_REFERENCE_KEY not in model_metadata(tag)
    today = day_rows(engine, GOOD_DAY)
    write_log(url, tmp_path / "spool", log_rows(today, day=GOOD_DAY, model_version=tag))

    first = _monitor(url, GOOD_DAY)
    assert first.success
    note = first.asset_materializations_for_node("model_monitoring")[0].metadata
    assert f"{REREAD_REFERENCE}: the model was saved without" in note["drift_reference"].value
    psi_first = _psi_rows(url, GOOD_DAY, tag)
    _more_rows_in_the_training_window(engine)
    engine.dispose()

    assert _monitor(url, GOOD_DAY).success
    psi_again = _psi_rows(url, GOOD_DAY, tag)
    income = psi_first["feature"] == "annual_income"
    assert psi_again.loc[income, "value"].item() != psi_first.loc[income, "value"].item()
