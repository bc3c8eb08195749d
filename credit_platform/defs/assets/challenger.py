"""`challenger_decision`: what live evidence decided for the service's shadow or canary.

The challenger sensor compares the challenger's live accuracy with the champion's on the
days both answered (`model_monitoring`'s rows) and requests this asset with its verdict.
Materializing it carries the verdict out and records it: the challenger is detached from the
service either way; a promoted one becomes the MLflow champion through the champion policy
(the displaced champion is marked for a live regression and the challenger ranks at its
partition), after which the deploy sensor serves it. The evidence goes to the MLflow model
versions' tags and to this asset's metadata, so each decision can be traced from the UI.
"""

from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from credit_platform.core.service_client import ServiceError
from credit_platform.defs.assets.monitoring import MODEL_MONITORING_ASSET
from credit_platform.defs.catalog import ASSET_OWNERS
from credit_platform.defs.resources.mlflow_tracking import BENTO_TAG, MlflowTrackingResource
from credit_platform.defs.resources.prediction_service import PredictionServiceResource

CHALLENGER_DECISION_ASSET = "challenger_decision"
PROMOTE, DETACH = "promote", "detach"


class ChallengerDecisionConfig(Config):
    """The sensor's verdict and the evidence behind it. Every entry has a default so the UI's
    Materialize button opens a launchable run; without a verdict that run is refused with the
    reason (the challenger sensor fills this config)."""

    decision: str = Field(default="", description="'promote' or 'detach'")
    challenger: str = Field(default="", description="the challenger's model tag")
    role: str = Field(default="", description="'shadow' or 'canary'")
    champion: str = Field(default="", description="the champion's model tag at the decision")
    challenger_accuracy: float = 0.0
    champion_accuracy: float = 0.0
    challenger_labelled: int = 0
    champion_labelled: int = 0
    days: list[str] = Field(default_factory=list)
    margin: float = 0.0


def refusal(config: ChallengerDecisionConfig) -> str | None:
    """Why this config cannot be carried out (one line), or None when it can."""
    if not config.decision and not config.challenger:
        return (
            "no verdict to carry out: the challenger sensor launches this asset with its "
            f"verdict; to decide by hand give decision ({PROMOTE!r} or {DETACH!r}) and "
            "challenger (the shadow's or canary's model tag)"
        )
    if config.decision not in (PROMOTE, DETACH):
        return f"decision must be {PROMOTE!r} or {DETACH!r}, not {config.decision!r}"
    if not config.challenger:
        return f"{config.decision} of which challenger? give its model tag (challenger)"
    return None


def evidence_text(config: ChallengerDecisionConfig) -> str:
    return (
        f"{config.role} {config.challenger}: live accuracy {config.challenger_accuracy:.4f} "
        f"({config.challenger_labelled} labelled) vs champion {config.champion}: "
        f"{config.champion_accuracy:.4f} ({config.champion_labelled}) on "
        f"{', '.join(config.days)}; margin {config.margin}"
    )


@asset(
    name=CHALLENGER_DECISION_ASSET,
    owners=ASSET_OWNERS,
    group_name="monitoring",
    kinds={"mlflow", "bentoml"},
    # Decided on model_monitoring's rows (every partition), read by the challenger sensor.
    deps=[AssetDep(MODEL_MONITORING_ASSET, partition_mapping=AllPartitionMapping())],
    description=(
        "Carries out and records the challenger sensor's verdict on the service's shadow or "
        "canary: promote it to champion (the deploy sensor then serves it) or detach it."
    ),
)
def challenger_decision(
    context: AssetExecutionContext,
    config: ChallengerDecisionConfig,
    mlflow_tracking: MlflowTrackingResource,
    prediction_service: PredictionServiceResource,
) -> MaterializeResult:
    refused = refusal(config)
    if refused:
        raise Failure(description=refused)
    evidence = evidence_text(config)
    client = prediction_service.client()
    reported = client.reported_model()
    running = (reported.challenger or {}).get("model_version") if reported else None
    if running != config.challenger:
        raise Failure(
            description=(
                f"not applying {config.decision} of {config.challenger}: the service at "
                f"{prediction_service.api_url} runs {running or 'no challenger'} now"
            ),
            metadata={"evidence": evidence},
        )
    try:
        client.set_challenger(prediction_service.admin_token, None)
    except ServiceError as error:
        raise Failure(f"could not detach {config.challenger}: {error}") from error

    metadata: dict = {
        "decision": config.decision,
        "challenger": config.challenger,
        "role": config.role,
        "champion_model_tag_before": config.champion or "unknown",
        "challenger_live_accuracy": config.challenger_accuracy,
        "champion_live_accuracy": config.champion_accuracy,
        "challenger_labelled": config.challenger_labelled,
        "champion_labelled": config.champion_labelled,
        "days": ", ".join(config.days),
        "evidence": MetadataValue.md(evidence),
    }
    if config.decision == PROMOTE:
        champion = mlflow_tracking.promote(config.challenger, config.champion, evidence)
        elected = (champion.tags or {}).get(BENTO_TAG) if champion is not None else None
        metadata["champion_model_tag_after"] = elected or "none"
        if elected != config.challenger:
            context.log.warning(
                "%s was promoted, but the champion policy elected %s (a model of newer data)",
                config.challenger,
                elected,
            )
        context.log.info("promoted %s; the deploy sensor serves the champion next", evidence)
    else:
        versions = mlflow_tracking.record_challenger_verdict(
            config.challenger, f"detached: {evidence}"
        )
        # Which registered versions now carry the verdict (their numbers, not a count).
        metadata["mlflow_version_numbers_tagged"] = (
            ", ".join(str(v.version) for v in versions) or "none"
        )
        context.log.info("detached %s", evidence)
    return MaterializeResult(metadata=metadata)
