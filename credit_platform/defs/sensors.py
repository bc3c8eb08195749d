"""The sensors that train on new labels and deploy the champion.

Train when labels for a new day arrive; deploy when the service does not serve the MLflow
champion (the passing model of the newest data partition).

Both keep their ticks light (one query, one HTTP call with a short timeout), and every
request has a run key naming what changed, so repeated ticks never start a run twice.
"""

import json
import time
from datetime import date, timedelta

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from sqlalchemy import func, select

from credit_platform.core.db import FeatureStoreUnavailable
from credit_platform.core.model_store import ModelNotFound, missing_test_metrics, model_metadata
from credit_platform.core.schema import credit_score
from credit_platform.core.service_client import ReportedModel
from credit_platform.defs.jobs import DEPLOY_ATTEMPTS, continuous_training_job, deploy_job
from credit_platform.defs.partitions import daily_partitions
from credit_platform.defs.resources.feature_store import FeatureStoreResource
from credit_platform.defs.resources.mlflow_tracking import MlflowTrackingResource
from credit_platform.defs.resources.prediction_service import PredictionServiceResource

# One deploy run per model (and per outage): Dagster retries a failed deploy inside that run
# (`deploy_job`'s RetryPolicy, DEPLOY_ATTEMPTS attempts in all); a run that failed anyway is
# not requested again, and the sensor waits for a newer model or a deploy by hand.
DEPLOY_KEY_TAG = "credit_platform/deploy_key"
# More new days than this in one tick means a bulk load: request the newest days only
# and leave the rest to a backfill, instead of flooding the run queue.
MAX_DAYS_PER_TICK = 7


def latest_label_day(feature_store: FeatureStoreResource) -> date | None:
    with feature_store.engine() as engine, engine.connect() as connection:
        latest = connection.execute(select(func.max(credit_score.c.date))).scalar_one()
    if isinstance(latest, str):  # SQLite without type affinity on an aggregate
        latest = date.fromisoformat(latest)
    return latest


def new_label_days(latest: date, cursor: str | None, last_partition: str | None) -> list[date]:
    """Days whose partitions to request: after the cursor up to the newest label day,
    capped at MAX_DAYS_PER_TICK and at the newest existing partition."""
    if last_partition is not None:
        latest = min(latest, date.fromisoformat(last_partition))
    first = date.fromisoformat(cursor) + timedelta(days=1) if cursor else latest
    first = max(first, latest - timedelta(days=MAX_DAYS_PER_TICK - 1))
    return [first + timedelta(days=n) for n in range((latest - first).days + 1)]


def _already_trained(context: SensorEvaluationContext, day: date) -> bool:
    """Whether `day`'s model partition exists (a first tick after the demo needs no run)."""
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(
            asset_key=AssetKey("credit_score_model"), asset_partitions=[day.isoformat()]
        ),
        limit=1,
    )
    return bool(records.records)


@sensor(
    job=continuous_training_job,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Requests the continuous-training partition of each new label day "
    "(cursor: the newest credit_score.date seen).",
)
def new_data_sensor(
    context: SensorEvaluationContext, feature_store: FeatureStoreResource
) -> SensorResult | SkipReason:
    try:
        latest = latest_label_day(feature_store)
    except FeatureStoreUnavailable as error:
        return SkipReason(f"feature store unavailable: {error}")
    if latest is None:
        return SkipReason("credit_score has no labels yet")
    if context.cursor and latest <= date.fromisoformat(context.cursor):
        return SkipReason(f"no labels after {context.cursor}")
    if context.cursor is None and _already_trained(context, latest):
        return SensorResult(
            skip_reason=SkipReason(f"the newest label day {latest} is already trained"),
            cursor=latest.isoformat(),
        )
    partitions = daily_partitions()
    last = partitions.get_last_partition_key()
    days = [
        day
        for day in new_label_days(latest, context.cursor, last)
        if day.isoformat() >= partitions.start.strftime("%Y-%m-%d")
    ]
    if not days:
        return SkipReason(f"labels up to {latest} are outside the partitions (last {last})")
    return SensorResult(
        run_requests=[
            RunRequest(run_key=f"ct:{day.isoformat()}", partition_key=day.isoformat())
            for day in days
        ],
        cursor=latest.isoformat(),
    )


