"""The monitoring's reads and writes in the feature store: the day's log in chunks, the
labels that judge it, a model's training rows, and `credit_model_monitoring` itself.

Every statement is SQLAlchemy Core with bound parameters; the heavy work (the first label
per customer, the day's slice of the log) is done by the database, the rest by
`core.monitoring` on columns.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any

import orjson
import pandas as pd
from sqlalchemy import Text, and_, delete, func, insert, select, text, type_coerce
from sqlalchemy.engine import Engine

from credit_platform.core.feature_target_sql import window_start_for
from credit_platform.core.features import MODEL_FEATURES, TARGET
from credit_platform.core.monitoring import (
    LABELLED,
    LIVE_ACCURACY,
    label_window,
)
from credit_platform.core.schema import (
    MONITORING_ALL_ROLES,
    credit_model_monitoring,
    credit_predictions_api_log,
    credit_score,
    credit_score_features,
)

LOG_COLUMNS = ("customer_id", "features", "prediction", "elapsed_ms", "model_version", "role")
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
    """The log rows created on `day` (UTC), about `chunk_rows` at a time (customer_id,
    features, prediction, elapsed_ms, model_version, role). On MariaDB the rows travel
    aggregated (`mariadb_log_chunks`); elsewhere they are streamed row by row, the
    features column as its JSON text (decoded per chunk, on columns)."""
    if engine.dialect.name in ("mysql", "mariadb"):
        yield from mariadb_log_chunks(engine, day, chunk_rows)
        return
    start, end = day_bounds(day)
    with engine.connect() as connection:
        yield from _streamed_rows(connection, _day_rows(start, end), {}, chunk_rows)


def _day_rows(start: datetime, end: datetime, *extra):
    log = credit_predictions_api_log
    return select(
        log.c.customer_id,
        type_coerce(log.c.features, Text).label("features"),
        log.c.prediction,
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


# On MariaDB one fetch returns this many log rows at most, as two aggregated values: a
# driver written in Python spends ~10 us on every row and field it decodes, more than all
# the monitoring's arithmetic, while one long value costs next to nothing to receive. The
# aggregate must fit the server's max_allowed_packet, hence the size estimate per row.
MARIADB_FETCH_ROWS = 20_000
ESTIMATED_ROW_BYTES = 1_500


def mariadb_log_chunks(engine: Engine, day: date, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The day's log rows fetched in id ranges, each range as one value: a JSON array of
    [customer_id, prediction, elapsed_ms, model_version, role, features] arrays, the
    features object spliced in as stored (the column holds valid JSON: MariaDB checks it on
    insert), built by the server without sorting. A range whose value does not fit the
    packet limit is streamed row by row instead.

    A thread fetches and decodes the next chunk while the caller computes on this one, so
    the server's work on the next ranges overlaps the monitoring's arithmetic."""
    chunks: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in _mariadb_chunks(engine, day, chunk_rows):
                while not stop.is_set():
                    try:
                        chunks.put(chunk, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            chunks.put(_DONE)
        except BaseException as error:  # handed to the caller, raised there
            chunks.put(error)

    producer = threading.Thread(target=produce, name="monitoring-log-reader", daemon=True)
    producer.start()
    try:
        while True:
            item = chunks.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while producer.is_alive():  # unblock a producer waiting to put
            with contextlib.suppress(queue.Empty):
                chunks.get(timeout=0.2)
        producer.join()


_DONE = object()


def _mariadb_chunks(engine: Engine, day: date, chunk_rows: int) -> Iterator[pd.DataFrame]:
    log = credit_predictions_api_log
    start, end = day_bounds(day)
    in_day = (log.c.created_at >= start) & (log.c.created_at < end)
    # [customer_id, prediction, elapsed_ms, model_version, role, features] per row, written
    # by CONCAT (JSON_ARRAY costs the server more than the scan); the texts are quoted with
    # JSON_QUOTE, so any of them parses. DOUBLE renders as a JSON number.
    quoted = [f"JSON_QUOTE({name})" for name in ("customer_id", "prediction")]
    later = [f"JSON_QUOTE({name})" for name in ("model_version", "role")]
    row_json = (
        f"CONCAT('[', {quoted[0]}, ',', {quoted[1]}, ',', elapsed_ms, ',', "
        f"{later[0]}, ',', {later[1]}, ',', features, ']')"
    )
    aggregate = text(
        f"SELECT COUNT(*), CONCAT('[', GROUP_CONCAT({row_json} SEPARATOR ','), ']') "
        f"FROM {log.name} "
        "WHERE id BETWEEN :low AND :high AND created_at >= :start AND created_at < :end"
    )
    with engine.connect() as connection:
        packet = connection.execute(text("SELECT @@max_allowed_packet")).scalar_one()
        connection.execute(text("SET SESSION group_concat_max_len = :size"), {"size": packet})
        low, high = connection.execute(
            select(func.min(log.c.id), func.max(log.c.id)).where(in_day)
        ).one()
        if low is None:
            return
        step = max(100, min(MARIADB_FETCH_ROWS, int(packet) // 2 // ESTIMATED_ROW_BYTES))
        pending: list[pd.DataFrame] = []
        pending_rows = 0
        for first in range(int(low), int(high) + 1, step):
            bounds = {"low": first, "high": first + step - 1, "start": start, "end": end}
            count, rows = connection.execute(aggregate, bounds).one()
            if not count:
                continue
            chunk = _decoded(rows, count)
            if chunk is None:  # the value was cut off at the packet limit: row by row
                extra = (log.c.id.between(bounds["low"], bounds["high"]),)
                pieces = _streamed_rows(connection, _day_rows(start, end, *extra), {}, step)
                chunk = pd.concat(list(pieces), ignore_index=True)
            pending.append(chunk)
            pending_rows += len(chunk)
            if pending_rows >= chunk_rows:
                yield pd.concat(pending, ignore_index=True)
                pending, pending_rows = [], 0
        if pending:
            yield pd.concat(pending, ignore_index=True)


def _decoded(rows: Any, count: int) -> pd.DataFrame | None:
    """A range's aggregated value as a chunk (its features already decoded); None when the
    value is missing or cut short."""
    if rows is None:
        return None
    try:
        decoded = orjson.loads(rows)
    except orjson.JSONDecodeError:
        return None
    if len(decoded) != count:
        return None
    order = ["customer_id", "prediction", "elapsed_ms", "model_version", "role", "features"]
    chunk = pd.DataFrame(decoded, columns=order)[list(LOG_COLUMNS)]
    # a row whose JSON is no object (null, a string) counts as unreadable, as when streamed
    features = chunk["features"].to_numpy()
    odd = [index for index, value in enumerate(features) if type(value) is not dict]
    if odd:
        chunk.loc[odd, "features"] = None
    return chunk


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
    with engine.begin() as connection:
        connection.execute(delete(table).where(table.c.day == day))
        if rows:
            connection.execute(insert(table), list(rows))


def read_day(engine: Engine, day: date) -> pd.DataFrame:
    """The stored report of `day` (empty frame with the columns when there is none)."""
    table = credit_model_monitoring
    with engine.connect() as connection:
        result = connection.execute(select(table).where(table.c.day == day))
        return pd.DataFrame(result.all(), columns=list(result.keys()))


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
