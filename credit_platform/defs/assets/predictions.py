"""`credit_score_predictions`: day D's customers scored by the model that served on D.

Every customer with features on D is scored and written to the table of the same name,
the day replaced in one transaction.

Which model served on D is read from the Dagster instance: each `deployed_bento`
materialization records the model it made serve and when (`served_at`). The model of D is
the one whose serving began last before the end of D (UTC). When no deployment is recorded
by then (a day before the first deploy, or an instance that did not deploy), the MLflow
champion scores the day; run config may name a model instead. The metadata says which rule
chose the model.
"""

from datetime import UTC, date, datetime

from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    Config,
    DagsterInstance,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from credit_platform.core.batch_scoring import (
    DEFAULT_CHUNK_ROWS,
    FEATURES_TABLE,
    PREDICTIONS_TABLE,
    ModelChoice,
    NoFeaturesForDay,
    ServedModelRecord,
    end_of_day,
    score_day,
    served_on,
)
from credit_platform.core.db import create_tables, run_transaction
from credit_platform.core.features import LABELS
from credit_platform.core.model_store import ModelBundle, ModelNotFound, load_model_bundle
from credit_platform.core.schema import credit_score_features as features_table
from credit_platform.core.schema import credit_score_predictions as predictions_table
from credit_platform.defs.assets.deploy import DEPLOYED_BENTO_ASSET
from credit_platform.defs.catalog import (
    ASSET_OWNERS,
    label_mix_markdown,
    qualified_table_name,
    table_schema,
)
from credit_platform.defs.partitions import daily_partitions
from credit_platform.defs.resources.feature_store import FeatureStoreResource
from credit_platform.defs.resources.mlflow_tracking import BENTO_TAG, MlflowTrackingResource

PREDICTIONS_ASSET = "credit_score_predictions"
MODEL_ASSET = "credit_score_model"
DEPLOYMENTS_PAGE = 100


class PredictionsConfig(Config):
    model_tag: str | None = Field(
        default=None,
        description="Score with this model instead of the one that served on the day "
        "(e.g. to compare a candidate); leave empty for the served one.",
    )
    chunk_rows: int = Field(
        default=DEFAULT_CHUNK_ROWS,
        ge=1000,
        description="Feature rows read, scored and written at a time.",
    )
    reason_codes: bool = Field(
        default=False,
        description="Also store each customer's top three reason codes (reason_1..3: "
        "CatBoost's SHAP values of the model, summed into the applicant's features as the "
        "API explains an answer). Off by default: it multiplies the asset's time (see "
        "BENCHMARKS.md); without it the columns are NULL.",
    )


def deployments_until(instance: DagsterInstance, day: date) -> list[ServedModelRecord]:
    """The deployments recorded by `deployed_bento`, newest first, read back until the first
    whose serving began before the end of `day` (that one, or one read with it, served the
    day; older ones cannot have). Each names the model it served and when that began
    (`served_at`; the record's time when a materialization lacks it)."""
    cutoff = end_of_day(day)
    found: list[ServedModelRecord] = []
    cursor = None
    while True:
        page = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey(DEPLOYED_BENTO_ASSET)),
            limit=DEPLOYMENTS_PAGE,
            cursor=cursor,
        )
        for record in page.records:
            materialization = record.asset_materialization
            tag = materialization.metadata.get("model_tag") if materialization else None
            if tag is None:
                continue
            served_at = materialization.metadata.get("served_at")
            seconds = served_at.value if served_at is not None else record.timestamp
            deployment = ServedModelRecord(
                str(tag.value), datetime.fromtimestamp(float(seconds), UTC)
            )
            found.append(deployment)
            if deployment.served_at < cutoff:
                return found
        if not page.has_more:
            return found
        cursor = page.cursor


def choose_model(
    day: date,
    configured: str | None,
    deployments: list[ServedModelRecord],
    champion_tag: str | None,
) -> ModelChoice:
    """The configured model, else the one that served on `day`, else the champion."""
    if configured:
        return ModelChoice(configured, "config")
    served = served_on(day, deployments)
    if served is not None:
        return ModelChoice(served.model_tag, "deployment", served.served_at)
    if champion_tag:
        return ModelChoice(champion_tag, "champion")
    raise Failure(
        description=(
            f"no model to score {day.isoformat()} with: no {DEPLOYED_BENTO_ASSET} "
            "materialization is recorded before the end of that day and the MLflow registry "
            "has no champion. Train and deploy a model first, or name one in the run config "
            "(model_tag)."
        )
    )


