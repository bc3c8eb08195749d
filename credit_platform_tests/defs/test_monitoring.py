"""`model_monitoring` and its checks, materialized over a prediction log written by the
service's own log writer, on SQLite and on the real MariaDB server."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import (
    AssetCheckSeverity,
    AssetKey,
    AssetRecordsFilter,
    instance_for_test,
    materialize,
)

from credit_platform.core import settings
from credit_platform.core.db import init_schema
from credit_platform.core.features import MODEL_FEATURES
from credit_platform.core.model_store import DRIFT_REFERENCE_KEY, model_metadata
from credit_platform.core.monitoring import (
    ALL_VERSIONS,
    DRIFT_SKIPPED,
    FEATURE_PSI,
    LABELLED,
    LIVE_ACCURACY,
    LIVE_ECE,
    MAX_FEATURE_PSI,
    PREDICTION_MIX_PSI,
    REQUESTS,
    SEGMENT_FLAGGED,
    SEGMENT_LABELLED,
    TEST_ACCURACY,
    held_out_prediction_mix,
    profile_document,
    reference_profile,
)
from credit_platform.core.monitoring_store import read_day, read_training_rows
from credit_platform.core.monitoring_view import model_changes, role_totals, version_days
from credit_platform.core.schema import MONITORING_ALL_ROLES
from credit_platform.defs.assets.model import DRIFT_REFERENCE_ARTIFACT
from credit_platform.defs.assets.monitoring import (
    DRIFT_CHECK,
    FAIRNESS_CHECK,
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
    # live calibration: every logged confidence is 0.7, so the ECE is |0.7 - accuracy|
    assert _value(report, served_tag, "champion", LIVE_ECE) == pytest.approx(abs(0.7 - accuracy))
    assert metadata["champion_live_ece"].value == pytest.approx(abs(0.7 - accuracy))
    # live segments: every labelled prediction in one age band and one occupation each
    ages = report[
        (report["model_version"] == served_tag)
        & (report["role"] == "champion")
        & (report["metric"] == SEGMENT_LABELLED)
        & report["feature"].str.startswith("age=")
    ]
    assert ages["value"].sum() == 300
    flags = report[
        (report["model_version"] == served_tag)
        & (report["role"] == "champion")
        & (report["metric"] == SEGMENT_FLAGGED)
    ]
    fairness = checks[FAIRNESS_CHECK]
    assert fairness.severity == AssetCheckSeverity.WARN
    assert fairness.passed == (flags["value"] != 1).all(), fairness.description
    assert fairness.metadata["judged_segments"].value == flags["value"].notna().sum() > 0
    assert "| model version | feature | segment |" in metadata["live_segments"].value


def test_a_drifted_day_with_wrong_answers_fails_both_checks_without_blocking(sqlite_store):
    result = _monitor(sqlite_store[0], BAD_DAY)
    assert result.success  # the asset is materialized whatever its checks say
    assert result.asset_materializations_for_node("model_monitoring")
    checks = _checks(result)
    metadata = result.asset_materializations_for_node("model_monitoring")[0].metadata
    assert metadata["champion_live_ece"].value == pytest.approx(0.7)  # confident and wrong
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


OLD_MODEL = "credit_score_classifier:the_old_one"
NEW_MODEL = "credit_score_classifier:the_new_one"


def test_a_hot_swap_day_keeps_the_old_models_requests_and_the_view_marks_the_change(
    tmp_path,
):
    """Day 1: OLD serves; day 3: OLD in the morning (all right), NEW from noon (half right);
    day 5: NEW. The hot-swap day's champion figures cover both models, each keeps its row
    in the view, the change is marked, and the chart spans the three monitored days only."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = seed_store(url, customers=120)
    first, swap, last = date(2025, 2, 1), date(2025, 2, 3), date(2025, 2, 5)
    frames = {day: day_rows(engine, day) for day in (first, swap, last)}
    engine.dispose()
    rows = log_rows(frames[first], day=first, model_version=OLD_MODEL, prefix="a")
    rows += log_rows(frames[swap].iloc[:40], day=swap, model_version=OLD_MODEL, hour=8, prefix="m")
    rows += log_rows(
        frames[swap].iloc[40:80], day=swap, model_version=NEW_MODEL, hour=15, prefix="n"
    )
    rows += log_rows(
        frames[swap].iloc[80:120], day=swap, model_version=NEW_MODEL, hour=16, prefix="w",
        right=False,
    )  # fmt: skip
    rows += log_rows(frames[last], day=last, model_version=NEW_MODEL, prefix="z")
    write_log(url, tmp_path / "spool", rows)
    with instance_for_test() as instance:
        for day in (first, swap, last):
            result = materialize(
                [model_monitoring],
                partition_key=day.isoformat(),
                resources=monitoring_resources(url),
                instance=instance,
            )
            assert result.success
        swap_metadata = _metadata(instance, swap)
        final = _metadata(instance, last)

    # The swapped-out model's 40 requests are not lost from the day's figures.
    assert swap_metadata["champion_requests"].value == 120
    assert swap_metadata["champion_labelled"].value == 120
    assert swap_metadata["champion_model_versions"].value == 2
    assert swap_metadata["champion_model_version"].value == f"{NEW_MODEL}, {OLD_MODEL}"
    assert swap_metadata["champion_live_accuracy"].value == pytest.approx((40 + 40) / 120)
    assert final["champion_model_versions"].value == 1
    # The view of the monitored days: one row per day and model, the change marked.
    table = final["monitored_days"].value
    lines = [line for line in table.splitlines() if line.startswith("| 2025-")]
    old, new = (tag.split(":")[1] for tag in (OLD_MODEL, NEW_MODEL))
    assert [line.split(" | ")[:2] for line in lines] == [
        ["| 2025-02-01", old],
        ["| 2025-02-03", new],
        ["| 2025-02-03", old],
        ["| 2025-02-05", new],
    ]
    assert lines[1].endswith("| new |") and lines[2].endswith("| swapped out |")
    assert lines[2].split(" | ")[3:6] == ["40", "40", "1.0000"]
    assert final["model_changes"].value == (f"2025-02-03: hot swap: {OLD_MODEL} -> {NEW_MODEL}")
    assert "3 monitored day(s), 2025-02-01 to 2025-02-05" in table
    chart = Path(final["chart"].value)
    report = Path(final["report"].value)
    assert chart.parent == settings.monitoring_reports_dir() and chart.name == "2025-02-05.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = report.read_text()  # the full tags there
    assert "data:image/png;base64," in page and f"<td>{OLD_MODEL}</td>" in page


