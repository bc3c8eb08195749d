"""Champion policy: the MLflow alias is elected from the registry (the passing model of the
newest data partition), a backfill never displaces a model of newer data whatever order its
runs finish in, the deploy sensor follows the champion, and a rollback is one call."""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner
from dagster import DagsterRun, DagsterRunStatus, build_sensor_context, instance_for_test

from bench.sample_requests import load_sample
from credit_platform.cli.rollback import roll_back_champion, rollback
from credit_platform.core import routes
from credit_platform.core.db import init_schema
from credit_platform.core.model_store import save_model_bundle
from credit_platform.core.service_process import free_port
from credit_platform.core.settings import (
    MLFLOW_EXPERIMENT_ENV,
    MLFLOW_TRACKING_URI_ENV,
    MODEL_NAME,
)
from credit_platform.defs.jobs import deploy_job
from credit_platform.defs.resources.mlflow_tracking import (
    BENTO_TAG,
    LIVE_REGRESSION_TAG,
    PARTITION_TAG,
    QUALITY_TAG,
    MlflowTrackingResource,
    champion_of,
)
from credit_platform.defs.resources.prediction_service import PredictionServiceResource
from credit_platform.defs.sensors import deploy_sensor
from credit_platform.ingest.synthetic import seed_synthetic
from credit_platform_tests.model_fixtures import train_tiny_model
from credit_platform_tests.training_fixtures import (
    tiny_grid,
    train_and_check,
    training_resources,
)

NEWEST = "2025-02-05"
BACKFILL = ("2025-02-04", "2025-02-02", "2025-02-03")  # finishing out of order
# A deliberately weak model for the newest day, so an older day's model is better.
WEAK_GRID = {"depths": [2], "rsms": [1.0], "l2_leaf_regs": [3.0], "iterations": 2}


# --- the election, on registry versions alone --------------------------------------------


def _registry(tmp_path) -> MlflowTrackingResource:
    return MlflowTrackingResource(
        tracking_uri=f"sqlite:///{tmp_path / 'registry.db'}",
        experiment_name="champion_tests",
        artifact_location=(tmp_path / "artifacts").as_uri(),
    )


def _version(tracking, partition: str, verdict: str = "passed", bento: str | None = None):
    """A registered version as a training run leaves it, then its check's verdict."""
    client = tracking.client()
    if not client.search_registered_models(f"name = '{MODEL_NAME}'"):
        client.create_registered_model(MODEL_NAME)
    version = client.create_model_version(
        MODEL_NAME,
        source=f"{tracking.artifact_location}/models/{partition}",
        tags={PARTITION_TAG: partition, BENTO_TAG: bento or f"{MODEL_NAME}:{partition}"},
    )
    client.set_model_version_tag(MODEL_NAME, version.version, QUALITY_TAG, verdict)
    return str(version.version)


@pytest.mark.parametrize("order", list(itertools.permutations(["02-02", "02-03", "02-04"])))
def test_any_finishing_order_of_a_backfill_leaves_the_newest_day_champion(tmp_path, order):
    tracking = _registry(tmp_path)
    newest = _version(tracking, NEWEST)
    assert str(tracking.elect_champion().version) == newest
    for day in order:
        _version(tracking, f"2025-{day}")
        assert str(tracking.elect_champion().version) == newest
    assert str(tracking.champion().version) == newest


def test_election_ignores_failed_and_rolled_back_versions_and_prefers_the_newest_rerun(tmp_path):
    tracking = _registry(tmp_path)
    assert tracking.elect_champion() is None  # a registry without versions has no champion
    older = _version(tracking, "2025-02-01")
    _version(tracking, "2025-02-02", verdict="failed")
    assert str(tracking.elect_champion().version) == older
    first_run = _version(tracking, "2025-02-03")
    rerun = _version(tracking, "2025-02-03")
    assert str(tracking.elect_champion().version) == rerun
    retired, elected = tracking.roll_back()
    assert (str(retired.version), str(elected.version)) == (rerun, first_run)
    assert str(tracking.elect_champion().version) == first_run  # retired stays retired
    assert champion_of(tracking.versions()).version == elected.version


