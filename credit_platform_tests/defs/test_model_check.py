"""The blocking model-quality check: its decision rules, where the champion comes from, and
that a failed check keeps the deployment asset from running."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from dagster import AssetKey, asset, materialize

from credit_platform.cli.pipeline_runs import failure_reasons
from credit_platform.core.db import init_schema
from credit_platform.core.service_process import free_port
from credit_platform.core.settings import API_URL_ENV, MODEL_NAME
from credit_platform.defs.assets.model import credit_score_model
from credit_platform.defs.assets.scalers import scalers
from credit_platform.defs.assets.split import train_valid_split
from credit_platform.defs.checks import (
    Champion,
    credit_score_model_quality,
    current_champion,
    judge_model,
    served_champion,
)
from credit_platform.defs.partitions import daily_partitions
from credit_platform.defs.resources.prediction_service import PredictionServiceResource
from credit_platform_tests.training_fixtures import (
    insert_partition,
    synthetic_partition,
    tiny_grid,
    training_resources,
)

DAY = date(2025, 1, 31)
PARTITION = DAY.isoformat()
DEPLOYED = AssetKey("deployed_bento_stand_in")


@asset(key=DEPLOYED, partitions_def=daily_partitions(), deps=[credit_score_model])
def deployed_bento_stand_in() -> None:
    """Stands in for `deployed_bento`: anything downstream of the model the check must guard."""


# --- the decision -----------------------------------------------------------------------


def test_a_model_below_the_minimum_fails_even_without_a_champion():
    verdict = judge_model(0.49, min_accuracy=0.5, tolerance=0.02, champion=None)
    assert not verdict.passed
    assert "below the minimum" in verdict.reason


def test_the_first_model_passes_on_the_minimum_alone():
    verdict = judge_model(0.5, min_accuracy=0.5, tolerance=0.02, champion=None)
    assert verdict.passed
    assert "no champion" in verdict.reason


@pytest.mark.parametrize(
    ("accuracy", "passed"),
    [
        (0.70, True),  # better than the champion
        (0.62, True),  # equal
        (0.60, True),  # worse by exactly the tolerance
        (0.599, False),  # worse by more than the tolerance
        (0.40, False),
    ],
)
def test_a_model_may_trail_the_champion_by_the_tolerance_only(accuracy, passed):
    champion = Champion(accuracy=0.62, source="served credit_score_classifier:abc")
    verdict = judge_model(accuracy, min_accuracy=0.3, tolerance=0.02, champion=champion)
    assert verdict.passed is passed
    assert "credit_score_classifier:abc" in verdict.reason


def test_the_minimum_applies_even_when_the_champion_is_worse():
    champion = Champion(accuracy=0.40, source="old")
    assert not judge_model(0.45, min_accuracy=0.5, tolerance=0.02, champion=champion).passed


# --- where the champion comes from ------------------------------------------------------


def metadata(model_version: str, val_accuracy: object) -> dict:
    """A /metadata body as the service answers it (the fields the check reads)."""
    return {
        "model_version": model_version,
        "creation_time": "2025-02-03T10:00:00+00:00",
        "metrics": {"val_accuracy": val_accuracy},
    }


@contextmanager
def stub_api(body: object, status: int = 200) -> Iterator[str]:
    """A tiny HTTP server answering GET /metadata with `body`, on a free port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            payload = json.dumps(body).encode() if not isinstance(body, bytes) else body
            self.send_response(status if self.path == "/metadata" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(payload)

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


def test_the_served_models_accuracy_comes_from_metadata():
    with stub_api(metadata("credit_score_classifier:abc", 0.61)) as url:
        champion = served_champion(url, timeout=2)
    assert champion == Champion(0.61, f"served credit_score_classifier:abc at {url}")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({**metadata("x", 0.9), "metrics": {}}, 200),
        (metadata("x", "high"), 200),
        ({**metadata("x", 0.9), "creation_time": "2025-02-03T10:00:00"}, 200),  # naive time
        ({"metrics": {"val_accuracy": 0.9}}, 200),
        (b"not json", 200),
        (metadata("x", 0.9), 503),
    ],
    ids=["no accuracy", "accuracy not a number", "naive time", "no version", "not JSON", "503"],
)
def test_a_served_model_without_a_usable_accuracy_is_no_champion(body, status):
    with stub_api(body, status) as url:
        assert served_champion(url, timeout=2) is None


def test_a_down_api_is_no_champion():
    assert served_champion(f"http://127.0.0.1:{free_port()}", timeout=1) is None


