"""`deployed_bento`: the service's Bento built and running, serving the partition's model.

The Bento is the service code and its environment (versioned by a digest of what it packs);
the model comes from the BentoML model store. A new model of unchanged code is hot-swapped
into the running Bento; new code needs a new service process on the new Bento.

Replicas behind a balancer follow the desired-model record that the reload writes in the
feature store; the run waits until every live replica reports the model, and fails naming
those that do not within `PredictionServiceResource.replicas_timeout_seconds`."""

from datetime import UTC, datetime
from typing import Any

from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue, asset
from sqlalchemy.exc import SQLAlchemyError

from credit_platform.core.bento import BentoBuildError, build_bento
from credit_platform.core.db import FeatureStoreUnavailable
from credit_platform.core.local_service import (
    api_port,
    start_service,
    started_here,
    stop_service,
)
from credit_platform.core.model_record import ReplicasBehind, wait_for_replicas
from credit_platform.core.service_client import ReportedModel, ServiceError
from credit_platform.defs.catalog import ASSET_OWNERS
from credit_platform.defs.partitions import daily_partitions
from credit_platform.defs.resources.feature_store import FeatureStoreResource
from credit_platform.defs.resources.mlflow_tracking import QUALITY_TAG, MlflowTrackingResource
from credit_platform.defs.resources.model_retention import ModelRetentionResource
from credit_platform.defs.resources.prediction_service import PredictionServiceResource
from credit_platform.defs.retention import retain_after_deploy

DEPLOYED_BENTO_ASSET = "deployed_bento"
# Run tags the deploy sensor sets: the champion's BentoML tag and MLflow version.
MODEL_TAG_RUN_TAG = "credit_platform/model_tag"
MLFLOW_VERSION_RUN_TAG = "credit_platform/mlflow_version"

# How the model came to serve (the asset's "how" metadata).
START, RESTART, HOT_SWAP, OUTDATED_BENTO = "start", "restart", "hot swap", "hot swap (old Bento)"


def quality_verdict(mlflow_tracking: MlflowTrackingResource, model: dict[str, Any]) -> str:
    """The model's check result as recorded on its MLflow model version ("missing" if none)."""
    version = mlflow_tracking.client().get_model_version(
        model["mlflow_model_name"], str(model["mlflow_model_version"])
    )
    return (version.tags or {}).get(QUALITY_TAG, "missing")


def rollout(
    running: ReportedModel | None, built_bento: str, *, can_start: bool, can_restart: bool
) -> str:
    """How to make the built Bento serve the model: start a service when none answers; hot
    swap the model when the running service runs this very Bento; restart on the new Bento
    when its code changed and this machine owns the process; otherwise hot swap the model
    into the old Bento and say that the service must be restarted on the new one."""
    if running is None:
        if not can_start:
            raise ServiceError("no prediction service answers and autostart is off")
        return START
    if running.bento_tag == built_bento:
        return HOT_SWAP
    return RESTART if can_restart else OUTDATED_BENTO


def model_to_deploy(run_tags: dict[str, str], partition_model: dict[str, Any]) -> dict[str, Any]:
    """The model a run deploys: the one the deploy sensor named (the champion, which after a
    rollback may be an older version of the partition), else the partition's latest."""
    tag, version = run_tags.get(MODEL_TAG_RUN_TAG), run_tags.get(MLFLOW_VERSION_RUN_TAG)
    if not tag or not version:
        return partition_model
    return {
        "bento_tag": tag,
        "mlflow_model_name": partition_model["mlflow_model_name"],
        "mlflow_model_version": version,
    }