def test_election_skips_a_model_marked_for_a_live_regression(tmp_path):
    tracking = _registry(tmp_path)
    older = _version(tracking, "2025-02-01")
    regressed = _version(tracking, "2025-02-02", bento=f"{MODEL_NAME}:regressed")
    assert str(tracking.elect_champion().version) == regressed
    marked, champion = tracking.mark_regressed(f"{MODEL_NAME}:regressed", "worse live")
    assert [str(version.version) for version in marked] == [regressed]
    assert str(champion.version) == older
    tag = tracking.client().get_model_version(MODEL_NAME, regressed).tags[LIVE_REGRESSION_TAG]
    assert tag == "worse live"
    # a backfill of an older day elects nothing new; a retrained day elects its new model
    _version(tracking, "2025-01-30")
    assert str(tracking.elect_champion().version) == older
    retrained = _version(tracking, "2025-02-02", bento=f"{MODEL_NAME}:retrained")
    assert str(tracking.elect_champion().version) == retrained
    assert str(champion_of(tracking.versions()).version) == retrained


def test_rollback_says_clearly_when_there_is_nothing_to_roll_back_to(tmp_path):
    tracking = _registry(tmp_path)
    with pytest.raises(LookupError, match="no 'champion' alias"):
        tracking.roll_back()
    _version(tracking, "2025-02-01")
    tracking.elect_champion()
    with pytest.raises(LookupError, match="no previous champion"):
        roll_back_champion(tracking)


def test_rollback_command_moves_the_alias(tmp_path, monkeypatch):
    tracking = _registry(tmp_path)
    older = _version(tracking, "2025-02-01")
    _version(tracking, "2025-02-02")
    tracking.elect_champion()
    monkeypatch.setenv(MLFLOW_TRACKING_URI_ENV, tracking.tracking_uri)
    monkeypatch.setenv(MLFLOW_EXPERIMENT_ENV, tracking.experiment_name)

    result = CliRunner().invoke(rollback, [])
    assert result.exit_code == 0, result.output
    assert "the champion is now version " + older in result.output
    assert str(tracking.champion().version) == older
    again = CliRunner().invoke(rollback, [])
    assert again.exit_code != 0 and "no previous champion" in again.output


# --- the check and the deploy sensor on trained models ------------------------------------


