"""The blocking model-quality check: its decision rules, the champion scored on the
candidate's own test rows, clear failures for an unusable champion, and that a failed check
keeps the deployment asset from running."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
from dagster import AssetKey, asset, materialize

from credit_platform.cli.pipeline_runs import failure_reasons
from credit_platform.core.answers import answered_labels
from credit_platform.core.db import init_schema
from credit_platform.core.features import TARGET
from credit_platform.core.model_input import prepare_model_input, uses_derived_features
from credit_platform.core.model_store import load_model_bundle
from credit_platform.core.service_process import free_port
from credit_platform.core.settings import API_URL_ENV, MODEL_NAME
from credit_platform.defs.assets.model import credit_score_model
from credit_platform.defs.assets.scalers import scalers
from credit_platform.defs.assets.split import SPLIT_COLUMN, TEST, train_valid_split
from credit_platform.defs.checks import Champion, credit_score_model_quality, judge_model
from credit_platform.defs.partitions import daily_partitions
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


# --- the check inside a run -------------------------------------------------------------


@pytest.fixture
def training_setup(tmp_path, sqlite_url, monkeypatch):
    """A populated store, isolated resources, and an API URL where nothing answers."""
    engine = init_schema(sqlite_url)
    insert_partition(engine, synthetic_partition(DAY, rows=300, seed=11))
    engine.dispose()
    # Whatever answers at the API's URL plays no part in the check.
    monkeypatch.setenv(API_URL_ENV, f"http://127.0.0.1:{free_port()}")
    return training_resources(tmp_path, sqlite_url)


def _run(resources, min_accuracy: float | None = None, grid: dict | None = None):
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
                "credit_score_model": {"config": grid or tiny_grid()},
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
    assert reason.startswith("check credit_score_model_quality failed: test_accuracy "), reason
    assert "below the minimum 0.9900" in reason
    materialized = {event.asset_key for event in result.get_asset_materialization_events()}
    assert AssetKey("credit_score_model") in materialized
    assert DEPLOYED not in materialized

    tracking = training_setup["mlflow_tracking"]
    assert tracking.champion() is None
    version = result.output_for_node("credit_score_model")["mlflow_model_version"]
    tags = tracking.client().get_model_version(MODEL_NAME, version).tags
    assert tags["quality_check"] == "failed"


def _stored_test_rows(tmp_path) -> pd.DataFrame:
    stored = pd.read_parquet(tmp_path / "storage" / "train_valid_split" / f"{PARTITION}.parquet")
    return stored[stored[SPLIT_COLUMN] == TEST]


def test_a_passing_check_lets_deployment_run_and_crowns_the_champion(training_setup):
    result = _run(training_setup)

    assert result.success
    evaluation = _evaluation(result)
    assert evaluation.passed
    summary = result.output_for_node("credit_score_model")
    assert evaluation.metadata["test_accuracy"].value == summary["metrics"]["test_accuracy"]
    assert evaluation.metadata["champion_source"].value == "none"
    assert evaluation.metadata["became_champion"].value is True
    materialized = {event.asset_key for event in result.get_asset_materialization_events()}
    assert DEPLOYED in materialized

    champion = training_setup["mlflow_tracking"].champion()
    assert champion is not None
    assert str(champion.version) == summary["mlflow_model_version"]
    assert champion.tags["bento_tag"] == summary["bento_tag"]
    assert champion.tags["quality_check"] == "passed"


def test_the_champion_is_scored_on_the_candidates_own_test_rows(training_setup, tmp_path):
    champion_run = _run(training_setup)
    champion_tag = champion_run.output_for_node("credit_score_model")["bento_tag"]
    # A much weaker candidate of the same day: two trees of depth 2.
    weak = {"depths": [2], "rsms": [1.0], "l2_leaf_regs": [3.0], "iterations": 2}
    result = _run(training_setup, min_accuracy=0.3, grid=weak)

    evaluation = _evaluation(result)
    test = _stored_test_rows(tmp_path)
    bundle = load_model_bundle(champion_tag)
    derived = uses_derived_features(bundle.model)
    answered = answered_labels(
        bundle.model,
        bundle.metadata,
        prepare_model_input(test, bundle.scalers, derived=derived),
    )
    expected = (answered == test[TARGET].astype(str).to_numpy()).mean()
    assert evaluation.metadata["champion_accuracy"].value == pytest.approx(expected)
    assert evaluation.metadata["test_rows"].value == len(test)
    assert evaluation.metadata["champion_source"].value.startswith(champion_tag)
    assert not evaluation.passed
    assert "worse than the champion's" in evaluation.metadata["reason"].value
    assert "on the same test rows" in evaluation.metadata["reason"].value
    materialized = {event.asset_key for event in result.get_asset_materialization_events()}
    assert DEPLOYED not in materialized
    assert training_setup["mlflow_tracking"].champion().tags["bento_tag"] == champion_tag


def test_a_champion_missing_from_the_bentoml_store_fails_the_check_clearly(training_setup):
    first = _run(training_setup).output_for_node("credit_score_model")
    tracking = training_setup["mlflow_tracking"]
    tracking.client().set_model_version_tag(
        MODEL_NAME, first["mlflow_model_version"], "bento_tag", f"{MODEL_NAME}:nosuchmodel"
    )
    result = _run(training_setup)

    evaluation = _evaluation(result)
    assert not evaluation.passed
    reason = evaluation.metadata["reason"].value
    assert f"{MODEL_NAME}:nosuchmodel" in reason and "not in the BentoML store" in reason
    assert str(tracking.champion().version) == first["mlflow_model_version"]
