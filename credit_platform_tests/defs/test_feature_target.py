"""The feature-target build against hand-computed expectations, on SQLite and MariaDB."""

from __future__ import annotations

import threading
import time
from datetime import date, timedelta

import pytest
from dagster import IntMetadataValue, TableSchemaMetadataValue, instance_for_test, materialize
from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from credit_platform.core.db import init_schema, run_transaction
from credit_platform.core.feature_target_sql import EmptyPartitionError, build_partition
from credit_platform.core.features import MODEL_FEATURES
from credit_platform.core.schema import credit_score, credit_score_features
from credit_platform.core.schema import credit_score_features_target as target_table
from credit_platform.defs.assets.feature_target import credit_score_features_target
from credit_platform.defs.resources.feature_store import FeatureStoreResource

BASE = date(2025, 3, 31)


def _feature_row(row_id: str, customer: str, day: date, age: int) -> dict:
    row = {name: None for name in MODEL_FEATURES}
    row.update(
        id=row_id,
        customer_id=customer,
        date=day,
        age=age,
        annual_income=1000.0 * age,
        occupation="Engineer",
        credit_mix="Good",
        type_of_loan="Auto Loan",
    )
    return row


def _seed(engine, labelled: list[tuple[str, str, date, str]], unlabelled=()) -> None:
    with engine.begin() as connection:
        connection.execute(
            insert(credit_score),
            [dict(id=i, customer_id=c, date=d, credit_score=label) for i, c, d, label in labelled],
        )
        features = [_feature_row(i, c, d, 30 + n) for n, (i, c, d, _) in enumerate(labelled)]
        features += [_feature_row(i, c, d, 60) for i, c, d in unlabelled]
        connection.execute(insert(credit_score_features), features)


def _partition(engine, day: date) -> list[tuple]:
    target = target_table
    with engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                select(
                    target.c.id,
                    target.c.customer_id,
                    target.c.date,
                    target.c.age,
                    target.c.credit_score,
                )
                .where(target.c.base_dt == day)
                .order_by(target.c.id)
            )
        ]


@pytest.fixture
def store(store_url):
    engine = init_schema(store_url)
    yield store_url, engine
    engine.dispose()


def test_window_is_one_calendar_month_inclusive(store):
    _, engine = store
    _seed(
        engine,
        [
            ("a-before", "c1", date(2025, 2, 27), "Good"),  # one day before the window
            ("b-start", "c1", date(2025, 2, 28), "Poor"),  # 2025-03-31 minus one month
            ("c-mid", "c2", date(2025, 3, 15), "Standard"),
            ("d-end", "c3", BASE, "Good"),
            ("e-after", "c3", BASE + timedelta(days=1), "Poor"),
            ("f-nofeat", "c4", date(2025, 3, 20), "Poor"),
        ],
    )
    # A label whose features are missing is not joined: remove its feature row.
    with engine.begin() as connection:
        connection.execute(
            credit_score_features.delete().where(credit_score_features.c.id == "f-nofeat")
        )
        result = build_partition(connection, BASE, retention_days=7)

    assert result.window_start == date(2025, 2, 28)
    assert result.rows == 3
    assert result.label_counts == {"Poor": 1, "Standard": 1, "Good": 1}
    assert _partition(engine, BASE) == [
        ("b-start", "c1", date(2025, 2, 28), 31, "Poor"),
        ("c-mid", "c2", date(2025, 3, 15), 32, "Standard"),
        ("d-end", "c3", BASE, 33, "Good"),
    ]


def test_rematerialization_replaces_exactly(store):
    _, engine = store
    _seed(engine, [("x1", "c1", BASE, "Good"), ("x2", "c2", BASE, "Poor")])
    with engine.begin() as connection:
        build_partition(connection, BASE, retention_days=7)
    # The source changes: one label is corrected, one row is added.
    with engine.begin() as connection:
        connection.execute(
            credit_score.update().where(credit_score.c.id == "x2").values(credit_score="Standard")
        )
    _seed(engine, [("x3", "c3", BASE - timedelta(days=3), "Good")])
    with engine.begin() as connection:
        second = build_partition(connection, BASE, retention_days=7)

    assert second.replaced_rows == 2
    assert [(row[0], row[4]) for row in _partition(engine, BASE)] == [
        ("x1", "Good"),
        ("x2", "Standard"),
        ("x3", "Good"),
    ]
    with engine.connect() as connection:
        total = connection.execute(select(func.count()).select_from(target_table))
        assert total.scalar_one() == 3


