"""The monitoring's reads and writes in the feature store.

It reads the day's log in chunks, the labels that judge it and a model's training rows,
and writes `credit_model_monitoring`.

Every statement has bound parameters; the heavy work (the first label per customer, the
day's slice of the log) is done by the database, the rest by `core.monitoring` on columns.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
from sqlalchemy import Text, and_, delete, func, insert, select, text, type_coerce
from sqlalchemy.engine import Connection, Engine

from credit_platform.core.db import is_mariadb, run_transaction
from credit_platform.core.feature_target_sql import window_start_for
from credit_platform.core.features import MODEL_FEATURES, TARGET
from credit_platform.core.json_lines import (
    JSON,
    NUMBER,
    TEXT,
    LineField,
    allow_long_values,
    feature_arrow_type,
    lines_sql,
    parse_lines,
    rows_per_value,
)
from credit_platform.core.monitoring import (
    DECODED_LOG_COLUMNS,
    LABELLED,
    LIVE_ACCURACY,
    UNREADABLE,
    decode_log_chunk,
    label_window,
)
from credit_platform.core.prefetch import prefetched
from credit_platform.core.schema import (
    MONITORING_ALL_ROLES,
    credit_model_monitoring,
    credit_predictions_api_log,
    credit_score,
    credit_score_features,
)

LOG_COLUMNS = (
    "customer_id",
    "features",
    "prediction",
    "confidence",
    "elapsed_ms",
    "model_version",
    "role",
)
DEFAULT_CHUNK_ROWS = 50_000
# Rows of a model's training window read for its reference profile: quantiles and shares
# are exact enough on this many, and a wide window then costs no more than this.
DEFAULT_REFERENCE_ROWS = 200_000


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """[start, end) of a day in the log's naive-UTC created_at."""
    start = datetime.combine(day, time())
    return start, start + timedelta(days=1)


