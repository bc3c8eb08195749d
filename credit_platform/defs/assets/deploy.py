"""`deployed_bento`: the partition's model built into a Bento and served by the live API."""

from datetime import UTC, datetime
from typing import Any

from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue, asset

from credit_platform.core.service_control import DeployError, build_bento, start_service
from credit_platform.defs.partitions import daily_partitions
from credit_platform.defs.resources.mlflow_tracking import MlflowTrackingResource
from credit_platform.defs.resources.prediction_service import PredictionServiceResource

DEPLOYED_BENTO_ASSET = "deployed_bento"
QUALITY_TAG = "quality_check"
# Run tags the deploy sensor sets: the champion's BentoML tag and MLflow version.
MODEL_TAG_RUN_TAG = "credit_platform/model_tag"
MLFLOW_VERSION_RUN_TAG = "credit_platform/mlflow_version"


def quality_verdict(mlflow_tracking: MlflowTrackingResource, model: dict[str, Any]) -> str:
    """The model's check result as recorded on its MLflow model version ("missing" if none)."""
    version = mlflow_tracking.client().get_model_version(
        model["mlflow_model_name"], str(model["mlflow_model_version"])
    )
    return (version.tags or {}).get(QUALITY_TAG, "missing")


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
    group_name="continuous_deployment",
    kinds={"bentoml"},
    description=(
        "Builds the Bento for the partition's model and makes the prediction service serve it "
        "(hot reload, or a start when the service is down). Only a model whose blocking "
        "quality check passed is deployed."
    ),
)
def deployed_bento(
    context: AssetExecutionContext,
    credit_score_model: dict[str, Any],
    mlflow_tracking: MlflowTrackingResource,
    prediction_service: PredictionServiceResource,
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
        )

    bento_tag = build_bento(model_tag)
    client = prediction_service.client()
    before = client.reported_model()
    try:
        if before is not None:
            client.reload(model_tag, prediction_service.admin_token)
            action = "reloaded" if before.tag != model_tag else "already served"
        elif prediction_service.autostart:
            pid = start_service(
                prediction_service.api_url,
                model_tag,
                wait_seconds=prediction_service.start_timeout_seconds,
            )
            context.log.info("started the prediction service (pid %s)", pid)
            action = "started"
        else:
            raise DeployError(f"no prediction service answers at {prediction_service.api_url}")
    except DeployError as error:
        raise Failure(description=str(error), metadata={"model_tag": model_tag}) from error

    served = client.reported_model()
    if served is None or served.tag != model_tag:
        raise Failure(
            description=(
                f"after deploying, {prediction_service.api_url} serves "
                f"{served.tag if served else 'nothing'} instead of {model_tag}"
            )
        )
    context.log.info("%s: %s now serves %s", action, prediction_service.api_url, model_tag)
    return MaterializeResult(
        metadata={
            "served_model_tag": model_tag,
            "bento_tag": bento_tag,
            "served_at": MetadataValue.timestamp(datetime.now(UTC)),
            "action": action,
            "previous_model_tag": before.tag if before else "none (service was down)",
            "api_url": MetadataValue.url(prediction_service.api_url),
            "test_accuracy": MetadataValue.float(float(served.metrics.get("test_accuracy", 0.0))),
            "model_creation_time": served.creation_time.isoformat(),
        }
    )
