"""Versioned migrations: their head is core/schema.py, `credit-platform init` upgrades the
databases earlier releases made in place without losing a row, and ids that differ only in
case are two ids afterwards. On SQLite and on the real MariaDB server."""

from __future__ import annotations

import re
import threading
import time
from contextlib import contextmanager
from datetime import date

import pytest
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    bindparam,
    create_engine,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError, OperationalError

from credit_platform.cli.db import next_revision_id
from credit_platform.cli.main import generated_sql_files, main
from credit_platform.core import migrations, settings
from credit_platform.core.db import (
    FeatureStoreUnavailable,
    SchemaMismatch,
    init_schema,
    make_engine,
    render_ddl,
    schema_lock,
)
from credit_platform.core.features import MODEL_FEATURES
from credit_platform.core.schema import (
    TABLE_NAMES,
    credit_predictions_api_log,
    credit_score_features,
    credit_score_features_target,
    credit_score_predictions,
    metadata,
)
from credit_platform_tests.legacy_stores import (
    RELEASES,
    make_release_database,
    run_sql_file,
    schema_differences,
    store_dialect,
)

DAY = date(2025, 3, 1)
ROLE_CHECK = "ck_credit_predictions_api_log_role"
# The tables the seeds' source and feature-target steps keep rows of, keyed by row id.
SEED_SOURCE_TABLES = (
    "credit_score",
    "credit_score_features",
    "credit_score_features_target",
    "customer_info",
)


def _feature_row(row_id: str, customer: str, day: date = DAY, **values) -> dict:
    row = {"id": row_id, "customer_id": customer, "date": day}
    row.update({name: None for name in MODEL_FEATURES})
    row.update({"age": 30, "occupation": "Engineer", "annual_income": 50_000.5, **values})
    return row


def _log_row(request_id: str, customer: str, features: object = '{"age": 30}') -> dict:
    """A log row; `features` as JSON text for plain SQL, as a dict for the Core table."""
    return {
        "request_id": request_id,
        "customer_id": customer,
        "features": features,
        "prediction": "Good",
        "confidence": 0.75,
        "elapsed_ms": 1.5,
        "model_version": "credit_score_classifier:old",
    }


def fill_release_database(url: str) -> dict[str, list[tuple]]:
    """Rows in every table the release has, written with plain SQL as that release's code
    would; returns each table's rows (the columns it had) to compare after the upgrade."""
    engine = create_engine(url)
    tables = set(inspect(engine).get_table_names())
    # The features that release stored (features declared since are not in its tables).
    stored = {column["name"] for column in inspect(engine).get_columns("credit_score_features")}
    released = [name for name in MODEL_FEATURES if name in stored]
    feature_names = ", ".join(released)
    feature_marks = ", ".join(f":{name}" for name in released)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO customer_info (id, customer_id, date, name, ssn) "
                    "VALUES ('i1', 'CUS_a', '2025-03-01', 'Ölçü 😀', '123')"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO credit_score (id, customer_id, date, credit_score) VALUES "
                    "('s1', 'CUS_a', '2025-03-01', 'Good'), ('s2', 'CUS_b', '2025-03-01', 'Poor')"
                )
            )
            connection.execute(
                text(
                    f"INSERT INTO credit_score_features (id, customer_id, date, {feature_names}, "
                    f"name, ssn) VALUES (:id, :customer_id, :date, {feature_marks}, NULL, NULL)"
                ),
                [_feature_row("f1", "CUS_a"), _feature_row("f2", "CUS_b", age=41)],
            )
            connection.execute(
                text(
                    f"INSERT INTO credit_score_features_target (base_dt, id, customer_id, date, "
                    f"{feature_names}, credit_score) VALUES ('2025-03-02', :id, :customer_id, "
                    f":date, {feature_marks}, 'Good')"
                ),
                [_feature_row("f1", "CUS_a")],
            )
            columns = "request_id, customer_id, features, prediction, confidence, elapsed_ms"
            connection.execute(
                text(
                    f"INSERT INTO credit_predictions_api_log ({columns}, model_version) VALUES "
                    "(:request_id, :customer_id, :features, :prediction, :confidence, "
                    ":elapsed_ms, :model_version)"
                ),
                [_log_row(f"req-{n}", "CUS_a") for n in range(5)],
            )
            if "credit_score_predictions" in tables:
                connection.execute(
                    text(
                        "INSERT INTO credit_score_predictions VALUES "
                        "('2025-03-01', 'CUS_a', 'Good', 0.7, 0.2, 0.1, 'm:1')"
                    )
                )
            if "credit_model_monitoring" in tables:
                connection.execute(
                    text(
                        "INSERT INTO credit_model_monitoring VALUES "
                        "('2025-03-01', 'm:1', 'all', 'live_accuracy', '', 0.61)"
                    )
                )
        return _snapshot(engine, tables)
    finally:
        engine.dispose()


