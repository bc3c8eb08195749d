"""What the Dagster catalog shows about the platform's tables and assets.

Owners, the column schema built from `core.schema` (the one source), qualified table
names."""

from __future__ import annotations

from collections.abc import Mapping

from dagster import TableColumn, TableColumnConstraints, TableConstraints, TableSchema
from sqlalchemy import Table
from sqlalchemy.engine import make_url

from credit_platform.core.features import (
    CATEGORICAL_FEATURES,
    LABELS,
    NUMERIC_FEATURES,
    TARGET,
    TEXT_FEATURES,
)
from credit_platform.core.monitoring import (
    ALL_VERSIONS,
    FEATURE_PSI,
    LABELLED,
    LIVE_ACCURACY,
    PREDICTION_MIX_PSI,
    REQUESTS,
)
from credit_platform.core.schema import (
    MODEL_ROLES,
    MONITORING_ALL_ROLES,
    PREDICTION_CONFIDENCE_COLUMNS,
    PREDICTION_REASON_COLUMNS,
    credit_model_monitoring,
)

# Who answers for the assets; the catalog shows it as their owner.
ASSET_OWNERS = ["team:credit-ml"]

# What each column holds, by name: the tables share their key columns' meaning, so one
# entry describes a name wherever it appears (a table may override it below).
COLUMN_DESCRIPTIONS: dict[str, str] = {
    **{name: "numeric model feature" for name in NUMERIC_FEATURES},
    **{name: "categorical model feature" for name in CATEGORICAL_FEATURES},
    **{name: "text model feature" for name in TEXT_FEATURES},
    TARGET: "label: Good, Standard or Poor",
    "base_dt": "partition day the row was built for",
    "id": "row id of the source record (unique per customer and day)",
    "customer_id": "the customer the row is about",
    "date": "day the record describes (a label's or a feature row's date)",
    "name": "customer name (never a model feature)",
    "ssn": "social security number (never a model feature)",
    "score_dt": "day whose feature rows were scored (the partition)",
    "prediction": "predicted label: Good, Standard or Poor",
    **{
        column: f"predicted probability of {label}"
        for label, column in PREDICTION_CONFIDENCE_COLUMNS.items()
    },
    "model_version": "BentoML tag of the model that answered (credit_score_classifier:<version>)",
    "request_id": "X-Request-ID of the answered request (#<position> for a batch row, "
    "@shadow for a shadow's score)",
    "features": "the request's model features as scored (JSON; a repaired value is null)",
    "confidence": "probability of the predicted label",
    "elapsed_ms": "time the model took to answer, in milliseconds",
    "role": f"which model answered: {', '.join(MODEL_ROLES)}",
    "created_at": "when the answer was logged (UTC)",
    **{
        column: f"the {rank} reason code for the prediction (its feature, or ratio of two; "
        "NULL when the day was scored without reason codes)"
        for rank, column in zip(("top", "second", "third"), PREDICTION_REASON_COLUMNS, strict=True)
    },
    "reasons": "the reasons answered with the label when the request asked for them "
    "(JSON: the top reasons' SHAP contributions, values and texts; NULL when not asked)",
    "day": "the monitored day (predictions logged on it, UTC)",
    "metric": "what was measured, e.g. "
    + ", ".join((REQUESTS, LABELLED, LIVE_ACCURACY, FEATURE_PSI, PREDICTION_MIX_PSI)),
    "feature": "the feature a drift row is about, the label of a prediction share, or empty",
    "value": "the measured value; NULL when not known yet (no label arrived)",
}
# Where a name means something else in one table.
_TABLE_COLUMN_DESCRIPTIONS: dict[str, dict[str, str]] = {
    credit_model_monitoring.name: {
        "model_version": f"model version the row is about, or '{ALL_VERSIONS}' for the whole day",
        "role": f"{', '.join(MODEL_ROLES)}, or '{MONITORING_ALL_ROLES}' for the version over "
        "every role",
    },
}


def column_description(table: Table, column: str) -> str | None:
    """What `column` of `table` holds (None for a name no entry covers)."""
    specific = _TABLE_COLUMN_DESCRIPTIONS.get(table.name, {})
    return specific.get(column, COLUMN_DESCRIPTIONS.get(column))


def label_mix_markdown(counts: Mapping[str, int], total: int, heading: str) -> str:
    """A table of rows and share per label (`heading` names the label column)."""
    return "\n".join(
        [f"| {heading} | rows | share |", "| --- | ---: | ---: |"]
        + [
            f"| {label} | {counts.get(label, 0)} | {counts.get(label, 0) / total:.1%} |"
            for label in LABELS
        ]
    )


def table_schema(table: Table) -> TableSchema:
    """The table's columns as Dagster's `dagster/column_schema` (types as SQLAlchemy's
    generic names, nullability and the primary key)."""
    columns = [
        TableColumn(
            name=column.name,
            type=str(column.type),
            description=column_description(table, column.name),
            constraints=TableColumnConstraints(nullable=bool(column.nullable)),
        )
        for column in table.columns
    ]
    key = ", ".join(column.name for column in table.primary_key.columns)
    return TableSchema(
        columns=columns, constraints=TableConstraints(other=[f"primary key ({key})"])
    )


def qualified_table_name(url: str, table: Table) -> str:
    """`database.table` on a server (MariaDB), the bare table name in an SQLite file."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" or not parsed.database:
        return table.name
    return f"{parsed.database}.{table.name}"
