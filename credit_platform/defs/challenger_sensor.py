"""`challenger_sensor`: decides a shadow or canary challenger by live evidence.

On each tick it asks the service which challenger it runs, reads the live accuracy of the
challenger and of the champion from `credit_model_monitoring` on the days both have
labelled predictions (the shadow scores the very requests the champion answers; a canary
answers its share of the customers on the same days), and requests `challenger_decision`
with "promote" when the challenger is better by more than the margin and "detach" when it
is worse by more than the margin, each with enough labels on both; otherwise it says why it
waits. The run key names the challenger and the verdict, so a verdict is carried out once.
"""

from dagster import (
    DefaultSensorStatus,
    RunConfig,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from credit_platform.defs.assets.challenger import (
    CHALLENGER_DECISION_ASSET,
    DETACH,
    PROMOTE,
    ChallengerDecisionConfig,
)
from credit_platform.defs.jobs import challenger_decision_job
from credit_platform.defs.monitoring_sensors import REASON_TAG, TRIGGER_TAG, compare_or_wait
from credit_platform.defs.resources.feature_store import FeatureStoreResource
from credit_platform.defs.resources.monitoring_policy import MonitoringPolicyResource
from credit_platform.defs.resources.prediction_service import PredictionServiceResource


@sensor(
    job=challenger_decision_job,
    minimum_interval_seconds=300,
    default_status=DefaultSensorStatus.RUNNING,
    description="Promotes the service's shadow or canary when its live accuracy beats the "
    "champion's by the margin on enough labelled predictions, and detaches it when it is "
    "worse by the margin.",
)
def challenger_sensor(
    context: SensorEvaluationContext,
    feature_store: FeatureStoreResource,
    prediction_service: PredictionServiceResource,
    monitoring_policy: MonitoringPolicyResource,
) -> SensorResult | SkipReason:
    reported = prediction_service.client().reported_model()
    if reported is None:
        return SkipReason(f"no prediction service answers at {prediction_service.api_url}")
    if not reported.challenger:
        return SkipReason("the service runs no shadow or canary")
    challenger = str(reported.challenger["model_version"])
    role = str(reported.challenger.get("role"))
    champion = reported.tag
    thresholds = monitoring_policy.policy
    comparison = compare_or_wait(
        feature_store, challenger, champion, thresholds.challenger_min_labelled
    )
    if isinstance(comparison, SkipReason):
        return SkipReason(f"{role} {challenger} vs champion {champion}: {comparison.skip_message}")
    assert comparison.new_accuracy is not None and comparison.old_accuracy is not None
    margin = thresholds.challenger_margin
    gap = comparison.new_accuracy - comparison.old_accuracy
    if abs(gap) <= margin:
        return SkipReason(
            f"{role} {challenger}: live accuracy {comparison.new_accuracy:.4f} vs the "
            f"champion's {comparison.old_accuracy:.4f}: within the margin {margin}, waiting"
        )
    decision = PROMOTE if gap > 0 else DETACH
    config = ChallengerDecisionConfig(
        decision=decision,
        challenger=challenger,
        role=role,
        champion=champion,
        challenger_accuracy=comparison.new_accuracy,
        champion_accuracy=comparison.old_accuracy,
        challenger_labelled=comparison.new_labelled,
        champion_labelled=comparison.old_labelled,
        days=[day.isoformat() for day in comparison.days],
        margin=margin,
    )
    context.log.info("%s %s: live accuracy gap %+.4f", decision, challenger, gap)
    return SensorResult(
        run_requests=[
            RunRequest(
                run_key=f"challenger:{decision}:{challenger}",
                run_config=RunConfig(ops={CHALLENGER_DECISION_ASSET: config}),
                tags={
                    REASON_TAG: f"{decision}: live accuracy gap {gap:+.4f}",
                    TRIGGER_TAG: "challenger_sensor",
                },
            )
        ]
    )
