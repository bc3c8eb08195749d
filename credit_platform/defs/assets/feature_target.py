"""`credit_score_features_target`: the day's labelled training table, built in the database."""

from datetime import date

from dagster import (
    AssetExecutionContext,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from credit_platform.core.db import run_transaction
from credit_platform.core.feature_target_sql import (
    SOURCE_TABLES,
    TARGET_TABLE,
    EmptyPartitionError,
    build_partition,
)
from credit_platform.core.features import LABELS
from credit_platform.core.schema import credit_score, credit_score_features
from credit_platform.core.schema import credit_score_features_target as target_table
from credit_platform.defs.catalog import (
    ASSET_OWNERS,
    label_mix_markdown,
    qualified_table_name,
    table_schema,
)
from credit_platform.defs.partitions import daily_partitions
from credit_platform.defs.resources.feature_store import FeatureStoreResource

FEATURE_TARGET_ASSET = "credit_score_features_target"


class FeatureTargetConfig(Config):
    retention_days: int = Field(
        default=7,
        ge=0,
        description="Drop base days at or before partition day minus this many days; 0 keeps all.",
    )


@asset(
    name=FEATURE_TARGET_ASSET,
    partitions_def=daily_partitions(),
    owners=ASSET_OWNERS,
    group_name="continuous_training",
    kinds={"sql"},
    description=(
        "Labels dated within one month before the partition day joined to their features, "
        "written with base_dt = partition day (exact replace, one transaction)."
    ),
    metadata={
        "dagster/table_name": TARGET_TABLE,
        "dagster/column_schema": table_schema(target_table),
    },
    # Read inside the database (no IO manager): lineage only.
    deps=[credit_score.name, credit_score_features.name],
)
def credit_score_features_target(
    context: AssetExecutionContext,
    config: FeatureTargetConfig,
    feature_store: FeatureStoreResource,
) -> MaterializeResult:
    base_dt = date.fromisoformat(context.partition_key)
    with feature_store.engine() as engine:
        try:
            # Days of a backfill run at once and replace neighbouring rows of one table:
            # MariaDB may pick this transaction as a deadlock's victim, so it is rerun.
            result = run_transaction(
                engine,
                lambda connection: build_partition(connection, base_dt, config.retention_days),
                log=context.log,
            )
        except EmptyPartitionError as error:
            raise Failure(
                description=str(error),
                metadata={
                    "partition": base_dt.isoformat(),
                    "source_tables": ", ".join(SOURCE_TABLES),
                    "feature_store": feature_store.display_url,
                },
            ) from error
    context.log.info(
        "built %s rows for %s (window %s..%s), replaced %s, retention removed %s",
        result.rows,
        base_dt,
        result.window_start,
        base_dt,
        result.replaced_rows,
        result.retention_deleted,
    )
    distribution = label_mix_markdown(result.label_counts, result.rows, "label")
    return MaterializeResult(
        metadata={
            "dagster/row_count": MetadataValue.int(result.rows),
            "dagster/table_name": qualified_table_name(feature_store.url, target_table),
            "dagster/column_schema": table_schema(target_table),
            "label_distribution": MetadataValue.md(distribution),
            **{f"rows_{label.lower()}": result.label_counts.get(label, 0) for label in LABELS},
            "window": f"{result.window_start.isoformat()}..{base_dt.isoformat()}",
            "replaced_rows": result.replaced_rows,
            "retention_deleted_rows": result.retention_deleted,
            "retention_days": config.retention_days,
            "feature_store": feature_store.display_url,
        }
    )