def test_the_served_model_wins_over_the_registry(tmp_path, sqlite_url):
    tracking = training_resources(tmp_path, sqlite_url)["mlflow_tracking"]
    with stub_api(metadata("served", 0.7)) as url:
        assert current_champion(url, 2, tracking).accuracy == 0.7
    # nothing served and nothing registered: no champion at all
    assert current_champion(f"http://127.0.0.1:{free_port()}", 1, tracking) is None


# --- the check inside a run -------------------------------------------------------------


@pytest.fixture
def training_setup(tmp_path, sqlite_url, monkeypatch):
    """A populated store, isolated resources, and an API URL where nothing answers."""
    engine = init_schema(sqlite_url)
    insert_partition(engine, synthetic_partition(DAY, rows=300, seed=11))
    engine.dispose()
    monkeypatch.setenv(API_URL_ENV, f"http://127.0.0.1:{free_port()}")
    return training_resources(tmp_path, sqlite_url)


def _run(resources, min_accuracy: float | None = None):
    check_config = {} if min_accuracy is None else {"min_accuracy": min_accuracy}
    return materialize(
        [
            train_valid_split,
            scalers,
            credit_score_model,
            credit_score_model_quality,
            deployed_bento_stand_in,
        ],
        partition_key=PARTITION,
        resources=resources,
        run_config={
            "ops": {
                "credit_score_model": {"config": tiny_grid()},
                "credit_score_model_credit_score_model_quality": {"config": check_config},
            }
        },
        raise_on_error=False,
    )


def _evaluation(result):
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.partition == PARTITION
    return evaluation


def test_a_failing_check_blocks_deployment_and_crowns_no_champion(training_setup):
    result = _run(training_setup, min_accuracy=0.99)

    assert not result.success
    evaluation = _evaluation(result)
    assert not evaluation.passed
    assert "below the minimum 0.9900" in evaluation.metadata["reason"].value
    assert evaluation.metadata["min_accuracy"].value == 0.99
    # `credit-platform materialize` reports the failed run by its check and reason.
    (reason,) = failure_reasons(result)
    assert reason.startswith("check credit_score_model_quality failed: val_accuracy "), reason
    assert "below the minimum 0.9900" in reason
    materialized = {event.asset_key for event in result.get_asset_materialization_events()}
    assert AssetKey("credit_score_model") in materialized
    assert DEPLOYED not in materialized

    tracking = training_setup["mlflow_tracking"]
    assert tracking.champion() is None
    version = result.output_for_node("credit_score_model")["mlflow_model_version"]
    tags = tracking.client().get_model_version(MODEL_NAME, version).tags
    assert tags["quality_check"] == "failed"


def test_a_passing_check_lets_deployment_run_and_crowns_the_champion(training_setup):
    result = _run(training_setup)

    assert result.success
    evaluation = _evaluation(result)
    assert evaluation.passed
    summary = result.output_for_node("credit_score_model")
    assert evaluation.metadata["val_accuracy"].value == summary["metrics"]["val_accuracy"]
    assert evaluation.metadata["champion_source"].value == "none"
    materialized = {event.asset_key for event in result.get_asset_materialization_events()}
    assert DEPLOYED in materialized

    champion = training_setup["mlflow_tracking"].champion()
    assert champion is not None
    assert str(champion.version) == summary["mlflow_model_version"]
    assert champion.tags["bento_tag"] == summary["bento_tag"]
    # With no API answering, the next check measures against this registry champion.
    fallback = current_champion(
        f"http://127.0.0.1:{free_port()}", 1, training_setup["mlflow_tracking"]
    )
    assert fallback.accuracy == pytest.approx(summary["metrics"]["val_accuracy"], abs=1e-6)
    assert f"version {summary['mlflow_model_version']} (champion)" in fallback.source


def test_a_model_much_worse_than_the_served_one_is_blocked(training_setup, monkeypatch):
    served = metadata("credit_score_classifier:best", 0.99)
    with stub_api(served) as url:
        training_setup["prediction_service"] = PredictionServiceResource(api_url=url)
        result = _run(training_setup)

    evaluation = _evaluation(result)
    assert not evaluation.passed
    assert evaluation.metadata["champion_accuracy"].value == 0.99
    assert "credit_score_classifier:best" in evaluation.metadata["reason"].value
    materialized = {event.asset_key for event in result.get_asset_materialization_events()}
    assert DEPLOYED not in materialized