@asset(
    name=DEPLOYED_BENTO_ASSET,
    partitions_def=daily_partitions(),
    owners=ASSET_OWNERS,
    group_name="continuous_deployment",
    kinds={"bentoml"},
    description=(
        "Builds the prediction service's Bento (a no-op when its code is unchanged) and makes "
        "it serve the partition's model: a hot swap into the running Bento, a start when no "
        "service answers, a restart on the new Bento when the service code changed. Only a "
        "model whose blocking quality check passed is deployed."
    ),
)
def deployed_bento(
    context: AssetExecutionContext,
    credit_score_model: dict[str, Any],
    mlflow_tracking: MlflowTrackingResource,
    prediction_service: PredictionServiceResource,
    model_retention: ModelRetentionResource,
    feature_store: FeatureStoreResource,
) -> MaterializeResult:
    model = model_to_deploy(context.run.tags, credit_score_model)
    model_tag = model["bento_tag"]
    verdict = quality_verdict(mlflow_tracking, model)
    if verdict != "passed":
        raise Failure(
            description=(
                f"not deploying {model_tag} (partition {context.partition_key}): its quality "
                f"check is {verdict!r}, not 'passed'"
            ),
            metadata={"model_tag": model_tag, "quality_check": verdict},
            allow_retries=False,  # no retry changes a check result: fail at once
        )

    api_url = prediction_service.api_url
    client = prediction_service.client()
    try:
        built = build_bento()
        before = client.reported_model()
        how = rollout(
            before,
            built,
            can_start=prediction_service.autostart,
            can_restart=prediction_service.autostart and started_here(api_url),
        )
        if how in (HOT_SWAP, OUTDATED_BENTO):
            client.reload(model_tag, prediction_service.admin_token)
        else:
            if how == RESTART:
                stop_service(api_port(api_url))
            pid = start_service(
                api_url, built, model_tag, wait_seconds=prediction_service.start_timeout_seconds
            )
            context.log.info("%s: Bento %s runs as pid %s", how, built, pid)
    except (BentoBuildError, ServiceError) as error:
        raise Failure(description=str(error), metadata={"model_tag": model_tag}) from error

    replicas = replicas_following(context, feature_store, prediction_service, model_tag)
    served = client.reported_model()
    if served is None or served.tag != model_tag:
        raise Failure(
            description=(
                f"after deploying, {api_url} serves "
                f"{served.tag if served else 'nothing'} instead of {model_tag}"
            )
        )
    metadata: dict[str, Any] = {
        "bento_tag": served.bento_tag or "none (the service runs from source)",
        "model_tag": model_tag,
        "partition": served.partition or context.partition_key,
        "served_at": MetadataValue.timestamp(datetime.now(UTC)),
        "how": how,
        "previous_model_tag": before.tag if before else "none (no service answered)",
        "previous_bento_tag": (before.bento_tag or "none") if before else "none",
        "built_bento_tag": built,
        "api_url": MetadataValue.url(api_url),
        "test_accuracy": MetadataValue.float(float(served.metrics.get("test_accuracy", 0.0))),
        "model_creation_time": served.creation_time.isoformat(),
        "replicas": MetadataValue.json([report.as_dict() for report in replicas]),
        "live_replicas": sum(report.live for report in replicas),
    }
    if served.bento_tag != built:
        note = (
            f"{api_url} still runs Bento {served.bento_tag or '(from source)'}, not the newly "
            f"built {built}: restart it on the new Bento (in the stack: `docker compose up -d "
            "--force-recreate api`, whose serve command runs the newest built code)"
        )
        metadata["action_needed"] = note
        context.log.warning(note)
    context.log.info("%s: %s serves %s in Bento %s", how, api_url, model_tag, served.bento_tag)
    metadata.update(retain_after_deploy(context, mlflow_tracking, model_retention, served, before))
    return MaterializeResult(metadata=metadata)


def replicas_following(
    context: AssetExecutionContext,
    feature_store: FeatureStoreResource,
    prediction_service: PredictionServiceResource,
    model_tag: str,
):
    """Every replica's report once each live one serves `model_tag` (they follow the record
    the reload wrote); a Failure naming those that did not within the timeout."""
    timeout = prediction_service.replicas_timeout_seconds
    try:
        with feature_store.engine() as engine:
            reports = wait_for_replicas(engine, model_tag, timeout)
    except ReplicasBehind as error:
        raise Failure(
            description=str(error),
            metadata={
                "model_tag": model_tag,
                "replicas": MetadataValue.json([report.as_dict() for report in error.reports]),
            },
        ) from error
    except (FeatureStoreUnavailable, SQLAlchemyError) as error:
        raise Failure(
            description=f"cannot read the replicas' reports in {feature_store.display_url}: "
            f"{error}",
            metadata={"model_tag": model_tag},
        ) from error
    for report in reports:
        context.log.info(
            "replica %s (%s): %s%s",
            report.state.replica_id,
            "live" if report.live else "silent",
            report.state.model_tag,
            f", {report.state.problem}" if report.state.problem else "",
        )
    return reports
