"""The blocking quality gate between training and deployment.

A new model passes when its validation accuracy reaches a floor and is not worse than the
current champion beyond a tolerance. Being blocking, a failed check stops everything
downstream of `credit_score_model` (the deployment) in the same run.
"""

from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    Config,
    MetadataValue,
    asset_check,
)
from pydantic import Field

from credit_platform.core.service_client import ServiceClient
from credit_platform.defs.assets.model import credit_score_model
from credit_platform.defs.partitions import daily_partitions
from credit_platform.defs.resources.mlflow_tracking import MlflowTrackingResource
from credit_platform.defs.resources.prediction_service import PredictionServiceResource

# Accuracies are compared with a little slack so 0.62 - 0.02 is not "worse than" 0.60.
_EPSILON = 1e-9


class ModelQualityConfig(Config):
    min_accuracy: float = Field(
        default=0.5, ge=0, le=1, description="Validation accuracy every deployable model needs."
    )
    tolerance: float = Field(
        default=0.02, ge=0, description="How much worse than the champion a model may be."
    )


@dataclass(frozen=True)
class Champion:
    """The model a candidate must not fall behind, and where that fact came from."""

    accuracy: float
    source: str


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str


def judge_model(
    accuracy: float, *, min_accuracy: float, tolerance: float, champion: Champion | None
) -> Verdict:
    """The check's decision, kept pure so each rule can be tested on its own."""
    if accuracy + _EPSILON < min_accuracy:
        return Verdict(
            False, f"val_accuracy {accuracy:.4f} is below the minimum {min_accuracy:.4f}"
        )
    if champion is None:
        return Verdict(
            True, f"val_accuracy {accuracy:.4f} >= minimum {min_accuracy:.4f}; no champion yet"
        )
    floor = champion.accuracy - tolerance
    if accuracy + _EPSILON < floor:
        return Verdict(
            False,
            f"val_accuracy {accuracy:.4f} is worse than the champion's {champion.accuracy:.4f} "
            f"({champion.source}) by more than the tolerance {tolerance:.4f}",
        )
    return Verdict(
        True,
        f"val_accuracy {accuracy:.4f} >= minimum {min_accuracy:.4f} and within {tolerance:.4f} "
        f"of the champion's {champion.accuracy:.4f} ({champion.source})",
    )


def served_champion(api_url: str, timeout: float) -> Champion | None:
    """The served model's validation accuracy from GET /metadata, or None when the API is down
    or does not report one."""
    served = ServiceClient(api_url, timeout).reported_model()
    accuracy = served.metrics.get("val_accuracy") if served else None
    if served is None or type(accuracy) not in (int, float):
        return None
    return Champion(float(accuracy), f"served {served.tag} at {api_url}")


def registry_champion(mlflow_tracking: MlflowTrackingResource) -> Champion | None:
    """The last model that passed this check, from the MLflow registry's champion alias."""
    version = mlflow_tracking.champion()
    if version is None:
        return None
    raw = (version.tags or {}).get("val_accuracy")
    if raw is None:
        return None
    return Champion(float(raw), f"MLflow {version.name} version {version.version} (champion)")


def current_champion(
    api_url: str, timeout: float, mlflow_tracking: MlflowTrackingResource
) -> Champion | None:
    """What is served right now wins; when nothing answers, the last model that passed."""
    return served_champion(api_url, timeout) or registry_champion(mlflow_tracking)


@asset_check(
    asset=credit_score_model,
    blocking=True,
    partitions_def=daily_partitions(),
    description=(
        "Validation accuracy at least min_accuracy and no worse than the served (or last "
        "passing) model beyond the tolerance; on pass the model becomes the MLflow champion."
    ),
)
def credit_score_model_quality(
    context: AssetCheckExecutionContext,
    config: ModelQualityConfig,
    mlflow_tracking: MlflowTrackingResource,
    prediction_service: PredictionServiceResource,
    credit_score_model: dict[str, Any],
) -> AssetCheckResult:
    accuracy = float(credit_score_model["metrics"]["val_accuracy"])
    version = str(credit_score_model["mlflow_model_version"])
    name = credit_score_model["mlflow_model_name"]
    champion = current_champion(
        prediction_service.api_url, prediction_service.timeout_seconds, mlflow_tracking
    )
    verdict = judge_model(
        accuracy,
        min_accuracy=config.min_accuracy,
        tolerance=config.tolerance,
        champion=champion,
    )
    client = mlflow_tracking.client()
    client.set_model_version_tag(
        name, version, "quality_check", "passed" if verdict.passed else "failed"
    )
    if verdict.passed:
        mlflow_tracking.set_champion(version, name)
    context.log.info("model %s version %s: %s", name, version, verdict.reason)
    return AssetCheckResult(
        passed=verdict.passed,
        severity=AssetCheckSeverity.ERROR,
        description=verdict.reason,
        metadata={
            "val_accuracy": MetadataValue.float(accuracy),
            "min_accuracy": MetadataValue.float(config.min_accuracy),
            "tolerance": MetadataValue.float(config.tolerance),
            "champion_accuracy": (
                MetadataValue.float(champion.accuracy) if champion else MetadataValue.null()
            ),
            "champion_source": champion.source if champion else "none",
            "bento_tag": credit_score_model["bento_tag"],
            "mlflow_model_version": version,
            "reason": verdict.reason,
        },
    )