def test_the_view_covers_the_monitored_days_and_notes_each_change():
    def rows(day, version, requests, role="champion"):
        return [
            (day, version, role, REQUESTS, "", float(requests)),
            (day, version, role, LABELLED, "", float(requests)),
            (day, version, role, LIVE_ACCURACY, "", 0.8),
            (day, ALL_VERSIONS, MONITORING_ALL_ROLES, REQUESTS, "", float(requests)),
        ]

    report = pd.DataFrame(
        rows(date(2025, 1, 2), OLD_MODEL, 50)
        + rows(date(2025, 1, 20), OLD_MODEL, 10)
        + rows(date(2025, 1, 20), NEW_MODEL, 90)
        + rows(date(2025, 1, 20), OLD_MODEL, 30, role="shadow")
        + rows(date(2025, 1, 21), OLD_MODEL, 70),  # rolled back
        columns=["day", "model_version", "role", "metric", "feature", "value"],
    )
    view = version_days(report)
    assert sorted(set(view["day"])) == [date(2025, 1, 2), date(2025, 1, 20), date(2025, 1, 21)]
    assert list(zip(view["model_version"], view["role"], strict=True))[1:4] == [
        (NEW_MODEL, "champion"),
        (OLD_MODEL, "champion"),
        (OLD_MODEL, "shadow"),
    ]
    assert [change.text for change in model_changes(view)] == [
        f"2025-01-20: hot swap: {OLD_MODEL} -> {NEW_MODEL}",
        f"2025-01-21: new model: {NEW_MODEL} -> {OLD_MODEL}",
    ]
    totals = role_totals(view[view["day"] == date(2025, 1, 20)], "champion")
    assert totals[REQUESTS] == 100 and totals["versions"] == 2


def _metadata(instance, day: date) -> dict:
    (record,) = instance.fetch_materializations(
        AssetRecordsFilter(
            asset_key=AssetKey("model_monitoring"), asset_partitions=[day.isoformat()]
        ),
        limit=1,
    ).records
    return record.asset_materialization.metadata


def test_a_report_that_cannot_be_written_is_named_and_the_day_still_monitored(
    sqlite_store, monkeypatch, tmp_path
):
    url, _, _ = sqlite_store
    blocked = tmp_path / "not_a_folder"
    blocked.write_text("a file where the reports folder should be")
    monkeypatch.setattr(settings, "monitoring_reports_dir", lambda: blocked / "model_monitoring")
    result = _monitor(url, GOOD_DAY)
    assert result.success
    (materialization,) = result.asset_materializations_for_node("model_monitoring")
    metadata = materialization.metadata
    assert metadata["report_not_written"].value.startswith(str(blocked / "model_monitoring"))
    assert "report" not in metadata and "| 2025-02-03 |" in metadata["monitored_days"].value


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
    assert psi_first["value"].notna().sum() == len(MODEL_FEATURES) + 1 + 1
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