def test_retention_drops_base_days_at_or_before_cutoff(store):
    _, engine = store
    _seed(
        engine, [(f"r{n}", "c1", date(2025, 3, 1) + timedelta(days=n), "Good") for n in range(31)]
    )
    days = [BASE - timedelta(days=n) for n in (8, 7, 6, 0)]
    for day in days:
        with engine.begin() as connection:
            build_partition(connection, day, retention_days=7)
    kept = {day for day in days if _partition(engine, day)}
    # Building BASE removed base days <= BASE - 7; BASE - 6 and BASE itself remain.
    assert kept == {BASE - timedelta(days=6), BASE}


def test_retention_zero_keeps_everything(store):
    _, engine = store
    _seed(engine, [("k1", "c1", date(2025, 3, 1), "Good")])
    for day in (date(2025, 3, 1), date(2025, 3, 31)):
        with engine.begin() as connection:
            build_partition(connection, day, retention_days=0)
    assert _partition(engine, date(2025, 3, 1)) and _partition(engine, date(2025, 3, 31))


def test_empty_window_fails_and_keeps_previous_contents(store):
    _, engine = store
    _seed(engine, [("p1", "c1", BASE, "Good")])
    with engine.begin() as connection:
        build_partition(connection, BASE, retention_days=7)
    before = _partition(engine, BASE)
    with engine.begin() as connection:
        connection.execute(credit_score.delete())
    expected = "2025-03-31.*credit_score.*credit_score_features"
    with pytest.raises(EmptyPartitionError, match=expected), engine.begin() as connection:
        build_partition(connection, BASE, retention_days=7)
    assert _partition(engine, BASE) == before


def test_asset_materializes_with_metadata(store):
    url, engine = store
    _seed(
        engine, [("m1", "c1", BASE, "Good"), ("m2", "c2", BASE, "Poor"), ("m3", "c3", BASE, "Poor")]
    )
    result = materialize(
        [credit_score_features_target],
        partition_key=BASE.isoformat(),
        resources={"feature_store": FeatureStoreResource(url=url)},
    )
    assert result.success
    materialization = result.asset_materializations_for_node("credit_score_features_target")[0]
    metadata = materialization.metadata
    assert metadata["rows_poor"].value == 2
    assert "| Poor | 2 |" in metadata["label_distribution"].value
    # Dagster's catalog conventions: row count, the schema's columns, the table's name.
    assert isinstance(metadata["dagster/row_count"], IntMetadataValue)
    assert metadata["dagster/row_count"].value == 3
    schema = metadata["dagster/column_schema"]
    assert isinstance(schema, TableSchemaMetadataValue)
    columns = {column.name: column for column in schema.schema.columns}
    assert list(columns) == [column.name for column in target_table.columns]
    assert columns["base_dt"].type == "DATE" and not columns["base_dt"].constraints.nullable
    assert columns["age"].constraints.nullable
    table_name = metadata["dagster/table_name"].value
    database = make_url(url).database
    expected_name = "credit_score_features_target"
    assert table_name == (
        expected_name if url.startswith("sqlite") else f"{database}.{expected_name}"
    )
    # The catalog shows the schema before the first materialization too.
    definition = credit_score_features_target.specs_by_key[
        credit_score_features_target.key
    ].metadata
    assert definition["dagster/column_schema"].columns == schema.schema.columns


def test_asset_fails_clearly_on_empty_day(sqlite_url):
    init_schema(sqlite_url).dispose()
    result = materialize(
        [credit_score_features_target],
        partition_key="2025-01-05",
        resources={"feature_store": FeatureStoreResource(url=sqlite_url)},
        raise_on_error=False,
    )
    assert not result.success
    failure = result.failure_data_for_node("credit_score_features_target")
    message = str(failure.error) if failure else ""
    assert "2025-01-05" in message and "credit_score" in message


def test_unreachable_database_is_named(tmp_path):
    url = "mysql+pymysql://root:secret@127.0.0.1:1/nowhere"
    result = materialize(
        [credit_score_features_target],
        partition_key="2025-01-05",
        resources={"feature_store": FeatureStoreResource(url=url)},
        raise_on_error=False,
    )
    assert not result.success
    message = str(result.failure_data_for_node("credit_score_features_target").error)
    assert "cannot reach the feature store" in message and "127.0.0.1:1" in message
    assert "secret" not in message


