"""The `prune_bentoml_store` op: retention on demand (job `prune_model_store`).

The deploy applies retention after each success; an operator runs this job to apply it
at another time, with another CREDIT_RETENTION_KEEP_LAST, or as a dry run that only
reports. It needs the service to answer: without its `/metadata` nobody can tell which
shadow or canary it serves, and deleting one of those would break it.
"""

from typing import Any

from dagster import AssetKey, Config, Failure, OpExecutionContext, op
from pydantic import Field

from credit_platform.defs.assets.deploy import DEPLOYED_BENTO_ASSET
from credit_platform.defs.resources.mlflow_tracking import MlflowTrackingResource
from credit_platform.defs.resources.model_retention import ModelRetentionResource
from credit_platform.defs.resources.prediction_service import PredictionServiceResource
from credit_platform.defs.retention import prune_around_deploys, retention_metadata


class PruneConfig(Config):
    dry_run: bool = Field(
        default=False, description="Only report what would be deleted; delete nothing."
    )


@op(
    description="Deletes the models and Bentos of the BentoML store that retention does not "
    "keep: kept are the MLflow champion, the previous champion, what the service serves "
    "(champion, shadow, canary) and runs, and the newest CREDIT_RETENTION_KEEP_LAST of each.",
)
def prune_bentoml_store(
    context: OpExecutionContext,
    config: PruneConfig,
    mlflow_tracking: MlflowTrackingResource,
    prediction_service: PredictionServiceResource,
    model_retention: ModelRetentionResource,
) -> dict[str, Any]:
    served = prediction_service.client().reported_model()
    if served is None:
        raise Failure(
            description=(
                f"the prediction service at {prediction_service.api_url} does not answer "
                "/metadata: what it serves (a shadow or canary too) is unknown, so nothing "
                "was deleted"
            )
        )
    report = prune_around_deploys(
        context.instance,
        AssetKey(DEPLOYED_BENTO_ASSET),
        mlflow_tracking,
        served,
        keep_last=model_retention.count,
        dry_run=config.dry_run,
    )
    metadata = retention_metadata(report)
    if report.failed:
        raise Failure(
            description=f"could not delete {', '.join(sorted(report.failed))}",
            metadata=metadata,
        )
    context.add_output_metadata(metadata)
    return {
        "deleted_models": report.deleted_models.deleted,
        "deleted_bentos": report.deleted_bentos.deleted,
        "kept_models": report.models.kept,
        "kept_bentos": report.bentos.kept,
        "would_delete": report.models.deleted + report.bentos.deleted if config.dry_run else [],
    }