def _snapshot(engine, tables, columns_of: dict[str, list[str]] | None = None):
    found = {}
    with engine.connect() as connection:
        for table in sorted(tables):
            names = (columns_of or {}).get(table) or [
                column["name"] for column in inspect(connection).get_columns(table)
            ]
            listed = ", ".join(names)
            found[table] = sorted(
                connection.execute(text(f"SELECT {listed} FROM {table}")).all(), key=repr
            )
    return found


def _columns(engine, tables) -> dict[str, list[str]]:
    return {
        table: [column["name"] for column in inspect(engine).get_columns(table)] for table in tables
    }


def _differences(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return schema_differences(connection)
    finally:
        engine.dispose()


def _revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return migrations.current_revision(connection)
    finally:
        engine.dispose()


# --- the head is the schema -------------------------------------------------------------


def test_one_head_and_revision_files_in_order():
    scripts = list(migrations.script_directory().walk_revisions())
    heads = migrations.script_directory().get_heads()
    assert heads == [migrations.head_revision()]
    files = sorted(path.name for path in migrations.VERSIONS_DIR.glob("[0-9]*.py"))
    revisions = [script.revision for script in reversed(scripts)]  # base first
    assert [name.removesuffix(".py") for name in files] == revisions
    for script in scripts:
        assert len(script.revision) <= 32, f"{script.revision} does not fit the version table"


def test_an_empty_database_migrated_to_the_head_is_the_schema(store_url):
    init_schema(store_url).dispose()
    assert _revision(store_url) == migrations.head_revision()
    assert _differences(store_url) == []
    engine = make_engine(store_url)
    try:
        assert set(inspect(engine).get_table_names()) == {*TABLE_NAMES, migrations.VERSION_TABLE}
    finally:
        engine.dispose()


def test_the_comparison_finds_a_column_the_migrations_lack(sqlite_url):
    """What guards the next column added to core/schema.py without a migration: the head
    compared with the schema plus one column reports exactly that column."""
    init_schema(sqlite_url).dispose()
    grown = MetaData()
    for table in metadata.sorted_tables:
        copy = table.to_metadata(grown)
        if table.name == credit_predictions_api_log.name:
            copy.append_column(Column("reasons_added_later", Integer, nullable=True))
    engine = make_engine(sqlite_url)
    try:
        with engine.connect() as connection:
            found = schema_differences(connection, grown)
    finally:
        engine.dispose()
    assert [(diff[0], diff[2], diff[3].name) for diff in found] == [
        ("add_column", credit_predictions_api_log.name, "reasons_added_later")
    ]


def test_committed_ddl_is_an_empty_database_at_the_head(store_url):
    """sql/schema_<dialect>.sql (the stack's MariaDB runs it on its first start) builds the
    schema and stamps the head, so `init` finds nothing to migrate."""
    name = f"schema_{store_dialect(store_url)}.sql"
    ddl = next(text_ for path, text_ in generated_sql_files().items() if path.name == name)
    run_sql_file(store_url, ddl)
    assert _revision(store_url) == migrations.head_revision()
    assert _differences(store_url) == []
    init_schema(store_url).dispose()
    assert _revision(store_url) == migrations.head_revision()


@pytest.mark.mariadb
def test_every_way_to_a_mariadb_store_makes_the_same_tables(mariadb_url):
    """The DDL MariaDB reports for every table (types, collations, column order, keys,
    CHECKs) is the same after migrating an empty database, running the DDL rendered from
    core/schema.py (sql/schema_mariadb.sql), and upgrading a database of each earlier
    release: what autogenerate does not compare (collations, CHECK constraints) included."""
    server = make_engine(mariadb_url.rsplit("/", 1)[0])
    made = []
    ways = ["migrate", "sql", *RELEASES]
    try:
        for way in ways:
            name = f"{mariadb_url.rsplit('/', 1)[1]}_{len(made)}"
            with server.begin() as connection:
                connection.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
            made.append(name)
            url = f"{mariadb_url.rsplit('/', 1)[0]}/{name}"
            if way == "sql":
                run_sql_file(url, render_ddl("mariadb"))  # core/schema.py, rendered
            elif way in RELEASES:
                make_release_database(url, way)
            init_schema(url).dispose()
        shown = []
        for name in made:
            with server.connect() as connection:
                shown.append(
                    {
                        table: re.sub(
                            r" AUTO_INCREMENT=\d+",
                            "",
                            connection.execute(text(f"SHOW CREATE TABLE `{name}`.{table}")).one()[
                                1
                            ],
                        )
                        for table in TABLE_NAMES
                    }
                )
        for way, tables in zip(ways[1:], shown[1:], strict=True):
            for table in TABLE_NAMES:
                assert tables[table] == shown[0][table], f"{way}: {table}"
        log = shown[0][credit_predictions_api_log.name]
        binary = "`customer_id` varchar(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin"
        assert binary in log
    finally:
        with server.begin() as connection:
            for name in made:
                connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        server.dispose()


# --- earlier releases are upgraded in place -----------------------------------------------


@pytest.mark.parametrize("release", RELEASES)
def test_init_upgrades_an_earlier_release_in_place_without_loss(store_url, release, cli_runner):
    make_release_database(store_url, release)
    engine = make_engine(store_url)
    old_tables = set(inspect(engine).get_table_names())
    old_columns = _columns(engine, old_tables)
    engine.dispose()
    assert migrations.VERSION_TABLE not in old_tables
    before = fill_release_database(store_url)

    result = cli_runner.invoke(main, ["init", "--db-url", store_url])
    assert result.exit_code == 0, result.output
    assert f"(migration {migrations.head_revision()})" in result.output
    assert _revision(store_url) == migrations.head_revision()
    assert _differences(store_url) == []

    init_schema(store_url).dispose()  # again: nothing to do
    engine = make_engine(store_url)
    try:
        # Every row of every table, in the columns that release had, is still there.
        assert _snapshot(engine, old_tables, old_columns) == before
        with engine.begin() as connection:
            log = credit_predictions_api_log
            old = connection.execute(select(log.c.id, log.c.role).order_by(log.c.id)).all()
            assert [role for _, role in old] == ["champion"] * 5  # earlier rows: the champion
            connection.execute(
                insert(log), [{**_log_row("Req-0", "cus_a", {"age": 30}), "role": "shadow"}]
            )  # a request id differing only in case from an old one is another request
            newest = connection.execute(select(log.c.id).where(log.c.request_id == "Req-0"))
            assert newest.scalar_one() > max(row_id for row_id, _ in old)
        with (
            pytest.raises((IntegrityError, OperationalError), match=ROLE_CHECK),
            engine.begin() as connection,
        ):
            connection.execute(insert(log), [{**_log_row("bad-role", "c", {}), "role": "other"}])
        with engine.begin() as connection:
            assert_case_distinct_customers(connection)
    finally:
        engine.dispose()


def assert_case_distinct_customers(connection) -> None:
    """After the upgrade "CUS_a", "CUS_A", "cus_a" and "cus_a " are different customers in
    every keyed table and in lookups."""
    predictions = credit_score_predictions
    connection.execute(
        insert(predictions),
        [
            {
                "score_dt": DAY,
                "customer_id": customer,
                "prediction": "Poor",
                "confidence_good": 0.1,
                "confidence_standard": 0.2,
                "confidence_poor": 0.7,
                "model_version": "m:2",
            }
            for customer in ("CUS_A", "cus_a", "cus_a ")
        ],
    )
    stored = connection.execute(
        select(predictions.c.customer_id).where(predictions.c.score_dt == DAY)
    ).scalars()
    assert {"CUS_A", "cus_a", "cus_a "} <= set(stored)
    connection.execute(
        insert(credit_score_features),
        [_feature_row("f3", "CUS_A"), _feature_row("f4", "cus_a"), _feature_row("f5", "cus_a ")],
    )
    features = credit_score_features
    for customer, row_id in (("CUS_a", "f1"), ("CUS_A", "f3"), ("cus_a", "f4"), ("cus_a ", "f5")):
        found = connection.execute(
            select(features.c.id).where(features.c.customer_id == customer)
        ).scalars()
        assert list(found) == [row_id]
    target = credit_score_features_target
    connection.execute(
        insert(target),
        [
            {**_feature_row("f1", customer), "base_dt": date(2025, 3, 2), "credit_score": "Poor"}
            for customer in ("CUS_A", "cus_a", "cus_a ")
        ],
    )


@pytest.mark.mariadb
def test_before_the_upgrade_ids_differing_in_case_collided(mariadb_url):
    """The defect the migration removes, shown on the last release's own tables."""
    make_release_database(mariadb_url, "last_unversioned_release")
    engine = make_engine(mariadb_url)
    row = (
        "INSERT INTO credit_score_predictions (score_dt, customer_id, prediction, confidence_good,"
        " confidence_standard, confidence_poor, model_version)"
        " VALUES ('2025-03-01', '{}', 'Good', 1, 0, 0, 'm')"
    )
    try:
        with engine.begin() as connection:
            connection.execute(text(row.format("c_a")))
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(text(row.format("C_A")))
    finally:
        engine.dispose()
    init_schema(mariadb_url).dispose()
    engine = make_engine(mariadb_url)
    try:
        with engine.begin() as connection:
            connection.execute(text(row.format("C_A")))
            count = connection.execute(text("SELECT COUNT(*) FROM credit_score_predictions"))
            assert count.scalar_one() == 2
    finally:
        engine.dispose()


def test_processes_starting_together_upgrade_once(store_url):
    """API replicas and the Dagster code server may all start on an old store at once: the
    schema lock lets one migrate while the others wait, then find the head."""
    make_release_database(store_url, "seed_release")
    engine = make_engine(store_url)
    old_columns = _columns(engine, inspect(engine).get_table_names())
    engine.dispose()
    before = fill_release_database(store_url)
    errors: list[BaseException] = []
    barrier = threading.Barrier(5)

    def start() -> None:
        barrier.wait()
        try:
            init_schema(store_url).dispose()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors[0]
    assert _revision(store_url) == migrations.head_revision()
    engine = make_engine(store_url)
    try:
        with engine.connect() as connection:
            versions = connection.execute(
                text(f"SELECT version_num FROM {migrations.VERSION_TABLE}")
            ).all()
        assert versions == [(migrations.head_revision(),)]
        assert _snapshot(engine, before, old_columns) == before
    finally:
        engine.dispose()


@contextmanager
def _schema_lock_held(engine, seconds: float):
    """Another process's migration: the schema lock held in a thread for `seconds`."""
    taken = threading.Event()

    def hold() -> None:
        with schema_lock(engine):
            taken.set()
            time.sleep(seconds)

    holder = threading.Thread(target=hold)
    holder.start()
    assert taken.wait(10)
    try:
        yield
    finally:
        holder.join(seconds + 10)


def test_a_process_waits_out_a_long_migration_saying_so(store_url, caplog):
    """A migration that rebuilds a large table takes minutes: a waiter logs while it waits
    and gets the lock once the migration is over (it gave up after 60 s before)."""
    engine = init_schema(store_url)
    try:
        with _schema_lock_held(engine, 2.0), caplog.at_level("WARNING"):
            started = time.monotonic()
            with schema_lock(engine, timeout=30, report_seconds=0.5):
                waited = time.monotonic() - started
        assert waited >= 1.5
        messages = [record.getMessage() for record in caplog.records]
        assert any("waiting for another process's migration" in text for text in messages)
    finally:
        engine.dispose()


def test_a_process_gives_up_after_the_operators_timeout(store_url, monkeypatch):
    monkeypatch.setenv(settings.SCHEMA_LOCK_TIMEOUT_ENV, "1")
    engine = init_schema(store_url)
    try:
        with _schema_lock_held(engine, 4.0):
            started = time.monotonic()
            expected = pytest.raises(FeatureStoreUnavailable, match="CREDIT_SCHEMA_LOCK_TIMEOUT")
            with expected, schema_lock(engine):
                pass
            assert time.monotonic() - started < 3.0
    finally:
        engine.dispose()


def test_a_database_a_newer_release_migrated_is_left_alone(store_url):
    """An older replica still running while a newer release migrates must not fail on a
    revision it does not know; it checks that the tables hold the columns it needs."""
    init_schema(store_url).dispose()
    engine = make_engine(store_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(f"UPDATE {migrations.VERSION_TABLE} SET version_num = '9999_from_later'")
            )
    finally:
        engine.dispose()
    init_schema(store_url).dispose()
    assert _revision(store_url) == "9999_from_later"
    engine = make_engine(store_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE credit_model_monitoring"))
    finally:
        engine.dispose()
    with pytest.raises(SchemaMismatch, match="credit_model_monitoring is missing"):
        init_schema(store_url).dispose()


# A byte-compared key column, the revision before the one that made it so, the tables
# holding it, and two rows of one table whose keys differ only in case.
COLLATION_MIGRATIONS = {
    "customer_id": (
        "0001_platform_tables",
        ("credit_predictions_api_log", "credit_score_predictions", *SEED_SOURCE_TABLES),
        "credit_score_predictions",
        "INSERT INTO credit_score_predictions (score_dt, customer_id, prediction,"
        " confidence_good, confidence_standard, confidence_poor, model_version)"
        " VALUES ('2025-03-01', 'c_a', 'Good', 0.7, 0.2, 0.1, 'm:1'), "
        "('2025-03-01', 'C_A', 'Good', 0.7, 0.2, 0.1, 'm:1')",
    ),
    "id": (
        "0003_reason_codes",
        SEED_SOURCE_TABLES,
        "credit_score",
        "INSERT INTO credit_score (id, customer_id, date, credit_score) VALUES "
        "('0x1a2b', 'c', '2025-03-01', 'Good'), ('0x1A2B', 'c', '2025-03-01', 'Poor')",
    ),
}


@pytest.mark.mariadb
@pytest.mark.parametrize("column", sorted(COLLATION_MIGRATIONS))
def test_a_collation_migration_goes_back_and_forth(mariadb_url, column):
    """The key compares bytes at the head and by the table's default before its revision;
    going back is refused while two keys differ only in case, and no row is lost."""
    before, tables, table, two_rows = COLLATION_MIGRATIONS[column]
    init_schema(mariadb_url).dispose()
    engine = make_engine(mariadb_url)
    query = text(
        "SELECT TABLE_NAME, COLLATION_NAME FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = DATABASE() AND COLUMN_NAME = :column AND TABLE_NAME IN :tables"
    ).bindparams(bindparam("tables", expanding=True))
    values = {"column": column, "tables": list(tables)}

    def collations(connection) -> list[str]:
        return [row[1] for row in connection.execute(query, values)]

    try:
        with engine.connect() as connection:
            assert collations(connection) == ["utf8mb4_nopad_bin"] * len(tables)
            migrations.downgrade(connection, before)
            assert collations(connection) == ["utf8mb4_general_ci"] * len(tables)
            migrations.upgrade(connection)
            assert collations(connection) == ["utf8mb4_nopad_bin"] * len(tables)
            connection.execute(text(two_rows))
            connection.commit()
            # Two keys the binary collation tells apart would collide: refused.
            with pytest.raises(IntegrityError):
                migrations.downgrade(connection, before)
            connection.rollback()
            count = connection.execute(text(f"SELECT COUNT(*) FROM {table}"))
            assert count.scalar_one() == 2
    finally:
        engine.dispose()


def test_a_new_revision_is_numbered_after_the_last():
    assert next_revision_id("Prediction log: reasons", ["0002_x", "0001_y"]) == (
        "0003_prediction_log_reasons"
    )
    long = next_revision_id("a very long message " * 5, ["0009_z"])
    assert long.startswith("0010_a_very_long") and len(long) <= 32


def test_db_revision_writes_the_migration_of_a_new_column(
    cli_runner, monkeypatch, tmp_path, sqlite_url
):
    """README "Changing a table", step by step, on a copy of the migrations: a column added
    to the schema makes the head disagree; `credit-platform db revision` writes the
    migration that adds it; upgrading then makes the database the schema again."""
    import shutil

    copy = tmp_path / "migrations"
    shutil.copytree(migrations.MIGRATIONS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(migrations, "MIGRATIONS_DIR", copy)
    monkeypatch.setattr(migrations, "VERSIONS_DIR", copy / "versions")
    migrations.head_revision.cache_clear()
    migrations.known_revisions.cache_clear()
    grown = MetaData()
    for table in metadata.sorted_tables:
        added = table.to_metadata(grown)
        if table.name == credit_predictions_api_log.name:
            added.append_column(Column("reasons_added_later", Integer, nullable=True))
    monkeypatch.setattr("credit_platform.core.schema.metadata", grown)
    head = migrations.head_revision()
    expected = f"{int(head[:4]) + 1:04d}_log_reasons_added_later"
    try:
        init_schema(sqlite_url).dispose()
        assert [diff[0] for diff in _differences(sqlite_url)] == ["add_column"]

        result = cli_runner.invoke(main, ["db", "revision", "-m", "log: reasons added later"])
        assert result.exit_code == 0, result.output
        written = copy / "versions" / f"{expected}.py"
        assert f"wrote {written}" in result.output
        source = written.read_text()
        assert re.search(rf"down_revision: str \| None = .{head}.", source)
        assert "reasons_added_later" in source

        migrations.head_revision.cache_clear()
        migrations.known_revisions.cache_clear()
        assert migrations.head_revision() == expected
        init_schema(sqlite_url).dispose()
        assert _revision(sqlite_url) == expected
        assert _differences(sqlite_url) == []
    finally:
        migrations.head_revision.cache_clear()
        migrations.known_revisions.cache_clear()


def test_the_prediction_service_upgrades_an_earlier_store_at_start(store_url, tmp_path):
    """The stack's start on a volume of an earlier release: an API replica's log writer
    migrates the store before its first row (and logs into the upgraded table)."""
    from datetime import datetime

    from api.prediction_log import PredictionLogger, PredictionLogRow

    make_release_database(store_url, "seed_release")
    engine = make_engine(store_url)
    old_columns = _columns(engine, inspect(engine).get_table_names())
    engine.dispose()
    before = fill_release_database(store_url)
    log = PredictionLogger(store_url, tmp_path / "spool")
    try:
        outcome = log.write(
            [
                PredictionLogRow(
                    request_id="REQ-0",
                    customer_id="cus_a",
                    features={"age": 30},
                    prediction="Standard",
                    confidence=0.5,
                    elapsed_ms=0.2,
                    model_version="credit_score_classifier:new",
                    created_at=datetime(2025, 3, 1, 12, 0, 0, 123456),
                    role="canary",
                )
            ]
        )
    finally:
        log.close()
    assert outcome is None and log.problem is None
    assert _revision(store_url) == migrations.head_revision()
    assert _differences(store_url) == []
    engine = make_engine(store_url)
    try:
        after = _snapshot(engine, before, old_columns)
        log_name = credit_predictions_api_log.name
        for name, rows in before.items():
            if name != log_name:
                assert after[name] == rows, name
        old_rows = {tuple(row) for row in before[log_name]}
        assert old_rows < {tuple(row) for row in after[log_name]}
        assert len(after[log_name]) == len(old_rows) + 1
        table = credit_predictions_api_log
        with engine.connect() as connection:
            roles = dict(connection.execute(select(table.c.request_id, table.c.role)).all())
        assert roles == {**{f"req-{n}": "champion" for n in range(5)}, "REQ-0": "canary"}
    finally:
        engine.dispose()


def test_a_database_shared_with_mlflow_or_dagster_keeps_their_alembic_version(store_url):
    """MLflow's and Dagster's SQL stores record their own migrations in `alembic_version`;
    an operator may give the feature store the same database. Neither record is touched."""
    engine = make_engine(store_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
            )
            connection.execute(text("INSERT INTO alembic_version VALUES ('1b5f0d9ad7c1')"))
    finally:
        engine.dispose()
    init_schema(store_url).dispose()
    assert _revision(store_url) == migrations.head_revision()
    assert _differences(store_url) == []
    engine = make_engine(store_url)
    try:
        with engine.connect() as connection:
            theirs = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        assert theirs == [("1b5f0d9ad7c1",)]
    finally:
        engine.dispose()


def test_db_status_names_the_stores_migration_and_the_head(cli_runner, sqlite_url):
    head = migrations.head_revision()
    result = cli_runner.invoke(main, ["db", "status", "--db-url", sqlite_url])
    assert result.exit_code == 0, result.output
    assert "at:   no migration" in result.output and f"head: {head}" in result.output
    assert "credit-platform init" in result.output
    make_release_database(sqlite_url, "seed_release")
    assert (
        "at:   no migration"
        in cli_runner.invoke(main, ["db", "status", "--db-url", sqlite_url]).output
    )
    assert cli_runner.invoke(main, ["init", "--db-url", sqlite_url]).exit_code == 0
    result = cli_runner.invoke(main, ["db", "status", "--db-url", sqlite_url])
    assert f"at:   {head}" in result.output and "credit-platform init" not in result.output
    unreachable = cli_runner.invoke(
        main, ["db", "status", "--db-url", "mysql+pymysql://root:hunter2@127.0.0.1:1/mlops"]
    )
    assert unreachable.exit_code == 1 and "cannot read the migration" in unreachable.output
    assert "hunter2" not in unreachable.output


def test_downgrading_to_base_removes_what_the_migrations_made(store_url):
    init_schema(store_url).dispose()
    engine = make_engine(store_url)
    try:
        with engine.connect() as connection:
            migrations.downgrade(connection, "base")
            assert migrations.current_revision(connection) is None
        assert set(inspect(engine).get_table_names()) <= {migrations.VERSION_TABLE}
    finally:
        engine.dispose()
    init_schema(store_url).dispose()
    assert _differences(store_url) == []


def test_two_branches_adding_a_migration_each_are_caught_at_merge(monkeypatch, tmp_path):
    """Two helpers each add `0003_...` on top of the same head: after the merge the
    migrations have two heads, and everything that migrates refuses, naming both."""
    import shutil

    copy = tmp_path / "migrations"
    shutil.copytree(migrations.MIGRATIONS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    head = migrations.head_revision()
    for name in ("0003_reasons", "0003_jobs"):
        (copy / "versions" / f"{name}.py").write_text(
            f"revision = {name!r}\ndown_revision = {head!r}\nbranch_labels = None\n"
            "depends_on = None\n\n\ndef upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n"
        )
    monkeypatch.setattr(migrations, "MIGRATIONS_DIR", copy)
    migrations.head_revision.cache_clear()
    try:
        with pytest.raises(migrations.MigrationError, match="2 heads.*0003_jobs, 0003_reasons"):
            migrations.head_revision()
    finally:
        migrations.head_revision.cache_clear()
