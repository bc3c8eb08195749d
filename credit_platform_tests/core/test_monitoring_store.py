"""The monitoring's reads: the day's log slice (MariaDB's aggregated fetch gives exactly
what the row-by-row stream gives), the first-label query and the day's replacement."""

from __future__ import annotations

from datetime import date, datetime

import pandas as pd
import pytest
from sqlalchemy import insert

from credit_platform.core import json_lines, monitoring_store
from credit_platform.core.db import init_schema
from credit_platform.core.features import MODEL_FEATURES
from credit_platform.core.monitoring import UNREADABLE, decode_log_chunk, first_labels
from credit_platform.core.monitoring_store import (
    _day_rows,
    _streamed_rows,
    day_bounds,
    read_day,
    read_first_labels,
    read_log_chunks,
    replace_day,
)
from credit_platform.core.schema import credit_predictions_api_log, credit_score
from credit_platform_tests.json_lines_fixtures import record_parses

DAY = date(2025, 3, 4)
ODD_TEXT = 'say "hi" \\ back\nslash ü 顧客 😀'


def _log(index: int, features, *, day: date = DAY, role: str = "champion") -> dict:
    return {
        "request_id": f"q{day}-{index}",
        "customer_id": f"c{index % 7}",
        "features": features,
        "prediction": ("Good", "Standard", "Poor")[index % 3],
        "confidence": 0.5,
        "elapsed_ms": float(index),
        "model_version": f"credit_score_classifier:v{index % 2}",
        "role": role,
        "created_at": datetime.combine(day, datetime.min.time()).replace(hour=index % 24),
    }


def _fill(url: str) -> None:
    rows = []
    for index in range(250):
        features = {name: (index if name == "age" else None) for name in MODEL_FEATURES}
        features["occupation"] = "Doctor" if index % 2 else "Lawyer"
        features["type_of_loan"] = "Auto Loan, and Payday Loan"
        if index == 7:
            features["occupation"] = ODD_TEXT
            features["annual_income"] = 0.1 + 0.2
        rows.append(_log(index, features))
    rows.append(_log(250, "a JSON string, no object"))  # unreadable, counted
    rows.append(_log(251, {"age": "thirty", "note": "quote ' and \\ backslash"}))
    rows.append(_log(252, {"age": 1}, day=date(2025, 3, 5)))  # another day
    rows.append(_log(253, {"age": 2}, day=date(2025, 3, 3)))
    engine = init_schema(url)
    with engine.begin() as connection:
        connection.execute(insert(credit_predictions_api_log), rows)
    engine.dispose()


def _read(url: str) -> pd.DataFrame:
    engine = init_schema(url)
    try:
        chunks = list(read_log_chunks(engine, DAY, chunk_rows=40))
    finally:
        engine.dispose()
    return pd.concat(chunks, ignore_index=True)


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("elapsed_ms").reset_index(drop=True)


def test_the_day_slice_on_sqlite_holds_exactly_the_days_rows(sqlite_url):
    _fill(sqlite_url)
    frame = _comparable(_read(sqlite_url))
    assert len(frame) == 252
    assert frame[UNREADABLE].sum() == 1
    assert frame["age"].iloc[:250].tolist() == list(range(250))
    assert pd.isna(frame["age"].iloc[251])  # a text where a number belongs


@pytest.mark.mariadb
def test_mariadb_json_lines_equal_the_row_stream_and_fall_back(mariadb_url, monkeypatch):
    _fill(mariadb_url)
    monkeypatch.setattr(monitoring_store, "MARIADB_FETCH_ROWS", 30)
    parsed = record_parses(monkeypatch, monitoring_store)
    fetched = _comparable(_read(mariadb_url))

    engine = init_schema(mariadb_url)
    start, end = day_bounds(DAY)
    with engine.connect() as connection:
        streamed = pd.concat(list(_streamed_rows(connection, _day_rows(start, end), {}, 1000)))
    engine.dispose()
    streamed = _comparable(decode_log_chunk(streamed))
    pd.testing.assert_frame_equal(fetched, streamed)
    assert fetched[UNREADABLE].sum() == 1 and len(fetched) == 252
    assert fetched.loc[7, "occupation"] == ODD_TEXT and fetched.loc[7, "customer_id"] == "c0"
    # ids 1-100 and 101-200 parse as JSON lines; 201-254 holds the features that are no
    # object and the text age, so that range is read row by row
    assert parsed == [True, True, False]

    # a range whose value comes back cut short is read row by row too
    parsed.clear()

    def cut_every_other(lines, count, schema):
        cut = len(parsed) % 2 == 0
        table = json_lines.parse_lines(lines[: len(lines) // 2] if cut else lines, count, schema)
        parsed.append(table is not None)
        return table

    monkeypatch.setattr(monitoring_store, "parse_lines", cut_every_other)
    pd.testing.assert_frame_equal(_comparable(_read(mariadb_url)), streamed)
    assert parsed == [False, True, False]


def test_first_label_query_and_the_days_replacement(store_url):
    engine = init_schema(store_url)
    labels = [
        ("l1", "c1", date(2025, 3, 3), "Poor"),
        ("l2", "c1", date(2025, 3, 6), "Good"),
        ("l3", "c1", date(2025, 3, 8), "Standard"),
        ("l4", "c2", date(2025, 4, 30), "Good"),
    ]
    with engine.begin() as connection:
        connection.execute(
            insert(credit_score),
            [
                dict(zip(("id", "customer_id", "date", "credit_score"), row, strict=True))
                for row in labels
            ],
        )
    judged = first_labels(read_first_labels(engine, DAY, 30), DAY, 30)
    assert judged.to_dict() == {"c1": "Good"}

    row = {"day": DAY, "model_version": "m", "role": "all", "metric": "requests", "feature": ""}
    replace_day(engine, DAY, [{**row, "value": 3.0}, {**row, "metric": "labelled", "value": None}])
    replace_day(engine, DAY, [{**row, "value": 5.0}])
    replace_day(engine, date(2025, 3, 5), [{**row, "day": date(2025, 3, 5), "value": 1.0}])
    stored = read_day(engine, DAY)
    engine.dispose()
    assert stored[["metric", "value"]].values.tolist() == [["requests", 5.0]]
