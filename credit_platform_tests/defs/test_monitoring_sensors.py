"""The retrain and rollback sensors, ticked over real check evaluations and real monitoring
reports (materialized into a test instance), with a real MLflow registry."""

from __future__ import annotations

import json
import time
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from dagster import (
    AssetMaterialization,
    SkipReason,
    build_sensor_context,
    instance_for_test,
    materialize,
)

from credit_platform.core.db import init_schema
from credit_platform.core.settings import MODEL_NAME
from credit_platform.defs.assets.deploy import MLFLOW_VERSION_RUN_TAG, MODEL_TAG_RUN_TAG
from credit_platform.defs.assets.monitoring import MONITORING_CHECKS, model_monitoring
from credit_platform.defs.monitoring_sensors import (
    compare_on_shared_days,
    retrain_sensor,
    rollback_sensor,
)
from credit_platform.defs.resources.mlflow_tracking import (
    BENTO_TAG,
    LIVE_REGRESSION_TAG,
    PARTITION_TAG,
    QUALITY_TAG,
    MlflowTrackingResource,
)
from credit_platform.ingest.synthetic import seed_synthetic
from credit_platform_tests.monitoring_fixtures import (
    BAD_DAY,
    SEED_DAYS,
    SEED_START,
    day_rows,
    log_rows,
    model_predictions,
    monitoring_resources,
    seed_store,
    train_served_model,
    write_good_and_bad_days,
    write_log,
)

NEWEST_LABEL_DAY = date(2025, 2, 9)  # SEED_START + SEED_DAYS - 1
LATER_GOOD_DAY = date(2025, 2, 6)


def _registry(tmp_path: Path) -> MlflowTrackingResource:
    return MlflowTrackingResource(
        tracking_uri=f"sqlite:///{tmp_path / 'registry.db'}",
        experiment_name="monitoring_sensor_tests",
        artifact_location=(tmp_path / "artifacts").as_uri(),
    )


def _register(tracking: MlflowTrackingResource, bento_tag: str, partition: str) -> str:
    client = tracking.client()
    if not client.search_registered_models(f"name = '{MODEL_NAME}'"):
        client.create_registered_model(MODEL_NAME)
    version = client.create_model_version(
        MODEL_NAME,
        source=f"{tracking.artifact_location}/models/{partition}",
        tags={PARTITION_TAG: partition, BENTO_TAG: bento_tag},
    )
    client.set_model_version_tag(MODEL_NAME, version.version, QUALITY_TAG, "passed")
    return str(version.version)


def _monitor(instance, url: str, day: date, **policy: str) -> None:
    result = materialize(
        [model_monitoring, *MONITORING_CHECKS],
        partition_key=day.isoformat(),
        resources=monitoring_resources(url, **policy),
        instance=instance,
    )
    assert result.success


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    """A store whose BAD_DAY fails both checks, and a later day that passes them."""
    tmp = tmp_path_factory.mktemp("retrain")
    url = f"sqlite:///{tmp / 'store.db'}"
    engine = seed_store(url)
    served = train_served_model(engine)
    later = day_rows(engine, LATER_GOOD_DAY)
    engine.dispose()
    write_good_and_bad_days(url, tmp, served)
    answers = model_predictions(served, later)
    write_log(
        url,
        tmp / "spool_later",
        log_rows(later, day=LATER_GOOD_DAY, model_version=served, predictions=answers, prefix="l"),
    )
    return url, served, tmp


def _retrain_tick(instance, url, tracking, cursor=None, **policy):
    resources = {**monitoring_resources(url, **policy), "mlflow_tracking": tracking}
    context = build_sensor_context(instance=instance, resources=resources, cursor=cursor)
    return retrain_sensor(context)


