"""Fuzzing the prediction log's hand-written SQL literals (api/prediction_log.py) against the
real MariaDB: arbitrary text (any code point but a lone surrogate, with quotes, backslashes,
NUL and the other characters MariaDB escapes) stored and read back unchanged, under the
server's default sql_mode and under NO_BACKSLASH_ESCAPES."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from api.prediction_log import PredictionLogRow, RowNotEncodable, execute_literal_inserts
from credit_platform.core.db import init_schema, make_engine
from credit_platform.core.schema import ID_LENGTH
from credit_platform.core.schema import credit_predictions_api_log as log_table

# What a literal must survive, drawn often; the rest of Unicode drawn too.
SPECIAL = ["'", "\\", "\0", '"', "%", "%s", "\n", "\r", "\x1a", "\t", "`", "\\'", "''", "😀", "ü"]
TEXT = st.lists(
    st.one_of(
        st.sampled_from(SPECIAL),
        st.characters(blacklist_categories=("Cs",)),  # a lone surrogate is refused, below
    ),
    max_size=60,
).map("".join)

SQL_MODES = {
    "default": None,
    "NO_BACKSLASH_ESCAPES": "SET SESSION sql_mode = "
    "CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'NO_BACKSLASH_ESCAPES')",
}


def _row(customer_id: str, feature: str, version: str) -> PredictionLogRow:
    return PredictionLogRow(
        request_id=f"fuzz-{uuid.uuid4().hex}",
        customer_id=customer_id,
        features={"text": feature, feature[:20]: [feature, None, 1.5]},
        prediction="Good",
        confidence=0.75,
        elapsed_ms=1.25,
        model_version=f"credit_score_classifier:{version}",
        created_at=datetime(2025, 1, 15, 12, 0, 0, 123456),
    )


@pytest.mark.mariadb
@pytest.mark.parametrize("sql_mode", sorted(SQL_MODES))
def test_literals_round_trip_arbitrary_text(mariadb_url: str, sql_mode: str) -> None:
    init_schema(mariadb_url).dispose()
    engine = make_engine(mariadb_url)

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(customer_id=TEXT.map(lambda value: value[:ID_LENGTH]), feature=TEXT, version=TEXT)
    def round_trip(customer_id: str, feature: str, version: str) -> None:
        row = _row(customer_id, feature, version[:100])
        with engine.begin() as connection:
            if SQL_MODES[sql_mode]:
                connection.execute(text(SQL_MODES[sql_mode]))
            modes = connection.execute(text("SELECT @@SESSION.sql_mode")).scalar_one()
            assert ("NO_BACKSLASH_ESCAPES" in modes) is (sql_mode != "default")
            execute_literal_inserts(connection, [row])
        with engine.connect() as connection:
            stored = (
                connection.execute(
                    select(log_table).where(log_table.c.request_id == row.request_id)
                )
                .mappings()
                .one()
            )
        assert stored["customer_id"] == row.customer_id
        assert stored["features"] == row.features
        assert stored["model_version"] == row.model_version

    try:
        round_trip()
    finally:
        engine.dispose()


@pytest.mark.mariadb
def test_a_lone_surrogate_is_refused_not_stored(mariadb_url: str) -> None:
    init_schema(mariadb_url).dispose()
    engine = make_engine(mariadb_url)
    try:
        with pytest.raises(RowNotEncodable), engine.begin() as connection:
            execute_literal_inserts(connection, [_row("CUS_\ud800", "x", "v")])
        with engine.connect() as connection:
            assert connection.execute(select(log_table.c.id)).all() == []
    finally:
        engine.dispose()
