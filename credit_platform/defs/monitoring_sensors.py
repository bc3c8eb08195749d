"""Sensors that close the loop from monitoring back to training and deployment.

`retrain_sensor`: a failed drift or live-accuracy check of the served model requests the
continuous-training partition of the newest labelled day (run key per day and reason), at
most once per cooldown. `rollback_sensor`: when the newly deployed model's live accuracy,
on the days both it and its predecessor answered with enough labels, is worse than the
predecessor's beyond a tolerance, the model is marked in MLflow (never elected again) and
the predecessor is deployed again. Both ticks are light: the instance's records, one query.
"""

import json
import time
from dataclasses import dataclass
from datetime import date

import pandas as pd
from dagster import (
    AssetCheckKey,
    AssetKey,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from credit_platform.core.db import FeatureStoreUnavailable
from credit_platform.core.monitoring import LABELLED, LIVE_ACCURACY
from credit_platform.core.monitoring_store import live_accuracy_by_day
from credit_platform.core.settings import MODEL_NAME
from credit_platform.defs.assets.deploy import (
    DEPLOYED_BENTO_ASSET,
    MLFLOW_VERSION_RUN_TAG,
    MODEL_TAG_RUN_TAG,
)
from credit_platform.defs.assets.monitoring import (
    DRIFT_CHECK,
    FAILED_VERSIONS,
    LIVE_ACCURACY_CHECK,
    MODEL_MONITORING_ASSET,
)
from credit_platform.defs.jobs import continuous_training_job, deploy_job
from credit_platform.defs.partitions import daily_partitions
from credit_platform.defs.resources.feature_store import FeatureStoreResource
from credit_platform.defs.resources.mlflow_tracking import (
    BENTO_TAG,
    PARTITION_TAG,
    MlflowTrackingResource,
    eligible,
)
from credit_platform.defs.resources.monitoring_policy import MonitoringPolicyResource
from credit_platform.defs.sensors import latest_label_day

REASON_TAG = "credit_platform/reason"
TRIGGER_TAG = "credit_platform/trigger"
# Check executions looked at per tick (the newest partition's verdict is among them).
CHECK_HISTORY = 20
# Statuses of a finished check execution (AssetCheckExecutionRecordStatus values).
SUCCEEDED, FAILED = "SUCCEEDED", "FAILED"
CHECK_REASONS = {DRIFT_CHECK: "drift", LIVE_ACCURACY_CHECK: "live_accuracy"}


@dataclass(frozen=True)
class FailedCheck:
    check: str
    partition: str
    description: str
    versions: tuple[str, ...]


def current_failures(context: SensorEvaluationContext) -> list[FailedCheck]:
    """Each monitoring check whose verdict on its newest evaluated day is a failure."""
    failures = []
    for check_name in CHECK_REASONS:
        key = AssetCheckKey(AssetKey(MODEL_MONITORING_ASSET), check_name)
        records = context.instance.event_log_storage.get_asset_check_execution_history(
            key, limit=CHECK_HISTORY
        )
        finished = [
            record
            for record in records
            if record.status.value in (SUCCEEDED, FAILED) and record.event is not None
        ]
        if not finished:
            continue
        # the newest day; on that day the latest execution (records come newest first)
        newest = max(finished, key=lambda record: record.partition or "")
        if newest.status.value != FAILED:
            continue
        evaluation = newest.event.dagster_event.event_specific_data
        versions = evaluation.metadata.get(FAILED_VERSIONS)
        named = str(versions.value) if versions is not None else ""
        failures.append(
            FailedCheck(
                check=check_name,
                partition=newest.partition or "",
                description=evaluation.description or "",
                versions=tuple(v.strip() for v in named.split(",") if v.strip()),
            )
        )
    return failures


def cooldown_left(cursor: str | None, cooldown_seconds: int, now: float) -> float:
    """Seconds until the retrain sensor may request again (0 when it may now)."""
    state = json.loads(cursor) if cursor else {}
    last = state.get("last_request")
    if last is None:
        return 0.0
    return max(0.0, float(last) + cooldown_seconds - now)


@sensor(
    job=continuous_training_job,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Requests continuous training of the newest labelled day when the served "
    "model's drift or live-accuracy check failed on its newest monitored day (run key "
    "retrain:<day>:<reason>), at most once per cooldown.",
)
def retrain_sensor(
    context: SensorEvaluationContext,
    feature_store: FeatureStoreResource,
    mlflow_tracking: MlflowTrackingResource,
    monitoring_policy: MonitoringPolicyResource,
) -> SensorResult | SkipReason:
    failures = current_failures(context)
    champion = mlflow_tracking.champion()
    served = (champion.tags or {}).get(BENTO_TAG) if champion is not None else None
    if served is not None:
        # A failure of a model that no longer is the champion was answered already.
        failures = [f for f in failures if not f.versions or served in f.versions]
    if not failures:
        return SkipReason("no drift or live-accuracy check of the served model failed")
    now = time.time()
    cooldown = monitoring_policy.policy.retrain_cooldown_seconds
    wait = cooldown_left(context.cursor, cooldown, now)
    if wait > 0:
        return SkipReason(
            f"{', '.join(f.check for f in failures)} failed, but a retraining was requested "
            f"less than {cooldown} s ago: {wait:.0f} s of cooldown left"
        )
    try:
        latest = latest_label_day(feature_store)
    except FeatureStoreUnavailable as error:
        return SkipReason(f"feature store unavailable: {error}")
    if latest is None:
        return SkipReason("credit_score has no labels to retrain on")
    last_partition = daily_partitions().get_last_partition_key()
    if last_partition is not None and latest.isoformat() > last_partition:
        latest = date.fromisoformat(last_partition)
    reason = "+".join(CHECK_REASONS[f.check] for f in failures)
    description = "; ".join(f"{f.check} failed on {f.partition}: {f.description}" for f in failures)
    context.log.info("retraining %s: %s", latest, description)
    return SensorResult(
        run_requests=[
            RunRequest(
                run_key=f"retrain:{latest.isoformat()}:{reason}",
                partition_key=latest.isoformat(),
                tags={REASON_TAG: description[:4000], TRIGGER_TAG: "retrain_sensor"},
            )
        ],
        cursor=json.dumps({"last_request": now}),
    )


@dataclass(frozen=True)
class Comparison:
    """Live accuracy of a new model and its predecessor over the days both answered."""

    days: tuple[date, ...]
    new_labelled: int
    new_accuracy: float | None
    old_labelled: int
    old_accuracy: float | None


def compare_on_shared_days(frame: pd.DataFrame, new: str, old: str) -> Comparison:
    """Labelled-weighted live accuracy of `new` and `old` over the days on which both have
    labelled predictions (rows: day, model_version, labelled, live_accuracy)."""
    known = frame[(frame[LABELLED] > 0) & frame[LIVE_ACCURACY].notna()]
    per_version = {
        version: known[known["model_version"] == version].set_index("day") for version in (new, old)
    }
    days = sorted(set(per_version[new].index) & set(per_version[old].index))

    def weighted(version: str) -> tuple[int, float | None]:
        rows = per_version[version].loc[days] if days else per_version[version].iloc[0:0]
        labelled = int(rows[LABELLED].sum())
        if labelled == 0:
            return 0, None
        return labelled, float((rows[LABELLED] * rows[LIVE_ACCURACY]).sum() / labelled)

    new_labelled, new_accuracy = weighted(new)
    old_labelled, old_accuracy = weighted(old)
    return Comparison(tuple(days), new_labelled, new_accuracy, old_labelled, old_accuracy)


def compare_or_wait(
    feature_store: FeatureStoreResource, new: str, old: str, minimum: int
) -> Comparison | SkipReason:
    """Live accuracy of `new` and `old` on the days both answered, or why a decision must
    wait (the store is down, or either has fewer than `minimum` labelled predictions)."""
    try:
        with feature_store.engine() as engine:
            frame = live_accuracy_by_day(engine, [new, old])
    except FeatureStoreUnavailable as error:
        return SkipReason(f"feature store unavailable: {error}")
    comparison = compare_on_shared_days(frame, new, old)
    if comparison.new_labelled < minimum or comparison.old_labelled < minimum:
        return SkipReason(
            f"not enough labelled predictions on the days both {new} and {old} answered "
            f"({len(comparison.days)} day(s): {comparison.new_labelled} and "
            f"{comparison.old_labelled}, at least {minimum} each)"
        )
    return comparison


# deployed_bento records read back to find the model the latest one replaced.
DEPLOY_HISTORY = 20


def _is_model_tag(value: str | None) -> bool:
    return bool(value) and str(value).startswith(f"{MODEL_NAME}:")


def latest_deploy(context: SensorEvaluationContext) -> tuple[str, str | None, str] | None:
    """(model tag, predecessor's model tag or None, why there is none) of the newest
    deployed_bento materialization. The predecessor is the model the service answered with
    when the deploy began; when no service answered then (the deploy started it after an
    outage), it is the model the deployment before this one put in service."""
    records = context.instance.fetch_materializations(
        AssetKey(DEPLOYED_BENTO_ASSET), limit=DEPLOY_HISTORY
    ).records
    tags = [record.asset_materialization.metadata.get("model_tag") for record in records]
    tags = [str(tag.value) if tag is not None else None for tag in tags]
    if not records or tags[0] is None:
        return None
    new = tags[0]
    replaced = records[0].asset_materialization.metadata.get("previous_model_tag")
    replaced_tag = str(replaced.value) if replaced is not None else None
    if _is_model_tag(replaced_tag):
        if replaced_tag == new:
            return new, None, f"its deploy served {new} again (it replaced itself)"
        return new, replaced_tag, ""
    earlier = next((tag for tag in tags[1:] if _is_model_tag(tag) and tag != new), None)
    if earlier is not None:
        return new, earlier, ""
    return (
        new,
        None,
        (
            "it is the first model deployed on this instance (no service answered before its "
            "deploy, and no earlier deployment of another model is recorded)"
        ),
    )


@sensor(
    job=deploy_job,
    minimum_interval_seconds=300,
    default_status=DefaultSensorStatus.RUNNING,
    description="Redeploys the predecessor when the newly deployed model's live accuracy on "
    "the days both answered is worse than the predecessor's beyond the rollback tolerance "
    "(enough labels on both), and marks the new model in MLflow so it is never elected again.",
)
def rollback_sensor(
    context: SensorEvaluationContext,
    feature_store: FeatureStoreResource,
    mlflow_tracking: MlflowTrackingResource,
    monitoring_policy: MonitoringPolicyResource,
) -> SensorResult | SkipReason:
    deployed = latest_deploy(context)
    if deployed is None:
        return SkipReason("no deployment recorded yet")
    new, old, why_none = deployed
    if old is None:
        return SkipReason(f"{new} has no predecessor to compare with: {why_none}")
    thresholds = monitoring_policy.policy
    comparison = compare_or_wait(feature_store, new, old, thresholds.rollback_min_labelled)
    if isinstance(comparison, SkipReason):
        return comparison
    assert comparison.new_accuracy is not None and comparison.old_accuracy is not None
    tolerance = thresholds.rollback_tolerance
    summary = (
        f"{new}: live accuracy {comparison.new_accuracy:.4f} ({comparison.new_labelled} "
        f"labelled) vs its predecessor {old}: {comparison.old_accuracy:.4f} "
        f"({comparison.old_labelled}) on {', '.join(d.isoformat() for d in comparison.days)}"
    )
    gap = comparison.new_accuracy - comparison.old_accuracy
    if gap >= 0:
        return SkipReason(f"{summary}: not worse than its predecessor ({gap:+.4f}), kept")
    if comparison.new_accuracy + tolerance >= comparison.old_accuracy:
        return SkipReason(f"{summary}: worse by {-gap:.4f}, within the tolerance {tolerance}")
    predecessors = [v for v in mlflow_tracking.versions_of_model(old) if eligible(v)]
    if not predecessors:
        return SkipReason(
            f"{summary}: worse beyond {tolerance}, but {old} is no longer an eligible "
            "registered version (failed, rolled back or marked): roll back by hand"
        )
    predecessor = max(predecessors, key=lambda version: int(version.version))
    marked, champion = mlflow_tracking.mark_regressed(new, f"{summary}; tolerance {tolerance}")
    context.log.warning(
        "rolling back: %s; marked MLflow version(s) %s; champion now %s",
        summary,
        ", ".join(str(v.version) for v in marked) or "none",
        champion.version if champion is not None else "none",
    )
    return SensorResult(
        run_requests=[
            RunRequest(
                run_key=f"rollback:{new}",
                partition_key=(predecessor.tags or {})[PARTITION_TAG],
                tags={
                    MODEL_TAG_RUN_TAG: old,
                    MLFLOW_VERSION_RUN_TAG: str(predecessor.version),
                    REASON_TAG: summary[:4000],
                    TRIGGER_TAG: "rollback_sensor",
                },
            )
        ]
    )