def test_a_failed_check_of_the_served_model_retrains_the_newest_day_once_per_cooldown(
    monitored, tmp_path
):
    url, served, _ = monitored
    tracking = _registry(tmp_path)
    _register(tracking, served, "2025-01-31")
    tracking.elect_champion()
    with instance_for_test() as instance:
        skipped = _retrain_tick(instance, url, tracking)
        assert isinstance(skipped, SkipReason)  # nothing monitored yet

        _monitor(instance, url, BAD_DAY)
        result = _retrain_tick(instance, url, tracking)
        (request,) = result.run_requests
        assert request.run_key == f"retrain:{NEWEST_LABEL_DAY}:drift+live_accuracy"
        assert request.partition_key == NEWEST_LABEL_DAY.isoformat()
        assert (
            "model_monitoring_drift failed on 2025-02-04" in request.tags["credit_platform/reason"]
        )

        cooling = _retrain_tick(instance, url, tracking, cursor=result.cursor)
        assert isinstance(cooling, SkipReason)
        assert "cooldown left" in cooling.skip_message

        expired = json.dumps({"last_request": time.time() - 7200})
        again = _retrain_tick(instance, url, tracking, cursor=expired)
        assert [r.run_key for r in again.run_requests] == [request.run_key]  # same key: run once

        time.sleep(1.1)
        shorter = _retrain_tick(
            instance, url, tracking, cursor=result.cursor, retrain_cooldown_seconds="1"
        )
        assert [r.run_key for r in shorter.run_requests] == [request.run_key]

        # a newer monitored day passes both checks: the failure is history
        _monitor(instance, url, LATER_GOOD_DAY)
        settled = _retrain_tick(instance, url, tracking)
        assert isinstance(settled, SkipReason)
        assert "no drift or live-accuracy check of the served model failed" in settled.skip_message


def test_a_failure_of_a_model_that_is_no_longer_the_champion_retrains_nothing(monitored, tmp_path):
    url, _, _ = monitored
    tracking = _registry(tmp_path)
    _register(tracking, f"{MODEL_NAME}:a_newer_model", "2025-02-08")
    tracking.elect_champion()
    with instance_for_test() as instance:
        _monitor(instance, url, BAD_DAY)
        assert isinstance(_retrain_tick(instance, url, tracking), SkipReason)


def test_only_a_drift_failure_is_named_in_the_run_key(monitored, tmp_path):
    url, served, _ = monitored
    tracking = _registry(tmp_path)
    with instance_for_test() as instance:
        _monitor(instance, url, BAD_DAY, min_labelled="100000")  # accuracy not judged
        (request,) = _retrain_tick(instance, url, tracking).run_requests
        assert request.run_key == f"retrain:{NEWEST_LABEL_DAY}:drift"


# --- rollback -----------------------------------------------------------------------------

OLD = f"{MODEL_NAME}:the_predecessor"
NEW = f"{MODEL_NAME}:the_regressed_one"
SWAP_DAY = date(2025, 2, 5)


