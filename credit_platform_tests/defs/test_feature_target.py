"""The feature-target build against hand-computed expectations, on SQLite and MariaDB."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from dagster import IntMetadataValue, TableSchemaMetadataValue, materialize
from sqlalchemy import func, insert, select
from sqlalchemy.engine import make_url

from credit_platform.core.db import init_schema
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
