"""What the Dagster catalog shows about the platform's tables and assets: owners, the
column schema built from `core.schema` (the one source), qualified table names."""

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

# Who answers for the assets; the catalog shows it as their owner.
ASSET_OWNERS = ["team:credit-ml"]

_ROLES = {
    **{name: "numeric model feature" for name in NUMERIC_FEATURES},
    **{name: "categorical model feature" for name in CATEGORICAL_FEATURES},
    **{name: "text model feature" for name in TEXT_FEATURES},
    TARGET: "label: Good, Standard or Poor",
    "base_dt": "partition day the row was built for",
}


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
            description=_ROLES.get(column.name),
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
