"""Tables that Dagster reads but does not write, as external assets in the lineage.

The labels and features arrive from the loaders (`credit-platform seed`, `simulate`, a
production feed); the prediction log is written by the API for every answer. Declaring them
closes the loop a UI user sees: training reads the labels and features, the deployed model
writes the log, monitoring reads the log and the labels, and its failed checks retrain.
They are never materialized (no job selects them); their code references point at the
code that writes them and at the table's definition.
"""

from __future__ import annotations

from pathlib import Path

from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetSpec,
    CodeReferencesMetadataValue,
    LocalFileCodeReference,
)
from sqlalchemy import Table

from credit_platform.core import settings
from credit_platform.core.schema import credit_predictions_api_log, credit_score
from credit_platform.core.schema import credit_score_features as features_table
from credit_platform.defs.assets.deploy import DEPLOYED_BENTO_ASSET
from credit_platform.defs.catalog import ASSET_OWNERS, table_schema

SOURCES_GROUP = "feature_store"


def code_reference(relative_path: str, marker: str) -> LocalFileCodeReference | None:
    """A reference to the first line of `relative_path` (from the repository root) that
    starts with `marker`: the writer of a table lives outside the code location (the API
    and the loaders), so it cannot be found from a function object here. None when the
    checkout lacks the file (the catalog then shows no link; loading never fails for it)."""
    path = Path(settings.REPO_ROOT / relative_path)
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    number = next((n for n, line in enumerate(lines, 1) if line.startswith(marker)), 1)
    return LocalFileCodeReference(file_path=str(path), line_number=number)


def _table_spec(
    table: Table,
    *,
    group: str,
    description: str,
    writer: LocalFileCodeReference | None,
    kinds: set[str],
    deps: list[AssetDep] | None = None,
) -> AssetSpec:
    definition = code_reference("credit_platform/core/schema.py", f"{table.name} = Table(")
    references = [reference for reference in (writer, definition) if reference is not None]
    return AssetSpec(
        key=table.name,
        group_name=group,
        owners=ASSET_OWNERS,
        kinds=kinds,
        description=description,
        deps=deps or [],
        metadata={
            "dagster/table_name": table.name,
            "dagster/column_schema": table_schema(table),
            "dagster/code_references": CodeReferencesMetadataValue(code_references=references),
        },
    )


labels_source = _table_spec(
    credit_score,
    group=SOURCES_GROUP,
    kinds={"sql"},
    description=(
        "Labels (Good, Standard, Poor) per customer and day, loaded by `credit-platform seed` "
        "or `simulate` (a day's labels arrive after its predictions). Training joins them to "
        "the features; monitoring judges each logged prediction by them."
    ),
    writer=code_reference("credit_platform/ingest/writer.py", "class SourceWriter"),
)

features_source = _table_spec(
    features_table,
    group=SOURCES_GROUP,
    kinds={"sql"},
    description=(
        "The model features per customer and day, loaded beside the labels. Training joins them "
        "to the labels; batch scoring scores each day's rows."
    ),
    writer=code_reference("credit_platform/ingest/writer.py", "class SourceWriter"),
)

prediction_log_source = _table_spec(
    credit_predictions_api_log,
    group="monitoring",
    kinds={"bentoml", "sql"},
    description=(
        "Every answer of the prediction API (champion, shadow and canary), written by the "
        "service with group commit while the deployed model serves; model_monitoring reads "
        "a day of it."
    ),
    writer=code_reference("api/prediction_log.py", "class PredictionLogger"),
    # Whichever deployment serves writes the log: every partition of deployed_bento.
    deps=[AssetDep(DEPLOYED_BENTO_ASSET, partition_mapping=AllPartitionMapping())],
)

SOURCE_ASSETS = (labels_source, features_source, prediction_log_source)
