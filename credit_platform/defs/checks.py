"""The blocking quality gate between training and deployment, and the champion election.

A candidate passes when its test accuracy reaches a floor and is not worse than the current
champion (the MLflow registry's alias, never whatever answers at the API's URL) scored on
the candidate's own test rows, beyond a tolerance. On a pass the champion is elected again
from the registry: the passing model of the newest data partition, so a backfill of older
days never displaces a model of newer data. Being blocking, a failed check stops everything
downstream of `credit_score_model` (the deployment) in the same run.

Beside it, `credit_score_model_fairness` (a warning, not blocking) scores the saved model on
the same test rows per segment of customers (`core/fairness.py`: age bands and occupation by
default) and warns when a segment's rate of "Good" is below four fifths of the best
segment's or its accuracy is more than a gap below the whole's; the table goes to the
check's metadata and to the training's MLflow parent run.
"""

from dataclasses import dataclass
from typing import Any

import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetIn,
    Config,
    MetadataValue,
    asset_check,
)
from pydantic import Field

from credit_platform.core.answers import answered_labels, offsets_from_metadata
from credit_platform.core.fairness import (
    describe_findings,
    flagged,
    segment_confusions,
    segment_markdown,
    segment_table,
)
from credit_platform.core.features import TARGET
from credit_platform.core.model_input import prepare_model_input, trained_columns
from credit_platform.core.model_store import ModelNotFound, load_model_bundle, model_metadata
from credit_platform.core.training import evaluate, make_pool
from credit_platform.defs.assets.model import credit_score_model
from credit_platform.defs.assets.split import TEST, side_rows
from credit_platform.defs.partitions import daily_partitions
from credit_platform.defs.resources.fairness_policy import FairnessPolicyResource
from credit_platform.defs.resources.mlflow_tracking import (
    BENTO_TAG,
    PARTITION_TAG,
    QUALITY_TAG,
    MlflowTrackingResource,
)

# Accuracies are compared with a little slack so 0.62 - 0.02 is not "worse than" 0.60.
_EPSILON = 1e-9


class ModelQualityConfig(Config):
    min_accuracy: float = Field(
        default=0.5, ge=0, le=1, description="Test accuracy every deployable model needs."
    )
    tolerance: float = Field(
        default=0.02,
        ge=0,
        description="How much worse than the champion, on the same test rows, a model may be.",
    )


@dataclass(frozen=True)
class Champion:
    """The model a candidate must not fall behind: its accuracy on the candidate's test rows,
    and which model that is."""

    accuracy: float
    source: str


class ChampionUnusable(RuntimeError):
    """The registry names a champion that cannot be loaded or scored."""


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
            False, f"test_accuracy {accuracy:.4f} is below the minimum {min_accuracy:.4f}"
        )
    if champion is None:
        return Verdict(
            True, f"test_accuracy {accuracy:.4f} >= minimum {min_accuracy:.4f}; no champion yet"
        )
    floor = champion.accuracy - tolerance
    if accuracy + _EPSILON < floor:
        return Verdict(
            False,
            f"test_accuracy {accuracy:.4f} is worse than the champion's {champion.accuracy:.4f} "
            f"on the same test rows ({champion.source}) by more than the tolerance "
            f"{tolerance:.4f}",
        )
    return Verdict(
        True,
        f"test_accuracy {accuracy:.4f} >= minimum {min_accuracy:.4f} and within {tolerance:.4f} "
        f"of the champion's {champion.accuracy:.4f} on the same test rows ({champion.source})",
    )


def score_champion(
    mlflow_tracking: MlflowTrackingResource, test_rows: pd.DataFrame, candidate_tag: str
) -> Champion | None:
    """The registry's champion scored on `test_rows`; None when there is no champion (or the
    champion is the candidate itself). Raises ChampionUnusable naming what is wrong."""
    version = mlflow_tracking.champion()
    if version is None:
        return None
    tags = version.tags or {}
    where = f"MLflow {version.name} version {version.version} (champion)"
    tag = tags.get(BENTO_TAG)
    if not tag:
        raise ChampionUnusable(f"{where} has no {BENTO_TAG} tag naming its BentoML model")
    if tag == candidate_tag:
        return None
    try:
        model_metadata(tag)
    except ModelNotFound as error:
        raise ChampionUnusable(
            f"{where} names {tag}, which is not in the BentoML store; roll the champion back "
            "(`credit-platform rollback`) or restore the model"
        ) from error
    try:
        bundle = load_model_bundle(tag)
    except Exception as error:  # a corrupt or incompatible saved model
        raise ChampionUnusable(f"{where}: cannot load {tag}: {error}") from error
    try:
        columns = trained_columns(bundle.model)
        pool = make_pool(prepare_model_input(test_rows, bundle.scalers, columns=columns))
        offsets = offsets_from_metadata(bundle.metadata, bundle.model.classes_)
        evaluation = evaluate(bundle.model, pool, test_rows[TARGET], offsets)
    except Exception as error:
        raise ChampionUnusable(f"{where}: {tag} cannot score the test rows: {error}") from error
    partition = tags.get(PARTITION_TAG, "unknown")
    return Champion(evaluation.accuracy, f"{tag}, partition {partition}, {where}")