def champion_problem(tags: dict[str, str], version: str) -> str | None:
    """Why the registry's champion cannot be deployed (None when it can): a missing tag, a
    model absent from the BentoML store, or a model saved without test metrics."""
    candidate, partition = tags.get("bento_tag"), tags.get("partition")
    if not candidate or not partition:
        return f"champion version {version} lacks bento_tag/partition tags"
    try:
        metadata = model_metadata(candidate)
    except ModelNotFound:
        return (
            f"champion version {version} names {candidate}, which is not in the BentoML "
            "store; restore it or roll the champion back (`credit-platform rollback`)"
        )
    missing = missing_test_metrics(metadata)
    if missing:
        return (
            f"champion {candidate} (version {version}) reports no {', '.join(missing)}: it was "
            "saved before models were scored on test rows; train its partition again or roll "
            "the champion back"
        )
    return None


def deploy_decision(champion_tag: str, served: ReportedModel | None) -> tuple[bool, str]:
    """Deploy when nothing is served or the service serves anything but the champion."""
    if served is None:
        return True, "the prediction service is down or serves no model"
    if served.tag == champion_tag:
        return False, f"the champion {champion_tag} is already served"
    return True, f"the service serves {served.tag}, not the champion {champion_tag}"


@sensor(
    job=deploy_job,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Requests deployed_bento for the MLflow champion (the passing model of the "
    "newest data partition) when the API serves another model at /metadata, or is down; one "
    f"run per model, which Dagster retries ({DEPLOY_ATTEMPTS} attempts in all).",
)
def deploy_sensor(
    context: SensorEvaluationContext,
    mlflow_tracking: MlflowTrackingResource,
    prediction_service: PredictionServiceResource,
) -> SensorResult | SkipReason:
    champion = mlflow_tracking.champion()
    if champion is None:
        return SkipReason(
            "the MLflow registry has no champion: no model has passed its quality check yet"
        )
    tags = champion.tags or {}
    problem = champion_problem(tags, str(champion.version))
    if problem:
        return SkipReason(problem)
    candidate, partition = tags["bento_tag"], tags["partition"]
    served = prediction_service.client().reported_model()
    state = json.loads(context.cursor) if context.cursor else {}
    # While the service stays down, every tick carries the same key: one restart per outage.
    outage = state.get("outage") if served is None else None
    if served is None and outage is None:
        outage = str(int(time.time()))
    cursor = json.dumps({"outage": outage} if outage else {})
    should_deploy, reason = deploy_decision(candidate, served)
    if not should_deploy:
        return SensorResult(skip_reason=SkipReason(reason), cursor=cursor)
    # Dagster launches a run key once: a model deployed before by this sensor (served again
    # after a rollback) gets a key of its own for each return.
    returns = _successful_deploys(context, candidate)
    deploy_key = (
        f"deploy:{candidate}"
        + (f":redeploy:{returns}" if returns else "")
        + (f":outage:{outage}" if served is None else "")
    )
    failed = _failed_deploys(context, deploy_key)
    if failed:
        return SensorResult(
            skip_reason=SkipReason(
                f"{reason}, but its deploy run failed after {DEPLOY_ATTEMPTS} attempts: see "
                f"the failed {deploy_job.name} runs tagged {DEPLOY_KEY_TAG}={deploy_key}; a "
                "newer model, or a deploy started by hand, goes on"
            ),
            cursor=cursor,
        )
    context.log.info(reason)
    return SensorResult(
        run_requests=[
            RunRequest(
                run_key=deploy_key,
                partition_key=partition,
                tags={
                    "credit_platform/model_tag": candidate,
                    "credit_platform/mlflow_version": str(champion.version),
                    "credit_platform/reason": reason,
                    DEPLOY_KEY_TAG: deploy_key,
                },
            )
        ],
        cursor=cursor,
    )


def _successful_deploys(context: SensorEvaluationContext, model_tag: str) -> int:
    """How many deploy runs named `model_tag` (the sensor's and the rollback's) succeeded."""
    return context.instance.get_runs_count(
        filters=RunsFilter(
            job_name=deploy_job.name,
            tags={"credit_platform/model_tag": model_tag},
            statuses=[DagsterRunStatus.SUCCESS],
        )
    )


def _failed_deploys(context: SensorEvaluationContext, deploy_key: str) -> int:
    """How many deploy runs for this key failed (each after its retries) or were cancelled."""
    return context.instance.get_runs_count(
        filters=RunsFilter(
            tags={DEPLOY_KEY_TAG: deploy_key},
            statuses=[DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED],
        )
    )