@contextmanager
def serving(tag: str | None) -> Iterator[str]:
    """An HTTP endpoint answering GET /metadata as a service serving `tag` would (503 for
    None), on a free port; the sensor reads nothing else."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            body = {
                "model_version": tag,
                "creation_time": "2025-02-06T10:00:00+00:00",
                "metrics": {},
            }
            self.send_response(200 if tag and self.path == routes.METADATA else 503)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(body).encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _train(resources, instance, partition: str, grid: dict):
    result = train_and_check(resources, instance, partition, grid, min_accuracy=0.3)
    (evaluation,) = result.get_asset_check_evaluations()
    return result.output_for_node("credit_score_model"), evaluation


def _deploy_tick(instance, resources, served_tag: str | None):
    with serving(served_tag) as url:
        resources = {
            **resources,
            "prediction_service": PredictionServiceResource(api_url=url, timeout_seconds=2.0),
        }
        return deploy_sensor(build_sensor_context(instance=instance, resources=resources))


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory):
    """The newest day trained first (a weak model), then a 3-day backfill of older days whose
    runs finish out of order."""
    tmp = tmp_path_factory.mktemp("champion")
    url = f"sqlite:///{tmp / 'store.db'}"
    engine = init_schema(url)
    seed_synthetic(engine, customers=40, days=36, start=date(2025, 1, 1), seed=5, progress=False)
    engine.dispose()
    resources = training_resources(tmp, url)
    with instance_for_test() as instance:
        models, checks = {}, {}
        models[NEWEST], checks[NEWEST] = _train(resources, instance, NEWEST, WEAK_GRID)
        for day in BACKFILL:
            models[day], checks[day] = _train(resources, instance, day, tiny_grid())
        yield {"resources": resources, "instance": instance, "models": models, "checks": checks}


def test_a_backfill_after_the_newest_day_leaves_its_model_champion_and_served(backfilled):
    models, checks = backfilled["models"], backfilled["checks"]
    tracking = backfilled["resources"]["mlflow_tracking"]

    assert checks[NEWEST].metadata["became_champion"].value is True
    for day in BACKFILL:
        assert checks[day].passed
        assert checks[day].metadata["became_champion"].value is False
        assert f"the champion stays version {models[NEWEST]['mlflow_model_version']}" in (
            checks[day].metadata["reason"].value
        )
        # the champion was scored on this day's own test rows
        assert checks[day].metadata["champion_source"].value.startswith(models[NEWEST]["bento_tag"])
    champion = tracking.champion()
    assert champion.tags[BENTO_TAG] == models[NEWEST]["bento_tag"]

    # Served: nothing to do. Serving a backfill's model (or nothing): deploy the champion.
    instance, resources = backfilled["instance"], backfilled["resources"]
    idle = _deploy_tick(instance, resources, models[NEWEST]["bento_tag"])
    assert idle.run_requests == [] and "already served" in idle.skip_reason.skip_message
    stale = _deploy_tick(instance, resources, models["2025-02-04"]["bento_tag"])
    assert [(r.partition_key, r.tags["credit_platform/model_tag"]) for r in stale.run_requests] == [
        (NEWEST, models[NEWEST]["bento_tag"])
    ]


def test_a_better_model_of_an_older_day_does_not_displace_the_champion(backfilled):
    checks = backfilled["checks"]
    # Scored on the older day's own test rows, its model beats the (weak) champion ...
    better = [
        day
        for day in BACKFILL
        if checks[day].metadata["test_accuracy"].value
        > checks[day].metadata["champion_accuracy"].value
    ]
    assert better, "the weak newest-day model should trail the backfill's models"
    # ... and still does not displace the model of newer data.
    for day in better:
        assert checks[day].passed
        assert checks[day].metadata["became_champion"].value is False
    champion = backfilled["resources"]["mlflow_tracking"].champion()
    assert champion.tags[PARTITION_TAG] == NEWEST


def test_rollback_is_one_call_and_the_deploy_sensor_follows(backfilled):
    models = backfilled["models"]
    tracking = backfilled["resources"]["mlflow_tracking"]
    message = roll_back_champion(tracking)
    assert models[NEWEST]["bento_tag"] in message and models["2025-02-04"]["bento_tag"] in message
    champion = tracking.champion()
    assert champion.tags[BENTO_TAG] == models["2025-02-04"]["bento_tag"]

    previous = models["2025-02-04"]["bento_tag"]
    tick = _deploy_tick(
        backfilled["instance"], backfilled["resources"], models[NEWEST]["bento_tag"]
    )
    assert [(r.partition_key, r.tags["credit_platform/model_tag"]) for r in tick.run_requests] == [
        ("2025-02-04", previous)
    ]
    assert tick.run_requests[0].run_key == f"deploy:{previous}"
    # Had the sensor deployed that model before (its key is used: Dagster launches a key
    # once), serving it again takes a key of its own.
    backfilled["instance"].add_run(
        DagsterRun(
            job_name=deploy_job.name,
            run_id=str(uuid.uuid4()),
            status=DagsterRunStatus.SUCCESS,
            tags={**tick.run_requests[0].tags, "dagster/run_key": f"deploy:{previous}"},
        )
    )
    again = _deploy_tick(
        backfilled["instance"], backfilled["resources"], models[NEWEST]["bento_tag"]
    )
    assert [r.run_key for r in again.run_requests] == [f"deploy:{previous}:redeploy:1"]


# --- the deploy sensor on a champion it cannot deploy --------------------------------------


def _sensor_tick(tracking: MlflowTrackingResource, served_tag: str | None = None):
    with instance_for_test() as instance:
        return _deploy_tick(instance, {"mlflow_tracking": tracking}, served_tag)


def test_the_deploy_sensor_skips_a_registry_without_a_champion(tmp_path):
    tracking = _registry(tmp_path)
    result = _sensor_tick(tracking)
    assert "has no champion" in result.skip_message
    _version(tracking, "2025-02-01", verdict="failed")
    assert tracking.elect_champion() is None
    assert "has no champion" in _sensor_tick(tracking).skip_message


def test_the_deploy_sensor_skips_an_unknown_champion_tag(tmp_path):
    tracking = _registry(tmp_path)
    _version(tracking, "2025-02-01", bento=f"{MODEL_NAME}:nosuchmodel")
    tracking.elect_champion()
    result = _sensor_tick(tracking)  # even with the service down, nothing is deployed
    assert f"{MODEL_NAME}:nosuchmodel" in result.skip_message
    assert "not in the BentoML store" in result.skip_message


def test_the_deploy_sensor_skips_a_champion_saved_without_test_metrics(tmp_path, kaggle_sample):
    sample = load_sample(kaggle_sample, rows=600)
    model, scalers = train_tiny_model(sample, iterations=5)
    old_style = save_model_bundle(
        model,
        scalers,
        partition="2025-02-01",
        metrics={"val_accuracy": 0.61, "val_macro_f1": 0.55},
        params={"iterations": 5},
    )
    tracking = _registry(tmp_path)
    _version(tracking, "2025-02-01", bento=old_style)
    tracking.elect_champion()
    result = _sensor_tick(tracking, served_tag=f"{MODEL_NAME}:other")
    assert old_style in result.skip_message
    assert "test_accuracy" in result.skip_message and "saved before" in result.skip_message