@pytest.fixture
def swapped(tmp_path):
    """SWAP_DAY: OLD answered the morning's 100 customers rightly, NEW (hot-swapped in at
    noon) got the afternoon's 100 customers right only 40 times; the day is monitored."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = init_schema(url)
    seed_synthetic(engine, customers=200, days=SEED_DAYS, start=SEED_START, seed=8, progress=False)
    rows = day_rows(engine, SWAP_DAY)
    engine.dispose()
    morning = log_rows(rows.iloc[:100], day=SWAP_DAY, model_version=OLD, hour=8, prefix="m")
    afternoon = log_rows(rows.iloc[100:140], day=SWAP_DAY, model_version=NEW, hour=15, prefix="a")
    afternoon += log_rows(
        rows.iloc[140:], day=SWAP_DAY, model_version=NEW, hour=16, right=False, prefix="w"
    )
    write_log(url, tmp_path / "spool", morning + afternoon)
    tracking = _registry(tmp_path)
    versions = {
        OLD: _register(tracking, OLD, "2025-01-30"),
        NEW: _register(tracking, NEW, "2025-02-04"),
    }
    assert str(tracking.elect_champion().version) == versions[NEW]
    with instance_for_test() as instance:
        _monitor(instance, url, SWAP_DAY)
        yield url, tracking, versions, instance


def _deployed(instance, new: str, old: str) -> None:
    """The record a deploy leaves: deployed_bento materialized with the model it replaced."""
    instance.report_runless_asset_event(
        AssetMaterialization(
            "deployed_bento",
            partition="2025-02-04",
            metadata={"model_tag": new, "previous_model_tag": old},
        )
    )


def _rollback_tick(instance, url, tracking, **policy):
    settings = {"rollback_min_labelled": "50", "rollback_tolerance": "0.03", **policy}
    resources = {**monitoring_resources(url, **settings), "mlflow_tracking": tracking}
    return rollback_sensor(build_sensor_context(instance=instance, resources=resources))


def test_a_regressed_new_model_is_marked_and_its_predecessor_deployed_again(swapped):
    url, tracking, versions, instance = swapped
    assert isinstance(_rollback_tick(instance, url, tracking), SkipReason)  # nothing deployed
    _deployed(instance, NEW, OLD)

    result = _rollback_tick(instance, url, tracking)
    (request,) = result.run_requests
    assert request.run_key == f"rollback:{NEW}"
    assert request.partition_key == "2025-01-30"
    assert request.tags[MODEL_TAG_RUN_TAG] == OLD
    assert request.tags[MLFLOW_VERSION_RUN_TAG] == versions[OLD]
    assert "live accuracy 0.4000 (100 labelled)" in request.tags["credit_platform/reason"]
    marked = tracking.client().get_model_version(MODEL_NAME, versions[NEW])
    assert "0.4000" in marked.tags[LIVE_REGRESSION_TAG]
    # the champion policy now skips the marked model, whatever is elected later
    assert str(tracking.champion().version) == versions[OLD]
    assert str(tracking.elect_champion().version) == versions[OLD]

    again = _rollback_tick(instance, url, tracking)  # a repeated tick: the same key
    assert [r.run_key for r in again.run_requests] == [request.run_key]

    _deployed(instance, OLD, NEW)  # once the predecessor serves again, nothing to do
    settled = _rollback_tick(instance, url, tracking)
    # OLD is 0.6 better than NEW: said so, not "within the tolerance"
    assert isinstance(settled, SkipReason)
    assert settled.skip_message.endswith("not worse than its predecessor (+0.6000), kept")


def test_no_rollback_without_enough_labels_on_both_or_within_the_tolerance(swapped):
    url, tracking, versions, instance = swapped
    _deployed(instance, NEW, OLD)
    few = _rollback_tick(instance, url, tracking, rollback_min_labelled="101")
    assert isinstance(few, SkipReason) and "not enough labelled predictions" in few.skip_message
    lenient = _rollback_tick(instance, url, tracking, rollback_tolerance="0.7")
    assert isinstance(lenient, SkipReason)
    assert lenient.skip_message.endswith("worse by 0.6000, within the tolerance 0.7")
    marked = tracking.client().get_model_version(MODEL_NAME, versions[NEW])
    assert LIVE_REGRESSION_TAG not in (marked.tags or {})


def test_a_deploy_that_started_the_service_is_compared_with_the_model_deployed_before(swapped):
    """The service was down when NEW was deployed (its record names no replaced model): the
    predecessor is the model of the deployment before, not "none (no service answered)"."""
    url, tracking, versions, instance = swapped
    _deployed(instance, NEW, "none (no service answered)")
    first = _rollback_tick(instance, url, tracking)
    assert isinstance(first, SkipReason)
    assert first.skip_message == (
        f"{NEW} has no predecessor to compare with: it is the first model deployed on this "
        "instance (no service answered before its deploy, and no earlier deployment of "
        "another model is recorded)"
    )
    _deployed(instance, OLD, "none (no service answered)")
    _deployed(instance, NEW, "none (no service answered)")  # after an outage
    (request,) = _rollback_tick(instance, url, tracking).run_requests
    assert request.run_key == f"rollback:{NEW}" and request.tags[MODEL_TAG_RUN_TAG] == OLD
    _deployed(instance, OLD, OLD)
    again = _rollback_tick(instance, url, tracking)
    assert isinstance(again, SkipReason) and "it replaced itself" in again.skip_message


def test_the_comparison_uses_only_days_on_which_both_models_have_labels():
    frame = pd.DataFrame(
        [
            (date(2025, 2, 1), OLD, 100.0, 0.9),  # OLD alone: not comparable
            (date(2025, 2, 2), OLD, 50.0, 0.8),
            (date(2025, 2, 2), NEW, 150.0, 0.6),
            (date(2025, 2, 3), OLD, 50.0, 0.6),
            (date(2025, 2, 3), NEW, 50.0, 0.7),
            (date(2025, 2, 4), NEW, 0.0, None),  # nothing labelled yet
        ],
        columns=["day", "model_version", "labelled", "live_accuracy"],
    )
    comparison = compare_on_shared_days(frame, NEW, OLD)
    assert comparison.days == (date(2025, 2, 2), date(2025, 2, 3))
    assert comparison.new_labelled == 200 and comparison.old_labelled == 100
    assert comparison.new_accuracy == pytest.approx((150 * 0.6 + 50 * 0.7) / 200)
    assert comparison.old_accuracy == pytest.approx(0.7)
