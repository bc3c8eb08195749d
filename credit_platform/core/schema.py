"""The feature store schema: the target every migration leads to.

The tables are created and changed by the versioned migrations in
`credit_platform/core/migrations/versions/` (Alembic), which `credit-platform init` applies;
this module is what their head must equal, and a test fails when the two disagree (README
"Changing a table"). SQLAlchemy Core renders it for SQLite and MariaDB alike;
`sql/schema_*.sql` are generated from it (`credit-platform sql --write`). On MariaDB every
table is utf8mb4 whatever the database's default character set, so no text is ever stored
as "?".
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
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

from credit_platform.core.features import CATEGORY_LENGTH, FEATURES, LABELS, TARGET, Feature

# DOUBLE on MariaDB (FLOAT there is single precision and would round money values).
DOUBLE = Float().with_variant(mysql.DOUBLE(asdecimal=False), "mysql", "mariadb")
# Microsecond timestamps on MariaDB, so the prediction log orders requests correctly.
TIMESTAMP = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

ID_LENGTH = 32
TEXT_LENGTH = 255
REQUEST_ID_LENGTH = 64
# Every MariaDB table is created with this character set, named explicitly: a database whose
# default is latin1 would otherwise store emoji and CJK text as "?".
MARIADB_CHARSET = "utf8mb4"
TABLE_OPTIONS = {"mysql_charset": MARIADB_CHARSET}
# A 64-bit key on MariaDB (a 32-bit one fills up within days at the log's insert rate);
# SQLite needs INTEGER PRIMARY KEY for its own 64-bit rowid key.
BIG_ID = BigInteger().with_variant(Integer(), "sqlite")
# Request ids compare byte for byte ("CaseTest-1" is not "casetest-1"); SQLite's default
# comparison already does.
REQUEST_ID = String(REQUEST_ID_LENGTH).with_variant(
    mysql.VARCHAR(REQUEST_ID_LENGTH, charset=MARIADB_CHARSET, collation="utf8mb4_bin"),
    "mysql",
    "mariadb",
)
# Customer ids compare byte for byte, as Python compares them: "CUS_a", "CUS_A" and "CUS_a "
# are three customers (MariaDB's default utf8mb4 collation would make the first two one key
# and let keyset paging skip one; utf8mb4_bin still pads, so the third would equal the
# first, and a tab would sort before the end of the string).
CUSTOMER_ID = String(ID_LENGTH).with_variant(
    mysql.VARCHAR(ID_LENGTH, charset=MARIADB_CHARSET, collation="utf8mb4_nopad_bin"),
    "mysql",
    "mariadb",
)
# The source's row ids compare the same way: "0x1a2b" and "0x1A2B" are two rows, as in
# SQLite (a case-insensitive key made the loader skip the second as already stored).
ROW_ID = CUSTOMER_ID
# Which model of the service answered: the one the champion alias names, or one sharing the
# traffic beside it.
MODEL_ROLES = ("champion", "shadow", "canary")
# A shadow's log row of an answered row: the answered row's id plus this ("@" is outside the
# client key alphabet, so no client id ends so).
SHADOW_ROW_SUFFIX = "@shadow"


def _feature_column(feature: Feature) -> Column:
    """A feature's store column, from its declaration: whole numbers as INTEGER, amounts as
    DOUBLE, a closed category as a short string, a listing as a long one."""
    if feature.kind == "integer":
        return Column(feature.name, Integer, nullable=True)
    if feature.kind == "float":
        return Column(feature.name, DOUBLE, nullable=True)
    if feature.listing:
        return Column(feature.name, String(TEXT_LENGTH), nullable=True)
    return Column(feature.name, String(CATEGORY_LENGTH), nullable=True)


def feature_columns() -> list[Column]:
    """Fresh Column objects for the model features (a Column belongs to one Table)."""
    return [_feature_column(feature) for feature in FEATURES]


metadata = MetaData()

customer_info = Table(
    "customer_info",
    metadata,
    Column("id", ROW_ID, primary_key=True),
    Column("customer_id", CUSTOMER_ID, nullable=False),
    Column("date", Date, nullable=False),
    Column("name", String(128), nullable=True),
    Column("ssn", String(32), nullable=True),
    Index("ix_customer_info_customer_date", "customer_id", "date"),
    **TABLE_OPTIONS,
)

credit_score = Table(
    "credit_score",
    metadata,
    Column("id", ROW_ID, primary_key=True),
    Column("customer_id", CUSTOMER_ID, nullable=False),
    Column("date", Date, nullable=False),
    Column(TARGET, String(16), nullable=False),
    Index("ix_credit_score_date", "date"),
    Index("ix_credit_score_customer", "customer_id"),
    **TABLE_OPTIONS,
)

credit_score_features = Table(
    "credit_score_features",
    metadata,
    Column("id", ROW_ID, primary_key=True),
    Column("customer_id", CUSTOMER_ID, nullable=False),
    Column("date", Date, nullable=False),
    *feature_columns(),
    Column("name", String(128), nullable=True),
    Column("ssn", String(32), nullable=True),
    Index("ix_credit_score_features_customer_date", "customer_id", "date"),
    # Batch scoring reads one day's rows in customer order.
    Index("ix_credit_score_features_date_customer", "date", "customer_id"),
    **TABLE_OPTIONS,
)

credit_score_features_target = Table(
    "credit_score_features_target",
    metadata,
    Column("base_dt", Date, primary_key=True),
    Column("id", ROW_ID, primary_key=True),
    Column("customer_id", CUSTOMER_ID, primary_key=True),
    Column("date", Date, nullable=False),
    *feature_columns(),
    Column(TARGET, String(16), nullable=False),
    **TABLE_OPTIONS,
)

credit_predictions_api_log = Table(
    "credit_predictions_api_log",
    metadata,
    Column("id", BIG_ID, primary_key=True, autoincrement=True),
    Column("request_id", REQUEST_ID, nullable=False, unique=True),
    Column("customer_id", CUSTOMER_ID, nullable=False),
    Column("features", JSON, nullable=False),
    Column("prediction", String(16), nullable=False),
    Column("confidence", DOUBLE, nullable=False),
    Column("elapsed_ms", DOUBLE, nullable=False),
    Column("model_version", String(128), nullable=False),
    Column("role", String(16), nullable=False, server_default=MODEL_ROLES[0]),
    Column("created_at", TIMESTAMP, nullable=False, server_default=func.now()),
    # The reasons given with the answer when the request asked for them ("explain": true;
    # `core.reasons`), else NULL.
    Column("reasons", JSON(none_as_null=True), nullable=True),
    Index("ix_credit_predictions_api_log_created_at", "created_at"),
    CheckConstraint(
        "role IN (" + ", ".join(f"'{role}'" for role in MODEL_ROLES) + ")",
        name="ck_credit_predictions_api_log_role",
    ),
    **TABLE_OPTIONS,
)

# Batch scores: one row per customer and scoring day, written by the
# `credit_score_predictions` asset (a day is replaced in one transaction).
PREDICTION_CONFIDENCE_COLUMNS: dict[str, str] = {
    label: f"confidence_{label.lower()}" for label in LABELS
}
PREDICTION_REASON_COLUMNS: tuple[str, ...] = ("reason_1", "reason_2", "reason_3")
credit_score_predictions = Table(
    "credit_score_predictions",
    metadata,
    Column("score_dt", Date, primary_key=True),
    Column("customer_id", CUSTOMER_ID, primary_key=True),
    Column("prediction", String(16), nullable=False),
    *[Column(name, DOUBLE, nullable=False) for name in PREDICTION_CONFIDENCE_COLUMNS.values()],
    Column("model_version", String(128), nullable=False),
    # The top reasons for the prediction (`core.reasons` codes, the largest SHAP
    # contribution first), when the day was scored with reason codes; else NULL.
    *[Column(name, String(64), nullable=True) for name in PREDICTION_REASON_COLUMNS],
    **TABLE_OPTIONS,
)

# What `model_monitoring` measured on one day: one row per (model version, role, metric,
# feature). `role` is champion, shadow or canary, or "all" for the version over every role;
# `feature` names the feature a drift row is about, the label of a prediction share, or is
# "" for metrics of the whole group. A NULL value is "not known yet" (e.g. live accuracy
# before any label arrived). Re-materializing a day replaces its rows.
MONITORING_ALL_ROLES = "all"
credit_model_monitoring = Table(
    "credit_model_monitoring",
    metadata,
    Column("day", Date, primary_key=True),
    Column("model_version", String(128), primary_key=True),
    Column("role", String(16), primary_key=True),
    Column("metric", String(64), primary_key=True),
    Column("feature", String(128), primary_key=True, server_default=""),
    Column("value", DOUBLE, nullable=True),
    **TABLE_OPTIONS,
)


# The model every replica of the prediction service must serve, and its shadow or canary:
# one row per service, written by /admin/reload and /admin/challenger on whichever replica
# received them, followed by every replica (`credit_platform.core.model_record`).
REPLICA_ID_LENGTH = 128
MODEL_TAG_LENGTH = 128
credit_api_desired_model = Table(
    "credit_api_desired_model",
    metadata,
    Column("service", String(64), primary_key=True),
    Column("model_tag", String(MODEL_TAG_LENGTH), nullable=False),
    Column("challenger", JSON(none_as_null=True), nullable=True),  # {"tag", "role", "share"}
    Column("updated_by", String(REPLICA_ID_LENGTH), nullable=False),
    Column("updated_at", TIMESTAMP, nullable=False),
    **TABLE_OPTIONS,
)

# What each running replica serves, as it reports it every poll (its heartbeat); a deploy
# waits until every live replica reports the new model. A replica removes its row when it
# stops, and rows silent for a day are pruned.
credit_api_replicas = Table(
    "credit_api_replicas",
    metadata,
    Column("replica_id", String(REPLICA_ID_LENGTH), primary_key=True),
    Column("hostname", String(TEXT_LENGTH), nullable=False),
    Column("bento_tag", String(MODEL_TAG_LENGTH), nullable=True),
    Column("model_tag", String(MODEL_TAG_LENGTH), nullable=False),
    Column("challenger", JSON(none_as_null=True), nullable=True),
    Column("desired_tag", String(MODEL_TAG_LENGTH), nullable=True),
    Column("problem", String(1000), nullable=True),
    Column("poll_seconds", DOUBLE, nullable=False),
    Column("stale_seconds", DOUBLE, nullable=False),
    Column("started_at", TIMESTAMP, nullable=False),
    Column("heartbeat_at", TIMESTAMP, nullable=False),
    **TABLE_OPTIONS,
)

TABLE_NAMES: tuple[str, ...] = tuple(metadata.tables)
