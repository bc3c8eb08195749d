"""The platform's tables as the last release before migrations made them.

Revision ID: 0001_platform_tables
Revises:
Create Date: 2026-12-07

On an empty database this creates every table. On a database an earlier release made
(there is no version table yet, so it is upgraded from here too) it creates the
tables that release lacked and brings the ones it had to this layout, keeping every row:

- the prediction log's id INT -> BIGINT (MariaDB; SQLite's INTEGER key is 64-bit already),
  AUTO_INCREMENT continuing after the last id;
- the log's `request_id` compared byte for byte (utf8mb4_bin on MariaDB);
- the log's `role` column (NOT NULL DEFAULT 'champion': every earlier row was the
  champion's answer) and its CHECK constraint;
- indexes added since (`ix_credit_score_features_date_customer`).

The definitions are frozen here on purpose: a revision never imports core/schema.py, which
describes the head and will keep changing.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0001_platform_tables"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHARSET = "utf8mb4"
OPTIONS = {"mysql_charset": CHARSET}
LOG = "credit_predictions_api_log"
ROLES = ("champion", "shadow", "canary")
ROLE_CHECK = "ck_credit_predictions_api_log_role"

# The 22 model features in column order, with their types at this revision.
INTEGER, DOUBLE_, CATEGORY, TEXT = "integer", "double", "category", "text"
FEATURES: tuple[tuple[str, str], ...] = (
    ("age", INTEGER),
    ("occupation", CATEGORY),
    ("annual_income", DOUBLE_),
    ("monthly_inhand_salary", DOUBLE_),
    ("num_bank_accounts", INTEGER),
    ("num_credit_card", INTEGER),
    ("interest_rate", INTEGER),
    ("num_of_loan", INTEGER),
    ("type_of_loan", TEXT),
    ("delay_from_due_date", INTEGER),
    ("num_of_delayed_payment", INTEGER),
    ("changed_credit_limit", DOUBLE_),
    ("num_credit_inquiries", INTEGER),
    ("credit_mix", CATEGORY),
    ("outstanding_debt", DOUBLE_),
    ("credit_utilization_ratio", DOUBLE_),
    ("credit_history_age", INTEGER),
    ("payment_of_min_amount", CATEGORY),
    ("total_emi_per_month", DOUBLE_),
    ("amount_invested_monthly", DOUBLE_),
    ("payment_behaviour", CATEGORY),
    ("monthly_balance", DOUBLE_),
)


def _double() -> sa.types.TypeEngine:
    return sa.Float().with_variant(mysql.DOUBLE(asdecimal=False), "mysql", "mariadb")


def _timestamp() -> sa.types.TypeEngine:
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _request_id() -> sa.types.TypeEngine:
    return sa.String(64).with_variant(
        mysql.VARCHAR(64, charset=CHARSET, collation="utf8mb4_bin"), "mysql", "mariadb"
    )


def _features() -> list[sa.Column]:
    types = {
        INTEGER: sa.Integer,
        DOUBLE_: _double,
        CATEGORY: lambda: sa.String(64),
        TEXT: lambda: sa.String(255),
    }
    return [sa.Column(name, types[kind](), nullable=True) for name, kind in FEATURES]


def _log_role() -> sa.Column:
    return sa.Column("role", sa.String(16), nullable=False, server_default=ROLES[0])


def _role_condition() -> str:
    return "role IN (" + ", ".join(f"'{role}'" for role in ROLES) + ")"


def _tables() -> dict[str, tuple[list, list[tuple[str, list[str]]]]]:
    """Each table's columns and constraints, and its indexes (name, columns), in the order
    they are created (indexes by name, as sql/schema_*.sql creates them)."""
    return {
        "customer_info": (
            [
                sa.Column("id", sa.String(32), primary_key=True),
                sa.Column("customer_id", sa.String(32), nullable=False),
                sa.Column("date", sa.Date(), nullable=False),
                sa.Column("name", sa.String(128), nullable=True),
                sa.Column("ssn", sa.String(32), nullable=True),
            ],
            [("ix_customer_info_customer_date", ["customer_id", "date"])],
        ),
        "credit_score": (
            [
                sa.Column("id", sa.String(32), primary_key=True),
                sa.Column("customer_id", sa.String(32), nullable=False),
                sa.Column("date", sa.Date(), nullable=False),
                sa.Column("credit_score", sa.String(16), nullable=False),
            ],
            [
                ("ix_credit_score_customer", ["customer_id"]),
                ("ix_credit_score_date", ["date"]),
            ],
        ),
        "credit_score_features": (
            [
                sa.Column("id", sa.String(32), primary_key=True),
                sa.Column("customer_id", sa.String(32), nullable=False),
                sa.Column("date", sa.Date(), nullable=False),
                *_features(),
                sa.Column("name", sa.String(128), nullable=True),
                sa.Column("ssn", sa.String(32), nullable=True),
            ],
            [
                ("ix_credit_score_features_customer_date", ["customer_id", "date"]),
                ("ix_credit_score_features_date_customer", ["date", "customer_id"]),
            ],
        ),
        "credit_score_features_target": (
            [
                sa.Column("base_dt", sa.Date(), primary_key=True),
                sa.Column("id", sa.String(32), primary_key=True),
                sa.Column("customer_id", sa.String(32), primary_key=True),
                sa.Column("date", sa.Date(), nullable=False),
                *_features(),
                sa.Column("credit_score", sa.String(16), nullable=False),
            ],
            [],
        ),
        LOG: (
            [
                sa.Column(
                    "id",
                    sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                    primary_key=True,
                    autoincrement=True,
                ),
                sa.Column("request_id", _request_id(), nullable=False, unique=True),
                sa.Column("customer_id", sa.String(32), nullable=False),
                sa.Column("features", sa.JSON(), nullable=False),
                sa.Column("prediction", sa.String(16), nullable=False),
                sa.Column("confidence", _double(), nullable=False),
                sa.Column("elapsed_ms", _double(), nullable=False),
                sa.Column("model_version", sa.String(128), nullable=False),
                _log_role(),
                sa.Column("created_at", _timestamp(), nullable=False, server_default=sa.func.now()),
                sa.CheckConstraint(_role_condition(), name=ROLE_CHECK),
            ],
            [("ix_credit_predictions_api_log_created_at", ["created_at"])],
        ),
        "credit_score_predictions": (
            [
                sa.Column("score_dt", sa.Date(), primary_key=True),
                sa.Column("customer_id", sa.String(32), primary_key=True),
                sa.Column("prediction", sa.String(16), nullable=False),
                sa.Column("confidence_good", _double(), nullable=False),
                sa.Column("confidence_standard", _double(), nullable=False),
                sa.Column("confidence_poor", _double(), nullable=False),
                sa.Column("model_version", sa.String(128), nullable=False),
            ],
            [],
        ),
        "credit_model_monitoring": (
            [
                sa.Column("day", sa.Date(), primary_key=True),
                sa.Column("model_version", sa.String(128), primary_key=True),
                sa.Column("role", sa.String(16), primary_key=True),
                sa.Column("metric", sa.String(64), primary_key=True),
                sa.Column("feature", sa.String(128), primary_key=True, server_default=""),
                sa.Column("value", _double(), nullable=True),
            ],
            [],
        ),
        "credit_api_desired_model": (
            [
                sa.Column("service", sa.String(64), primary_key=True),
                sa.Column("model_tag", sa.String(128), nullable=False),
                sa.Column("challenger", sa.JSON(none_as_null=True), nullable=True),
                sa.Column("updated_by", sa.String(128), nullable=False),
                sa.Column("updated_at", _timestamp(), nullable=False),
            ],
            [],
        ),
        "credit_api_replicas": (
            [
                sa.Column("replica_id", sa.String(128), primary_key=True),
                sa.Column("hostname", sa.String(255), nullable=False),
                sa.Column("bento_tag", sa.String(128), nullable=True),
                sa.Column("model_tag", sa.String(128), nullable=False),
                sa.Column("challenger", sa.JSON(none_as_null=True), nullable=True),
                sa.Column("desired_tag", sa.String(128), nullable=True),
                sa.Column("problem", sa.String(1000), nullable=True),
                sa.Column("poll_seconds", _double(), nullable=False),
                sa.Column("stale_seconds", _double(), nullable=False),
                sa.Column("started_at", _timestamp(), nullable=False),
                sa.Column("heartbeat_at", _timestamp(), nullable=False),
            ],
            [],
        ),
    }


def _is_mariadb() -> bool:
    return op.get_bind().dialect.name in ("mysql", "mariadb")


def _column_collation(table: str, column: str) -> str | None:
    return (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT COLLATION_NAME FROM information_schema.COLUMNS WHERE "
                "TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :table AND COLUMN_NAME = :column"
            ),
            {"table": table, "column": column},
        )
        .scalar()
    )


def _bring_log_up(inspector: sa.Inspector) -> None:
    """The prediction log of an earlier release: 64-bit ids, binary request ids, roles."""
    columns = {column["name"]: column for column in inspector.get_columns(LOG)}
    checks = {check["name"] for check in inspector.get_check_constraints(LOG)}
    if _is_mariadb():
        # One ALTER, so a long log is copied once; the role goes where a new table has it.
        changes = []
        if not isinstance(columns["id"]["type"], sa.BigInteger):
            changes.append("MODIFY id BIGINT NOT NULL AUTO_INCREMENT")
        if _column_collation(LOG, "request_id") != "utf8mb4_bin":
            changes.append(
                f"MODIFY request_id VARCHAR(64) CHARACTER SET {CHARSET} COLLATE utf8mb4_bin "
                "NOT NULL"
            )
        if "role" not in columns:
            changes.append(
                f"ADD COLUMN role VARCHAR(16) NOT NULL DEFAULT '{ROLES[0]}' AFTER model_version"
            )
        if ROLE_CHECK not in checks:
            changes.append(f"ADD CONSTRAINT {ROLE_CHECK} CHECK ({_role_condition()})")
        if changes:
            op.execute(f"ALTER TABLE {LOG} " + ", ".join(changes))
        return
    if "role" not in columns or ROLE_CHECK not in checks:
        # SQLite cannot add a CHECK to a table: batch mode rebuilds it, rows and all.
        with op.batch_alter_table(LOG, recreate="always") as batch:
            if "role" not in columns:
                batch.add_column(_log_role(), insert_before="created_at")
            if ROLE_CHECK not in checks:
                batch.create_check_constraint(ROLE_CHECK, _role_condition())


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for name, (columns, indexes) in _tables().items():
        if not inspector.has_table(name):
            op.create_table(name, *columns, **OPTIONS)
            for index, indexed in indexes:
                op.create_index(index, name, indexed)
            continue
        if name == LOG:
            _bring_log_up(inspector)
        present = {index["name"] for index in sa.inspect(op.get_bind()).get_indexes(name)}
        for index, indexed in indexes:
            if index not in present:
                op.create_index(index, name, indexed)


def downgrade() -> None:
    for name in reversed(list(_tables())):
        op.drop_table(name)