def _champion_tag(mlflow_tracking: MlflowTrackingResource) -> str | None:
    champion = mlflow_tracking.champion()
    return (champion.tags or {}).get(BENTO_TAG) if champion is not None else None


def _load(choice: ModelChoice, day: date) -> ModelBundle:
    from bentoml.exceptions import NotFound

    try:
        return load_model_bundle(choice.model_tag)
    except (NotFound, ModelNotFound) as error:
        raise Failure(
            description=(
                f"the model {choice.model_tag} (chosen by {choice.source} to score "
                f"{day.isoformat()}) is not in the BentoML store: it was deleted or this "
                "store is another machine's. Restore it, or name another model in the run "
                "config (model_tag)."
            ),
            metadata={"model_tag": choice.model_tag, "model_source": choice.source},
        ) from error


def _describe_source(choice: ModelChoice) -> str:
    if choice.source == "deployment" and choice.served_at is not None:
        return f"deployment: served since {choice.served_at.isoformat(timespec='seconds')}"
    if choice.source == "champion":
        return "champion: no deployment recorded before the end of the day"
    return "config: model_tag named in the run config"


@asset(
    name=PREDICTIONS_ASSET,
    partitions_def=daily_partitions(),
    owners=ASSET_OWNERS,
    group_name="batch_scoring",
    kinds={"catboost", "sql"},
    description=(
        "Every customer with features on the partition day, scored by the model that served "
        "that day (the newest deployed_bento whose serving began before the day ended, else "
        "the MLflow champion), written to credit_score_predictions; the day is replaced in "
        "one transaction."
    ),
    metadata={
        "dagster/table_name": PREDICTIONS_TABLE,
        "dagster/column_schema": table_schema(predictions_table),
    },
    # Lineage only (nothing is loaded through an IO manager): the model that served day D
    # may come from any earlier partition, and the day's rows are read from the features.
    deps=[
        AssetDep(MODEL_ASSET, partition_mapping=AllPartitionMapping()),
        features_table.name,
    ],
)
def credit_score_predictions(
    context: AssetExecutionContext,
    config: PredictionsConfig,
    feature_store: FeatureStoreResource,
    mlflow_tracking: MlflowTrackingResource,
) -> MaterializeResult:
    day = date.fromisoformat(context.partition_key)
    deployments = [] if config.model_tag else deployments_until(context.instance, day)
    needs_champion = not config.model_tag and served_on(day, deployments) is None
    champion = _champion_tag(mlflow_tracking) if needs_champion else None
    choice = choose_model(day, config.model_tag, deployments, champion)
    bundle = _load(choice, day)
    context.log.info("scoring %s with %s (%s)", day, bundle.tag, _describe_source(choice))
    with feature_store.engine() as engine:
        # A store of an earlier release lacks the table, or (MariaDB) keys it on a
        # case-insensitive customer_id: bring it to the newest migration first.
        create_tables(engine)
        try:
            # A backfill scores days at once: a lost lock conflict reruns the day.
            result = run_transaction(
                engine,
                lambda connection: score_day(
                    connection,
                    day,
                    bundle,
                    chunk_rows=config.chunk_rows,
                    reasons=config.reason_codes,
                ),
                log=context.log,
            )
        except NoFeaturesForDay as error:
            raise Failure(
                description=str(error),
                metadata={
                    "partition": day.isoformat(),
                    "source_table": FEATURES_TABLE,
                    "feature_store": feature_store.display_url,
                },
            ) from error
    mix = label_mix_markdown(result.label_counts, result.rows, "prediction")
    return MaterializeResult(
        metadata={
            "dagster/row_count": MetadataValue.int(result.rows),
            "dagster/table_name": qualified_table_name(feature_store.url, predictions_table),
            "dagster/column_schema": table_schema(predictions_table),
            "prediction_mix": MetadataValue.md(mix),
            **{
                f"share_{label.lower()}": MetadataValue.float(
                    result.label_counts.get(label, 0) / result.rows
                )
                for label in LABELS
            },
            "model_tag": bundle.tag,
            "model_partition": str(bundle.partition),
            "model_source": _describe_source(choice),
            "replaced_rows": result.replaced_rows,
            "duplicate_feature_rows": result.duplicate_feature_rows,
            "repaired_values": result.repaired_values,
            "reason_codes": config.reason_codes,
            "seconds": MetadataValue.float(round(result.seconds, 3)),
            "feature_store": feature_store.display_url,
        }
    )
