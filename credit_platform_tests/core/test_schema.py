"""One schema definition, applied to SQLite and to MariaDB by the migrations, and the
generated sql/ files (test_migrations.py compares the migrations' head with it)."""

import pytest
from sqlalchemy import create_engine, inspect, text

from credit_platform.cli.main import generated_sql_files, main
from credit_platform.core import migrations
from credit_platform.core.db import init_schema
from credit_platform.core.features import MODEL_FEATURES
from credit_platform.core.schema import TABLE_NAMES
from credit_platform_tests.legacy_stores import run_sql_file

SEED_TABLES = {
    "customer_info",
    "credit_score",
    "credit_score_features",
    "credit_score_features_target",
    "credit_predictions_api_log",
}
# Tables the platform adds to the seed's.
PLATFORM_TABLES = SEED_TABLES | {
    "credit_model_monitoring",
    "credit_score_predictions",
    "credit_api_desired_model",
    "credit_api_replicas",
}
# The record of the migration a store is at.
VERSION_TABLE = migrations.VERSION_TABLE


def _columns(engine, table: str) -> list[str]:
    return [column["name"] for column in inspect(engine).get_columns(table)]


def test_schema_has_the_seed_tables_and_columns(store_url):
    engine = init_schema(store_url)
    try:
        assert set(inspect(engine).get_table_names()) >= SEED_TABLES
        assert set(TABLE_NAMES) == PLATFORM_TABLES
        monitoring = _columns(engine, "credit_model_monitoring")
        assert monitoring == ["day", "model_version", "role", "metric", "feature", "value"]
        primary = inspect(engine).get_pk_constraint("credit_model_monitoring")
        assert primary["constrained_columns"] == monitoring[:5]
        features = _columns(engine, "credit_score_features")
        assert features[:3] == ["id", "customer_id", "date"]
        assert features[3 : 3 + len(MODEL_FEATURES)] == list(MODEL_FEATURES)
        assert {"name", "ssn"} <= set(features)
        target = _columns(engine, "credit_score_features_target")
        assert target == ["base_dt", "id", "customer_id", "date", *MODEL_FEATURES, "credit_score"]
        primary = inspect(engine).get_pk_constraint("credit_score_features_target")
        assert set(primary["constrained_columns"]) == {"base_dt", "id", "customer_id"}
        log = set(_columns(engine, "credit_predictions_api_log"))
        assert log >= {
            "id",
            "request_id",
            "customer_id",
            "features",
            "prediction",
            "confidence",
            "elapsed_ms",
            "model_version",
            "role",
            "created_at",
            "reasons",
        }
        uniques = inspect(engine).get_unique_constraints("credit_predictions_api_log")
        unique_indexes = [
            index
            for index in inspect(engine).get_indexes("credit_predictions_api_log")
            if index.get("unique")
        ]
        unique_columns = [set(item["column_names"]) for item in uniques + unique_indexes]
        assert {"request_id"} in unique_columns
        assert _columns(engine, "credit_score_predictions") == [
            "score_dt",
            "customer_id",
            "prediction",
            "confidence_good",
            "confidence_standard",
            "confidence_poor",
            "model_version",
            "reason_1",
            "reason_2",
            "reason_3",
        ]
        primary = inspect(engine).get_pk_constraint("credit_score_predictions")
        assert primary["constrained_columns"] == ["score_dt", "customer_id"]
    finally:
        engine.dispose()


def test_init_is_idempotent_and_keeps_data(store_url):
    engine = init_schema(store_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO credit_score (id, customer_id, date, credit_score) "
                "VALUES ('k1', 'c1', '2025-01-01', 'Good')"
            )
        )
    engine.dispose()
    again = init_schema(store_url)
    with again.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM credit_score")).scalar_one() == 1
    again.dispose()


def test_generated_sql_files_are_current():
    for path, text_ in generated_sql_files().items():
        assert path.exists(), f"{path} is missing; run `credit-platform sql --write`"
        assert path.read_text() == text_, f"{path} is stale; run `credit-platform sql --write`"


def test_committed_mariadb_ddl_builds_the_same_schema(mariadb_url):
    """The compose stack applies sql/schema_mariadb.sql at first start: it must match (and
    stamp the migrations' head: test_migrations.py)."""
    ddl = next(text_ for path, text_ in generated_sql_files().items() if "mariadb" in path.name)
    run_sql_file(mariadb_url, ddl)
    engine = create_engine(mariadb_url)
    try:
        assert set(inspect(engine).get_table_names()) == PLATFORM_TABLES | {VERSION_TABLE}
        target = _columns(engine, "credit_score_features_target")
        assert target[4 : 4 + len(MODEL_FEATURES)] == list(MODEL_FEATURES)
    finally:
        engine.dispose()


def test_cli_init_creates_a_mariadb_database(mariadb_url, cli_runner):
    url = mariadb_url + "_cli"
    runner = cli_runner
    try:
        result = runner.invoke(main, ["init", "--db-url", url])
        assert result.exit_code == 0, result.output
        engine = create_engine(url)
        assert set(inspect(engine).get_table_names()) == PLATFORM_TABLES | {VERSION_TABLE}
        engine.dispose()
    finally:
        server = create_engine(mariadb_url.rsplit("/", 1)[0])
        with server.begin() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS `{url.rsplit('/', 1)[1]}`"))
        server.dispose()


@pytest.mark.parametrize(
    "url",
    ["mysql+pymysql://root:hunter2@127.0.0.1:1/mlops", "sqlite:////proc/no/such/dir/x.db"],
)
def test_cli_init_names_an_unreachable_database(url, cli_runner):
    result = cli_runner.invoke(main, ["init", "--db-url", url])
    assert result.exit_code == 1
    assert "error:" in result.output
    assert "hunter2" not in result.output