@asset_check(
    asset=credit_score_model,
    blocking=True,
    partitions_def=daily_partitions(),
    additional_ins={"train_valid_split": AssetIn()},
    description=(
        "Test accuracy at least min_accuracy and no worse than the MLflow champion scored on "
        "the same test rows beyond the tolerance; on pass the champion is elected again: the "
        "passing model of the newest partition."
    ),
)
def credit_score_model_quality(
    context: AssetCheckExecutionContext,
    config: ModelQualityConfig,
    mlflow_tracking: MlflowTrackingResource,
    credit_score_model: dict[str, Any],
    train_valid_split: pd.DataFrame,
) -> AssetCheckResult:
    name = credit_score_model["mlflow_model_name"]
    version = str(credit_score_model["mlflow_model_version"])
    candidate_tag = credit_score_model["bento_tag"]
    accuracy = float(credit_score_model["metrics"]["test_accuracy"])
    test_rows = side_rows(train_valid_split, TEST)
    client = mlflow_tracking.client()
    try:
        champion = score_champion(mlflow_tracking, test_rows, candidate_tag)
    except ChampionUnusable as error:
        champion, verdict = None, Verdict(False, f"cannot compare with the champion: {error}")
    else:
        verdict = judge_model(
            accuracy,
            min_accuracy=config.min_accuracy,
            tolerance=config.tolerance,
            champion=champion,
        )
    client.set_model_version_tag(
        name, version, QUALITY_TAG, "passed" if verdict.passed else "failed"
    )
    elected = mlflow_tracking.elect_champion(name) if verdict.passed else mlflow_tracking.champion()
    crowned = elected is not None and str(elected.version) == version
    reason = verdict.reason
    if verdict.passed and not crowned and elected is not None:
        reason += (
            f"; the champion stays version {elected.version} "
            f"(partition {(elected.tags or {}).get(PARTITION_TAG)}, newer data than "
            f"{context.partition_key})"
        )
    context.log.info("model %s version %s: %s", name, version, reason)
    return AssetCheckResult(
        passed=verdict.passed,
        severity=AssetCheckSeverity.ERROR,
        description=reason,
        metadata={
            "test_accuracy": MetadataValue.float(accuracy),
            "test_rows": MetadataValue.int(len(test_rows)),
            "min_accuracy": MetadataValue.float(config.min_accuracy),
            "tolerance": MetadataValue.float(config.tolerance),
            "champion_accuracy": (
                MetadataValue.float(champion.accuracy) if champion else MetadataValue.null()
            ),
            "champion_source": champion.source if champion else "none",
            "champion_version": str(elected.version) if elected else "none",
            "became_champion": crowned,
            "bento_tag": candidate_tag,
            "mlflow_model_version": version,
            "reason": reason,
        },
    )


FAIRNESS_ARTIFACT = "fairness_check"
FAIRNESS_TAG = "fairness_check"


@asset_check(
    asset=credit_score_model,
    blocking=False,
    partitions_def=daily_partitions(),
    additional_ins={"train_valid_split": AssetIn()},
    description=(
        "Accuracy, recall per class and rate of Good per segment of the test rows (age "
        "bands, occupation: CREDIT_FAIRNESS_SEGMENTS); warns when a segment's rate of Good is "
        "below CREDIT_FAIRNESS_MIN_RATE_RATIO of the best segment's (four-fifths rule) or its "
        "accuracy is more than CREDIT_FAIRNESS_MAX_ACCURACY_GAP below the whole's."
    ),
)
def credit_score_model_fairness(
    context: AssetCheckExecutionContext,
    fairness_policy: FairnessPolicyResource,
    mlflow_tracking: MlflowTrackingResource,
    credit_score_model: dict[str, Any],
    train_valid_split: pd.DataFrame,
) -> AssetCheckResult:
    policy = fairness_policy.policy
    tag = credit_score_model["bento_tag"]
    test_rows = side_rows(train_valid_split, TEST)
    bundle = load_model_bundle(tag)
    columns = trained_columns(bundle.model)
    pool = make_pool(prepare_model_input(test_rows, bundle.scalers, columns=columns))
    predicted = answered_labels(bundle.model, bundle.metadata, pool)
    table = segment_table(
        segment_confusions(test_rows, test_rows[TARGET], predicted, policy), policy
    )
    found = flagged(table)
    description = describe_findings(table, policy)
    markdown = segment_markdown(table)
    verdict = "warned" if found else "passed"
    run_id = credit_score_model["mlflow_parent_run_id"]
    client = mlflow_tracking.client()
    client.log_text(run_id, markdown, f"{FAIRNESS_ARTIFACT}.md")
    client.log_dict(
        run_id,
        {
            "policy": policy.document(),
            "verdict": verdict,
            "finding": description,
            "segments": table,
        },
        f"{FAIRNESS_ARTIFACT}.json",
    )
    client.set_tag(run_id, FAIRNESS_TAG, verdict)
    client.set_model_version_tag(
        credit_score_model["mlflow_model_name"],
        str(credit_score_model["mlflow_model_version"]),
        FAIRNESS_TAG,
        verdict,
    )
    context.log.info("model %s: fairness %s: %s", tag, verdict, description)
    judged = [row for row in table if row["judged"]]
    ratios = [row["good_rate_ratio"] for row in judged if row["good_rate_ratio"] is not None]
    gaps = [row["accuracy_gap"] for row in judged if row["accuracy_gap"] is not None]
    return AssetCheckResult(
        passed=not found,
        severity=AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "segments": MetadataValue.md(markdown),
            "flagged_segments": MetadataValue.int(len(found)),
            "flagged": MetadataValue.json(
                [
                    {"feature": row["feature"], "segment": row["segment"], "flags": row["flags"]}
                    for row in found
                ]
            ),
            **({"min_good_rate_ratio": MetadataValue.float(min(ratios))} if ratios else {}),
            **({"max_accuracy_gap": MetadataValue.float(max(gaps))} if gaps else {}),
            "test_rows": MetadataValue.int(len(test_rows)),
            "policy": MetadataValue.json(policy.document()),
            "bento_tag": tag,
            "mlflow_artifact": MetadataValue.url(
                mlflow_tracking.artifact_url(run_id, f"{FAIRNESS_ARTIFACT}.md")
            ),
        },
    )