def read_log_chunks(
    engine: Engine, day: date, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> Iterator[pd.DataFrame]:
    """The log rows created on `day` (UTC), about `chunk_rows` at a time, decoded for
    `DayMonitor.add_chunk` (`monitoring.decode_log_chunk`: one column per model feature and
    whether the row's features were readable). On MariaDB the rows travel as JSON lines
    (`mariadb_log_chunks`); elsewhere they are streamed row by row."""
    if is_mariadb(engine.dialect.name):
        yield from mariadb_log_chunks(engine, day, chunk_rows)
        return
    start, end = day_bounds(day)
    with engine.connect() as connection:
        for raw in _streamed_rows(connection, _day_rows(start, end), {}, chunk_rows):
            yield decode_log_chunk(raw)


def _day_rows(start: datetime, end: datetime, *extra):
    log = credit_predictions_api_log
    return select(
        log.c.customer_id,
        type_coerce(log.c.features, Text).label("features"),
        log.c.prediction,
        log.c.confidence,
        log.c.elapsed_ms,
        log.c.model_version,
        log.c.role,
    ).where(log.c.created_at >= start, log.c.created_at < end, *extra)


def _streamed_rows(connection, statement, parameters, chunk_rows: int) -> Iterator[pd.DataFrame]:
    result = connection.execution_options(stream_results=True, yield_per=chunk_rows).execute(
        statement, parameters
    )
    for partition in result.partitions(chunk_rows):
        yield pd.DataFrame(partition, columns=list(LOG_COLUMNS))


# On MariaDB one fetch returns this many log rows at most, as one value of JSON lines
# (`core.json_lines`); the value must fit the server's max_allowed_packet, hence the
# generous size estimate per row.
MARIADB_FETCH_ROWS = 20_000
ESTIMATED_ROW_BYTES = 1_500

# A log row as a JSON line: short keys, the features object spliced in as stored.
_LOG_LINE = (
    LineField("customer_id", "customer_id", TEXT),
    LineField("prediction", "prediction", TEXT),
    LineField("confidence", "confidence", NUMBER),
    LineField("elapsed_ms", "elapsed_ms", NUMBER),
    LineField("model_version", "model_version", TEXT),
    LineField("role", "role", TEXT),
    LineField("features", "features", JSON),
)


def _log_line_schema() -> pa.Schema:
    features = [(name, feature_arrow_type(name)) for name in MODEL_FEATURES]
    return pa.schema(
        [
            ("customer_id", pa.string()),
            ("prediction", pa.string()),
            ("confidence", pa.float64()),
            ("elapsed_ms", pa.float64()),
            ("model_version", pa.string()),
            ("role", pa.string()),
            ("features", pa.struct(features)),
        ]
    )


def mariadb_log_chunks(engine: Engine, day: date, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The day's log rows fetched in id ranges, each range as one value of JSON lines
    parsed by Arrow; a range that does not parse as the expected columns (cut at the packet
    limit, a feature of another type, features that are no object) is streamed row by row
    and decoded in Python instead, which gives the same columns. Read ahead on a thread, so
    the server's work overlaps the monitoring's arithmetic."""
    return prefetched(lambda: _mariadb_chunks(engine, day, chunk_rows))


def _mariadb_chunks(engine: Engine, day: date, chunk_rows: int) -> Iterator[pd.DataFrame]:
    log = credit_predictions_api_log
    start, end = day_bounds(day)
    in_day = (log.c.created_at >= start) & (log.c.created_at < end)
    aggregate = text(
        f"SELECT {lines_sql(_LOG_LINE)} FROM {log.name} "
        "WHERE id BETWEEN :low AND :high AND created_at >= :start AND created_at < :end"
    )
    schema = _log_line_schema()
    with engine.connect() as connection:
        packet = allow_long_values(connection)
        low, high = connection.execute(
            select(func.min(log.c.id), func.max(log.c.id)).where(in_day)
        ).one()
        if low is None:
            return
        step = rows_per_value(packet, ESTIMATED_ROW_BYTES, MARIADB_FETCH_ROWS)
        pending: list[pd.DataFrame] = []
        pending_rows = 0
        for first in range(int(low), int(high) + 1, step):
            bounds = {"low": first, "high": first + step - 1, "start": start, "end": end}
            count, lines = connection.execute(aggregate, bounds).one()
            if not count:
                continue
            table = parse_lines(lines, count, schema)
            if table is not None:
                chunk = _log_frame(table)
            else:  # cut short or not of the expected types: row by row
                extra = (log.c.id.between(bounds["low"], bounds["high"]),)
                pieces = _streamed_rows(connection, _day_rows(start, end, *extra), {}, step)
                chunk = decode_log_chunk(pd.concat(list(pieces), ignore_index=True))
            pending.append(chunk)
            pending_rows += len(chunk)
            if pending_rows >= chunk_rows:
                yield pd.concat(pending, ignore_index=True)
                pending, pending_rows = [], 0
        if pending:
            yield pd.concat(pending, ignore_index=True)


def _log_frame(table: pa.Table) -> pd.DataFrame:
    """A parsed range as a decoded log chunk (the columns `decode_log_chunk` gives)."""
    features = table.column("features")
    frame = table.drop_columns(["features"]).to_pandas()
    flat = pa.Table.from_arrays(features.combine_chunks().flatten(), names=list(MODEL_FEATURES))
    frame = pd.concat([frame, flat.to_pandas()], axis=1)
    frame[UNREADABLE] = features.is_null().to_numpy(zero_copy_only=False)
    return frame[list(DECODED_LOG_COLUMNS)]


def read_first_labels(engine: Engine, day: date, horizon_days: int) -> pd.DataFrame:
    """Per customer, the labels dated on the first day it has one in the join window
    (customer_id, date, label); `monitoring.first_labels` keeps one per customer."""
    first_day, last_day = label_window(day, horizon_days)
    labels = credit_score
    first = (
        select(labels.c.customer_id, func.min(labels.c.date).label("first_date"))
        .where(labels.c.date.between(first_day, last_day))
        .group_by(labels.c.customer_id)
        .subquery("first")
    )
    statement = (
        select(labels.c.customer_id, labels.c.date, labels.c[TARGET])
        .select_from(
            labels.join(
                first,
                and_(
                    labels.c.customer_id == first.c.customer_id,
                    labels.c.date == first.c.first_date,
                ),
            )
        )
        .order_by(labels.c.customer_id, labels.c.id)
    )
    with engine.connect() as connection:
        rows = connection.execute(statement).all()
    return pd.DataFrame(rows, columns=["customer_id", "date", TARGET])


def read_training_rows(
    engine: Engine, partition: date, limit: int = DEFAULT_REFERENCE_ROWS
) -> pd.DataFrame:
    """The rows a model of `partition` was trained from: features of the labels dated in
    [partition - 1 month, partition] (the feature-target build's window), read from the
    source tables, so a partition pruned from the feature-target table still has them."""
    labels, feats = credit_score.alias("labels"), credit_score_features.alias("feats")
    statement = (
        select(*[feats.c[name] for name in MODEL_FEATURES], labels.c[TARGET])
        .select_from(
            labels.join(
                feats, (feats.c.id == labels.c.id) & (feats.c.customer_id == labels.c.customer_id)
            )
        )
        .where(labels.c.date.between(window_start_for(partition), partition))
        .limit(limit)
    )
    with engine.connect() as connection:
        rows = connection.execute(statement).all()
    return pd.DataFrame(rows, columns=[*MODEL_FEATURES, TARGET])


def replace_day(engine: Engine, day: date, rows: Sequence[dict[str, Any]]) -> None:
    """Replace every row of `day` in credit_model_monitoring, in one transaction."""
    table = credit_model_monitoring

    def replace(connection: Connection) -> None:
        connection.execute(delete(table).where(table.c.day == day))
        if rows:
            connection.execute(insert(table), list(rows))

    # Days of a monitoring backfill replace neighbouring rows at once.
    run_transaction(engine, replace)


def read_day(engine: Engine, day: date) -> pd.DataFrame:
    """The stored report of `day` (empty frame with the columns when there is none)."""
    table = credit_model_monitoring
    with engine.connect() as connection:
        result = connection.execute(select(table).where(table.c.day == day))
        return pd.DataFrame(result.all(), columns=list(result.keys()))


def read_days(engine: Engine, first: date, last: date) -> pd.DataFrame:
    """The stored reports of the days in [first, last] (the monitoring view's window)."""
    table = credit_model_monitoring
    with engine.connect() as connection:
        result = connection.execute(select(table).where(table.c.day.between(first, last)))
        frame = pd.DataFrame(result.all(), columns=list(result.keys()))
    frame["day"] = pd.to_datetime(frame["day"]).dt.date if not frame.empty else frame["day"]
    return frame


def live_accuracy_by_day(engine: Engine, versions: Sequence[str]) -> pd.DataFrame:
    """Per day and model version (over all roles): labelled count and live accuracy, for
    the given versions (day, model_version, labelled, live_accuracy)."""
    table = credit_model_monitoring
    statement = select(table.c.day, table.c.model_version, table.c.metric, table.c.value).where(
        table.c.model_version.in_(list(versions)),
        table.c.role == MONITORING_ALL_ROLES,
        table.c.metric.in_([LABELLED, LIVE_ACCURACY]),
    )
    with engine.connect() as connection:
        rows = connection.execute(statement).all()
    frame = pd.DataFrame(rows, columns=["day", "model_version", "metric", "value"])
    if frame.empty:
        return pd.DataFrame(columns=["day", "model_version", LABELLED, LIVE_ACCURACY])
    wide = frame.pivot_table(
        index=["day", "model_version"], columns="metric", values="value", dropna=False
    ).reset_index()
    for column in (LABELLED, LIVE_ACCURACY):
        if column not in wide:
            wide[column] = float("nan")
    return wide[["day", "model_version", LABELLED, LIVE_ACCURACY]]
