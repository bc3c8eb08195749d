"""The monitoring's reads and writes in the feature store: the day's log in chunks, the
labels that judge it, a model's training rows, and `credit_model_monitoring` itself.

Every statement is SQLAlchemy Core with bound parameters; the heavy work (the first label
per customer, the day's slice of the log) is done by the database, the rest by
`core.monitoring` on columns.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import Text, and_, delete, func, insert, select, type_coerce
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
DEFAULT_CHUNK_ROWS = 100_000
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
    """The log rows created on `day` (UTC), `chunk_rows` at a time, streamed from the server;
    the features column comes as its JSON text (decoded per chunk, on columns)."""
    log = credit_predictions_api_log
    start, end = day_bounds(day)
    statement = select(
        log.c.customer_id,
        type_coerce(log.c.features, Text).label("features"),
        log.c.prediction,
        log.c.elapsed_ms,
        log.c.model_version,
        log.c.role,
    ).where(log.c.created_at >= start, log.c.created_at < end)
    with engine.connect() as connection:
        result = connection.execution_options(stream_results=True, yield_per=chunk_rows).execute(
            statement
        )
        for partition in result.partitions(chunk_rows):
            yield pd.DataFrame(partition, columns=list(LOG_COLUMNS))


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
