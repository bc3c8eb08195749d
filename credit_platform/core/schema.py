"""The feature store schema: the single definition every table is created from.

SQLAlchemy Core renders it for SQLite and MariaDB alike; `sql/schema_mariadb.sql`
is generated from it (`credit-platform init --print-ddl`) and a test keeps the two equal.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    func,
)
from sqlalchemy.dialects import mysql

from credit_platform.core.features import INTEGER_FEATURES, MODEL_FEATURES, TARGET

# DOUBLE on MariaDB (FLOAT there is single precision and would round money values).
DOUBLE = Float().with_variant(mysql.DOUBLE(asdecimal=False), "mysql", "mariadb")
# Microsecond timestamps on MariaDB, so the prediction log orders requests correctly.
TIMESTAMP = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

ID_LENGTH = 32
TEXT_LENGTH = 255


def _feature_column(name: str) -> Column:
    if name in INTEGER_FEATURES:
        return Column(name, Integer, nullable=True)
    if name in ("occupation", "credit_mix", "payment_of_min_amount", "payment_behaviour"):
        return Column(name, String(64), nullable=True)
    if name == "type_of_loan":
        return Column(name, String(TEXT_LENGTH), nullable=True)
    return Column(name, DOUBLE, nullable=True)


def feature_columns() -> list[Column]:
    """Fresh Column objects for the 22 model features (a Column belongs to one Table)."""
    return [_feature_column(name) for name in MODEL_FEATURES]


metadata = MetaData()

customer_info = Table(
    "customer_info",
    metadata,
    Column("id", String(ID_LENGTH), primary_key=True),
    Column("customer_id", String(ID_LENGTH), nullable=False),
    Column("date", Date, nullable=False),
    Column("name", String(128), nullable=True),
    Column("ssn", String(32), nullable=True),
    Index("ix_customer_info_customer_date", "customer_id", "date"),
)

credit_score = Table(
    "credit_score",
    metadata,
    Column("id", String(ID_LENGTH), primary_key=True),
    Column("customer_id", String(ID_LENGTH), nullable=False),
    Column("date", Date, nullable=False),
    Column(TARGET, String(16), nullable=False),
    Index("ix_credit_score_date", "date"),
    Index("ix_credit_score_customer", "customer_id"),
)

credit_score_features = Table(
    "credit_score_features",
    metadata,
    Column("id", String(ID_LENGTH), primary_key=True),
    Column("customer_id", String(ID_LENGTH), nullable=False),
    Column("date", Date, nullable=False),
    *feature_columns(),
    Column("name", String(128), nullable=True),
    Column("ssn", String(32), nullable=True),
    Index("ix_credit_score_features_customer_date", "customer_id", "date"),
)

credit_score_features_target = Table(
    "credit_score_features_target",
    metadata,
    Column("base_dt", Date, primary_key=True),
    Column("id", String(ID_LENGTH), primary_key=True),
    Column("customer_id", String(ID_LENGTH), primary_key=True),
    Column("date", Date, nullable=False),
    *feature_columns(),
    Column(TARGET, String(16), nullable=False),
)

credit_predictions_api_log = Table(
    "credit_predictions_api_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False, unique=True),
    Column("customer_id", String(ID_LENGTH), nullable=False),
    Column("features", JSON, nullable=False),
    Column("prediction", String(16), nullable=False),
    Column("confidence", DOUBLE, nullable=False),
    Column("elapsed_ms", DOUBLE, nullable=False),
    Column("model_version", String(128), nullable=False),
    Column("created_at", TIMESTAMP, nullable=False, server_default=func.now()),
    Index("ix_credit_predictions_api_log_created_at", "created_at"),
)

TABLE_NAMES: tuple[str, ...] = tuple(metadata.tables)
