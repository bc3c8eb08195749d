"""The challenger sensor and `challenger_decision`, against a real prediction service (the
built Bento on a free port, with a real shadow or canary attached), live metrics in
`credit_model_monitoring` as the monitoring asset writes them, and a real MLflow registry:
promote on live evidence, detach a worse challenger, wait when the evidence is thin."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from dagster import (
    DagsterInstance,
    SkipReason,
    build_sensor_context,
    instance_for_test,
    materialize,
)

from bench.sample_requests import load_sample
from credit_platform.core import settings
from credit_platform.core.db import init_schema
from credit_platform.core.monitoring import LABELLED, LIVE_ACCURACY
from credit_platform.core.monitoring_store import replace_day
from credit_platform.core.schema import MONITORING_ALL_ROLES
from credit_platform.core.service_client import ServiceClient
from credit_platform.core.service_process import ServiceProcess
from credit_platform.core.settings import MODEL_NAME
from credit_platform.defs.assets.challenger import challenger_decision
from credit_platform.defs.challenger_sensor import challenger_sensor
from credit_platform.defs.resources.feature_store import FeatureStoreResource
from credit_platform.defs.resources.mlflow_tracking import (
    CHALLENGER_VERDICT_TAG,
    LIVE_REGRESSION_TAG,
    PROMOTED_OVER_TAG,
    MlflowTrackingResource,
)
from credit_platform.defs.resources.monitoring_policy import MonitoringPolicyResource
from credit_platform.defs.resources.prediction_service import PredictionServiceResource
from credit_platform_tests.defs.test_monitoring_sensors import _register
from credit_platform_tests.model_fixtures import save_tiny_model

pytestmark = pytest.mark.slow

TOKEN = "challenger-decision-token"
DAYS = [date(2025, 3, 1) + timedelta(days=n) for n in range(3)]


@pytest.fixture(scope="module")
def models(kaggle_sample: Path) -> dict[str, str]:
    sample = load_sample(kaggle_sample, rows=2000)
    return {
        "champion": save_tiny_model(sample, partition="2025-02-28", iterations=20, seed=1),
        "challenger": save_tiny_model(sample, partition="2025-02-20", iterations=15, seed=2),
        "loser": save_tiny_model(sample, partition="2025-02-25", iterations=5, seed=3),
    }


@pytest.fixture(scope="module")
def service(models, tmp_path_factory) -> Iterator[ServiceProcess]:
    work = tmp_path_factory.mktemp("challenger_service")
    process = ServiceProcess(
        {
            "FEATURE_STORE_URL": f"sqlite:///{work / 'log.db'}",
            "CREDIT_PREDICTION_SPOOL_DIR": str(work / "spool"),
            "CREDIT_API_MODEL_TAG": models["champion"],
            "CREDIT_API_ADMIN_TOKEN": TOKEN,
        },
        work / "service.log",
    )
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def _write_live(url: str, accuracies: dict[str, tuple[float, int]]) -> None:
    """What model_monitoring stores per day and version (over all roles): labelled count
    and live accuracy, for each of DAYS."""
    engine = init_schema(url)
    try:
        for day in DAYS:
            rows = []
            for version, (accuracy, labelled) in accuracies.items():
                for metric, value in ((LABELLED, labelled), (LIVE_ACCURACY, accuracy)):
                    rows.append(
                        {
                            "day": day,
                            "model_version": version,
                            "role": MONITORING_ALL_ROLES,
                            "metric": metric,
                            "feature": "",
                            "value": value,
                        }
                    )
            replace_day(engine, day, rows)
    finally:
        engine.dispose()


def _resources(url: str, service: ServiceProcess, tracking=None) -> dict:
    resources = {
        "feature_store": FeatureStoreResource(url=url),
        "prediction_service": PredictionServiceResource(
            api_url=service.url, admin_token=TOKEN, autostart=False
        ),
        "monitoring_policy": MonitoringPolicyResource(
            challenger_margin="0.02", challenger_min_labelled="300"
        ),
    }
    if tracking is not None:
        resources["mlflow_tracking"] = tracking
    return resources


def _tick(instance: DagsterInstance, url: str, service: ServiceProcess):
    context = build_sensor_context(instance=instance, resources=_resources(url, service))
    return challenger_sensor(context)


def _registry(tmp_path: Path) -> MlflowTrackingResource:
    return MlflowTrackingResource(
        tracking_uri=f"sqlite:///{tmp_path / 'registry.db'}",
        experiment_name="challenger_tests",
        artifact_location=(tmp_path / "artifacts").as_uri(),
    )


def _decide(instance, request, url, service, tracking):
    return materialize(
        [challenger_decision],
        run_config=request.run_config,
        resources=_resources(url, service, tracking),
        instance=instance,
        tags=request.tags,
    )


def test_a_better_shadow_is_promoted_through_the_champion_policy(models, service, tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    tracking = _registry(tmp_path)
    champion_version = _register(tracking, models["champion"], "2025-02-28")
    challenger_version = _register(tracking, models["challenger"], "2025-02-20")
    _register(tracking, models["loser"], "2025-02-25")
    assert str(tracking.elect_champion().version) == champion_version
    client = ServiceClient(service.url)
    with instance_for_test() as instance:
        assert isinstance(_tick(instance, url, service), SkipReason)  # nothing attached
        client.set_challenger(TOKEN, models["challenger"], "shadow")

        # Thin evidence: the sensor waits and says why.
        _write_live(url, {models["champion"]: (0.60, 50), models["challenger"]: (0.75, 50)})
        thin = _tick(instance, url, service)
        assert isinstance(thin, SkipReason) and "not enough labelled" in thin.skip_message
        # Close evidence: within the margin.
        _write_live(url, {models["champion"]: (0.60, 200), models["challenger"]: (0.61, 200)})
        close = _tick(instance, url, service)
        assert isinstance(close, SkipReason) and "within the margin" in close.skip_message

        _write_live(url, {models["champion"]: (0.60, 200), models["challenger"]: (0.70, 200)})
        result = _tick(instance, url, service)
        (request,) = result.run_requests
        assert request.run_key == f"challenger:promote:{models['challenger']}"
        decided = _decide(instance, request, url, service, tracking)
        assert decided.success
        metadata = decided.asset_materializations_for_node("challenger_decision")[0].metadata
        assert metadata["decision"].value == "promote"
        assert metadata["champion_model_tag_after"].value == models["challenger"]
        assert metadata["champion_model_tag_before"].value == models["champion"]
        assert metadata["challenger_live_accuracy"].value == pytest.approx(0.70)

    assert client.reported_model().challenger is None  # detached from the service
    champion = tracking.champion()
    assert str(champion.version) == challenger_version
    assert champion.tags[PROMOTED_OVER_TAG] == "2025-02-28"
    assert champion.tags[CHALLENGER_VERDICT_TAG].startswith("promoted:")
    displaced = tracking.client().get_model_version(MODEL_NAME, champion_version)
    assert "displaced by" in displaced.tags[LIVE_REGRESSION_TAG]
    # A later election (a backfill's check) keeps the promoted model: it ranks at the
    # partition it won over, above the older loser.
    assert str(tracking.elect_champion().version) == challenger_version


def test_a_worse_canary_is_detached_and_the_verdict_recorded(models, service, tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    tracking = _registry(tmp_path)
    _register(tracking, models["champion"], "2025-02-28")
    loser_version = _register(tracking, models["loser"], "2025-02-25")
    tracking.elect_champion()
    client = ServiceClient(service.url)
    client.set_challenger(TOKEN, models["loser"], "canary", 0.2)
    _write_live(url, {models["champion"]: (0.62, 400), models["loser"]: (0.50, 100)})
    with instance_for_test() as instance:
        (request,) = _tick(instance, url, service).run_requests
        assert request.run_key == f"challenger:detach:{models['loser']}"
        decided = _decide(instance, request, url, service, tracking)
        assert decided.success
        metadata = decided.asset_materializations_for_node("challenger_decision")[0].metadata
        assert metadata["decision"].value == "detach" and metadata["role"].value == "canary"
        assert metadata["mlflow_version_numbers_tagged"].value == loser_version
        # Carried out once: the service runs no challenger now, and a stale verdict fails.
        assert client.reported_model().challenger is None
        again = materialize(
            [challenger_decision],
            run_config=request.run_config,
            resources=_resources(url, service, tracking),
            instance=instance,
            raise_on_error=False,
        )
        assert not again.success
        assert "runs no challenger now" in str(
            again.failure_data_for_node("challenger_decision").error
        )
    verdict = tracking.client().get_model_version(MODEL_NAME, loser_version).tags
    assert verdict[CHALLENGER_VERDICT_TAG].startswith("detached:")
    assert tracking.champion().tags["bento_tag"] == models["champion"]


def test_a_launch_from_the_ui_with_the_defaults_is_refused_with_the_reason(tmp_path):
    """The Materialize button sends no config: the run starts and fails saying why, before
    touching the service or the registry (it used to be a launchpad config error)."""
    silent = PredictionServiceResource(
        api_url=settings.api_url(), admin_token="x" * 32, autostart=False
    )
    with instance_for_test() as instance:
        result = materialize(
            [challenger_decision],
            resources={"mlflow_tracking": _registry(tmp_path), "prediction_service": silent},
            instance=instance,
            raise_on_error=False,
        )
    assert not result.success
    error = result.failure_data_for_node("challenger_decision").error
    assert "no verdict to carry out: the challenger sensor launches this asset" in str(error)
    assert not (tmp_path / "registry.db").exists()  # the registry was never opened
