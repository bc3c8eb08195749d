"""Challengers decided by live evidence, end to end with the simulation: one Dagster
instance, a real service on a free port, live days replayed through the API with labels a
day late and the labelling rule drifted.

A model retrained on drifted days is held back by its operator (rolled back, then attached
as a shadow); monitoring reports both models on the same requests; the challenger sensor
promotes the shadow, which the deploy sensor then serves. The old model, attached as a
canary, answers its share of the customers worse and is detached.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from dagster import materialize

from credit_platform.cli.challenger import checked_model_tag
from credit_platform.cli.rollback import roll_back_champion
from credit_platform.cli.simulate import run_simulation
from credit_platform.core.schema import SHADOW_ROW_SUFFIX
from credit_platform.defs.assets.challenger import challenger_decision
from credit_platform.defs.assets.deploy import deployed_bento
from credit_platform.defs.assets.monitoring import MONITORING_CHECKS, model_monitoring
from credit_platform.defs.challenger_sensor import challenger_sensor
from credit_platform.defs.checks import credit_score_model_quality
from credit_platform.defs.jobs import CONTINUOUS_TRAINING_ASSETS
from credit_platform.defs.resources.mlflow_tracking import (
    CHALLENGER_VERDICT_TAG,
    ROLLED_BACK_TAG,
)
from credit_platform.defs.resources.monitoring_policy import MonitoringPolicyResource
from credit_platform.defs.sensors import deploy_sensor
from credit_platform.ingest.synthetic import Drift
from credit_platform_tests.defs import test_closed_loop as closed_loop
from credit_platform_tests.defs.test_closed_loop import (
    CUSTOMERS,
    FIRST_MODEL_DAY,
    POLICY,
    SEED,
    TOKEN,
    _tick,
    _train_config,
)

pytestmark = pytest.mark.slow

loop = closed_loop.loop  # the closed loop's fixture: store, resources, service port, instance

LIVE_START = date(2025, 4, 14)
DRIFT = Drift("label_rule", LIVE_START)  # every live day: the old model is stale
RETRAIN_DAY = date(2025, 4, 18)  # labels of 04-14 .. 04-18 have arrived by 04-19


def _simulate(loop, first: date, last: date) -> list[date]:
    """Replay first..last; monitor each day whose labels arrived; returns those days."""
    monitored = []

    def after_day(report) -> None:
        if report.labels_day is not None:
            result = materialize(
                [model_monitoring, *MONITORING_CHECKS],
                partition_key=report.labels_day.isoformat(),
                resources=loop["resources"],
                instance=loop["instance"],
            )
            assert result.success
            monitored.append(result)

    run_simulation(
        loop["engine"],
        loop["resources"]["prediction_service"].api_url,
        customers=CUSTOMERS,
        days=(last - first).days + 1,
        end=last,
        seed=SEED,
        drift=DRIFT,
        chunk_rows=CUSTOMERS,
        echo=lambda line: None,
        after_day=after_day,
    )
    return monitored


def _role_figures(result) -> dict:
    metadata = result.asset_materializations_for_node("model_monitoring")[0].metadata
    return {key: entry.value for key, entry in metadata.items()}


def _decide(loop, request):
    return materialize(
        [challenger_decision],
        run_config=request.run_config,
        resources=loop["resources"],
        instance=loop["instance"],
        tags=request.tags,
    )


def _deploy(loop, request):
    return materialize(
        [*CONTINUOUS_TRAINING_ASSETS, deployed_bento],
        selection=[deployed_bento],
        partition_key=request.partition_key,
        resources=loop["resources"],
        instance=loop["instance"],
        tags=request.tags,
    )


def test_a_shadow_is_promoted_and_a_canary_detached_on_live_evidence(loop):
    resources, instance = loop["resources"], loop["instance"]
    resources["monitoring_policy"] = MonitoringPolicyResource(
        **POLICY, challenger_margin="0.02", challenger_min_labelled="250"
    )
    tracking = resources["mlflow_tracking"]
    client = resources["prediction_service"].client()

    # The history's model, trained and deployed (a service starts on its free port).
    first = materialize(
        [*CONTINUOUS_TRAINING_ASSETS, credit_score_model_quality],
        partition_key=FIRST_MODEL_DAY.isoformat(),
        resources=resources,
        instance=instance,
        run_config=_train_config(0.5),
    )
    assert first.success
    old_tag = first.output_for_node("credit_score_model")["bento_tag"]
    (start,) = _tick(deploy_sensor, loop).run_requests
    assert _deploy(loop, start).success

    # Drifted live days; a model retrained on them passes its check and would be champion,
    # but its operator holds it back: rolled back, then tried as a shadow.
    _simulate(loop, LIVE_START, RETRAIN_DAY + timedelta(days=1))
    retrained = materialize(
        [*CONTINUOUS_TRAINING_ASSETS, credit_score_model_quality],
        partition_key=RETRAIN_DAY.isoformat(),
        resources=resources,
        instance=instance,
        run_config=_train_config(0.5),
    )
    assert retrained.success
    new_tag = retrained.output_for_node("credit_score_model")["bento_tag"]
    roll_back_champion(tracking)
    assert tracking.champion().tags["bento_tag"] == old_tag
    client.set_challenger(TOKEN, checked_model_tag(tracking, new_tag), "shadow")

    # Three more days: every answer comes from the champion, the shadow scores each request
    # too, and monitoring reports both on the same requests.
    shadow_days = _simulate(loop, RETRAIN_DAY + timedelta(days=2), RETRAIN_DAY + timedelta(days=5))
    assert len(shadow_days) == 3
    for result in shadow_days:
        figures = _role_figures(result)
        assert figures["champion_model_version"] == old_tag
        assert figures["shadow_model_version"] == new_tag
        assert figures["shadow_requests"] == figures["champion_requests"] == CUSTOMERS
        assert figures["shadow_labelled"] == figures["champion_labelled"] == CUSTOMERS
        assert figures["shadow_live_accuracy"] > figures["champion_live_accuracy"] + 0.02
    logged = resources["feature_store"]
    with logged.engine() as engine, engine.connect() as connection:
        from sqlalchemy import func, select

        from credit_platform.core.schema import credit_predictions_api_log as log

        shadow_rows = connection.execute(
            select(func.count()).where(log.c.request_id.like(f"%{SHADOW_ROW_SUFFIX}"))
        ).scalar_one()
    assert shadow_rows == 4 * CUSTOMERS  # each answered request once, from attach on

    # The challenger sensor promotes it; the deploy sensor serves the new champion.
    (promote,) = _tick(challenger_sensor, loop).run_requests
    assert promote.run_key == f"challenger:promote:{new_tag}"
    decided = _decide(loop, promote)
    assert decided.success
    champion = tracking.champion()
    assert champion.tags["bento_tag"] == new_tag
    assert champion.tags[CHALLENGER_VERDICT_TAG].startswith("promoted:")
    assert ROLLED_BACK_TAG not in champion.tags
    assert client.reported_model().challenger is None
    (deploy,) = _tick(deploy_sensor, loop).run_requests
    swapped = _deploy(loop, deploy)
    assert swapped.success
    assert (
        swapped.asset_materializations_for_node("deployed_bento")[0].metadata["how"].value
        == "hot swap"
    )
    assert client.reported_model().tag == new_tag

    # The old model as a canary for a third of the customers: worse on its share, detached.
    client.set_challenger(TOKEN, old_tag, "canary", 0.3)
    canary_days = _simulate(loop, RETRAIN_DAY + timedelta(days=7), RETRAIN_DAY + timedelta(days=9))
    for result in canary_days:
        figures = _role_figures(result)
        assert figures["champion_model_version"] == new_tag
        assert figures["canary_model_version"] == old_tag
        share = figures["canary_requests"] / (
            figures["canary_requests"] + figures["champion_requests"]
        )
        assert share == pytest.approx(0.3, abs=0.08)
    (detach,) = _tick(challenger_sensor, loop).run_requests
    assert detach.run_key == f"challenger:detach:{old_tag}"
    assert _decide(loop, detach).success
    assert client.reported_model().challenger is None
    verdicts = [
        (version.tags or {}).get(CHALLENGER_VERDICT_TAG, "")
        for version in tracking.versions_of_model(old_tag)
    ]
    assert any(verdict.startswith("detached:") for verdict in verdicts)
    assert tracking.champion().tags["bento_tag"] == new_tag