def _short_lock_waits(url: str) -> str:
    """The URL with a MariaDB session that gives up a lock wait after one second."""
    query = {"init_command": "SET SESSION innodb_lock_wait_timeout = 1"}
    return make_url(url).update_query_dict(query).render_as_string(hide_password=False)


def test_asset_outlasts_a_writer_holding_its_rows(mariadb_url):
    """Another transaction holds the day's rows past the lock wait timeout: the build is
    rolled back, rerun once the rows are free, and says so in the run's log."""
    engine = init_schema(mariadb_url)
    labelled = [("m1", "c1", BASE, "Good"), ("m2", "c2", BASE, "Poor")]
    _seed(engine, labelled)
    with engine.begin() as connection:
        build_partition(connection, BASE, retention_days=7)
    holder = engine.connect()
    transaction = holder.begin()
    holder.execute(
        select(target_table.c.id).where(target_table.c.base_dt == BASE).with_for_update()
    )
    # Held well past the run's start, however slow (a busy CI machine took over 2.5 s to
    # start it, so the build found the rows free), and freed long before the build's last
    # attempt (about 11 s of waits and pauses after its first).
    release = threading.Timer(6.0, transaction.commit)
    release.start()
    try:
        with instance_for_test() as instance:
            result = materialize(
                [credit_score_features_target],
                partition_key=BASE.isoformat(),
                resources={
                    "feature_store": FeatureStoreResource(url=_short_lock_waits(mariadb_url))
                },
                instance=instance,
                raise_on_error=False,
            )
            messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    finally:
        release.join()
        holder.close()
    assert result.success, result.failure_data_for_node("credit_score_features_target")
    assert any("lost a lock conflict" in message and "1205" in message for message in messages)
    assert [row[:2] for row in _partition(engine, BASE)] == [("m1", "c1"), ("m2", "c2")]
    engine.dispose()


def test_a_build_chosen_as_a_deadlocks_victim_is_rerun(mariadb_url, caplog):
    """A writer locks the day's labels, the build waits for them holding the day's rows,
    then the writer wants those rows: MariaDB breaks the deadlock by rolling back the
    lighter transaction, the build, which is then rerun and lands."""
    engine = init_schema(mariadb_url)
    _seed(engine, [("m1", "c1", BASE, "Good"), ("m2", "c2", BASE, "Poor")])
    with engine.begin() as connection:
        build_partition(connection, BASE, retention_days=7)
        connection.execute(text("CREATE TABLE ballast (n INT)"))
    writer = engine.connect()
    transaction = writer.begin()
    # Rows the writer changed make it the heavier transaction, so not the victim.
    writer.execute(text("INSERT INTO ballast (n) SELECT seq FROM seq_1_to_5000"))
    writer.execute(select(credit_score.c.id).with_for_update())
    outcome: list = []

    def build() -> None:
        try:
            outcome.append(
                run_transaction(engine, lambda connection: build_partition(connection, BASE, 7))
            )
        except BaseException as error:  # the test fails naming it
            outcome.append(error)

    builder = threading.Thread(target=build)
    with caplog.at_level("WARNING", logger="credit_platform.core.db"):
        builder.start()
        time.sleep(1.0)  # the build has replaced the day's rows and waits for the labels
        writer.execute(delete(target_table).where(target_table.c.base_dt == BASE))
        transaction.commit()
        builder.join(timeout=60)
    writer.close()
    assert len(outcome) == 1 and not isinstance(outcome[0], BaseException), outcome
    assert outcome[0].rows == 2
    assert any("1213" in record.getMessage() for record in caplog.records)
    assert [row[:2] for row in _partition(engine, BASE)] == [("m1", "c1"), ("m2", "c2")]
    engine.dispose()


def test_errors_other_than_lock_conflicts_are_not_rerun(store):
    """A refusal of the rows (here a duplicate key) would fail again: raised at once."""
    _, engine = store
    _seed(engine, [("m1", "c1", BASE, "Good")])
    calls = []

    def duplicate(connection) -> None:
        calls.append(1)
        connection.execute(
            insert(credit_score), [dict(id="m1", customer_id="c1", date=BASE, credit_score="Poor")]
        )

    with pytest.raises(IntegrityError):
        run_transaction(engine, duplicate)
    assert len(calls) == 1
