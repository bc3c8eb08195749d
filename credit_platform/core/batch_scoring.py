"""Batch scoring of one day into `credit_score_predictions`.

Every customer with features on that day is scored by one model, and the day's rows are
replaced in one transaction.

Rows are read in chunks of whole customers (keyset pages in customer order on the
`date, customer_id` index), scored a chunk at a time with one CatBoost call on the whole
frame, and inserted with one executemany per chunk, all inside the caller's transaction:
a failure part-way leaves the day as it was. The model input is built as for training and
serving: the data contract makes implausible values missing, then `prepare_model_input`
scales and fills placeholders, so a stored row is scored exactly as the API would score it.

A customer with several feature rows on the day (the Kaggle loader can spread rows of one
month onto the same day) is scored on the row with the greatest id, and the duplicates are
counted, so the table's key (score_dt, customer_id) holds.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from typing import NamedTuple

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
from sqlalchemy import Date, String, bindparam, delete, func, insert, select, text
from sqlalchemy.engine import Connection

from credit_platform.core.answers import AnswerRule
from credit_platform.core.data_contract import make_implausible_missing
from credit_platform.core.db import is_mariadb
from credit_platform.core.features import LABELS, MODEL_FEATURES, NUMERIC_FEATURES
from credit_platform.core.json_lines import (
    NUMBER,
    TEXT,
    LineField,
    allow_long_values,
    feature_arrow_type,
    lines_sql,
    max_packet_bytes,
    parse_lines,
    rows_per_value,
)
from credit_platform.core.model_input import prepare_model_input, trained_columns
from credit_platform.core.model_store import ModelBundle
from credit_platform.core.prefetch import prefetched
from credit_platform.core.reasons import ReasonMap, class_shap
from credit_platform.core.schema import (
    PREDICTION_CONFIDENCE_COLUMNS,
    PREDICTION_REASON_COLUMNS,
    credit_score_features,
    credit_score_predictions,
)
from credit_platform.core.training import make_pool

DEFAULT_CHUNK_ROWS = 100_000
PREDICTIONS_TABLE = credit_score_predictions.name
FEATURES_TABLE = credit_score_features.name

_DAY = bindparam("day", type_=Date)
_AFTER = bindparam("after", type_=String)
_CUSTOMER = bindparam("customer", type_=String)


class NoFeaturesForDay(LookupError):
    """The feature table holds no row dated the day to score; nothing was written."""


@dataclass(frozen=True)
class ServedModelRecord:
    """One deployment: `model_tag` began serving at `served_at` (timezone-aware)."""

    model_tag: str
    served_at: datetime


@dataclass(frozen=True)
class ModelChoice:
    """The model that scores a day and how it was chosen (for the asset's metadata)."""

    model_tag: str
    source: str  # "deployment", "champion" or "config"
    served_at: datetime | None = None


def end_of_day(day: date) -> datetime:
    """The first instant after `day` (UTC): partitions are UTC days."""
    return datetime.combine(day + timedelta(days=1), clock.min, tzinfo=UTC)


def served_on(day: date, deployments: list[ServedModelRecord]) -> ServedModelRecord | None:
    """The deployment in force at the end of `day`: the one whose serving began last
    before the day ended (a model deployed during the day served the rest of it; one
    deployed the next day had not served yet). None when nothing was deployed by then."""
    cutoff = end_of_day(day)
    before = [record for record in deployments if record.served_at < cutoff]
    return max(before, key=lambda record: record.served_at) if before else None


@dataclass
class ScoringResult:
    """What one day's scoring wrote."""

    score_dt: date
    model_tag: str
    rows: int = 0
    replaced_rows: int = 0
    duplicate_feature_rows: int = 0
    repaired_values: int = 0
    label_counts: Counter = field(default_factory=Counter)
    seconds: float = 0.0


def _features_page_statement(limit: int):
    table = credit_score_features
    return (
        select(table.c.id, table.c.customer_id, *[table.c[name] for name in MODEL_FEATURES])
        .where(table.c.date == _DAY, table.c.customer_id > _AFTER)
        .order_by(table.c.customer_id, table.c.id)
        .limit(limit)
    )


def _one_customer_statement():
    table = credit_score_features
    return (
        select(table.c.id, table.c.customer_id, *[table.c[name] for name in MODEL_FEATURES])
        .where(table.c.date == _DAY, table.c.customer_id == _CUSTOMER)
        .order_by(table.c.id)
    )


def count_feature_rows(connection: Connection, day: date) -> int:
    table = credit_score_features
    statement = select(func.count()).select_from(table).where(table.c.date == _DAY)
    return int(connection.execute(statement, {"day": day}).scalar_one())


FEATURE_ROW_COLUMNS = ("id", "customer_id", *MODEL_FEATURES)


def _frame(rows: list) -> pd.DataFrame:
    """Feature rows as a frame with the dtypes Arrow gives the JSON lines: numbers as
    float64, texts as objects (None when missing)."""
    frame = pd.DataFrame.from_records(rows, columns=list(FEATURE_ROW_COLUMNS))
    for name in NUMERIC_FEATURES:
        frame[name] = frame[name].astype("float64")
    return frame


# On MariaDB a page of feature rows travels as one value of JSON lines (`core.json_lines`):
# the driver then decodes one field instead of thirty per row. A page must fit the packet.
ESTIMATED_FEATURE_ROW_BYTES = 1_200
MARIADB_PAGE_ROWS = 20_000


def _feature_line_fields() -> list[LineField]:
    return [
        LineField(name, name, NUMBER if name in NUMERIC_FEATURES else TEXT)
        for name in FEATURE_ROW_COLUMNS
    ]


def _feature_line_schema() -> pa.Schema:
    return pa.schema([(name, feature_arrow_type(name)) for name in FEATURE_ROW_COLUMNS])


class _PageReader:
    """Reads one keyset page of the day's feature rows (customer order): on MariaDB as JSON
    lines, a page that does not parse (cut at the packet limit) through the ordinary
    statement; elsewhere through the ordinary statement."""

    def __init__(self, connection: Connection, chunk_rows: int) -> None:
        self.connection = connection
        self.lines = is_mariadb(connection.dialect.name)
        self.page_rows = chunk_rows
        if self.lines:
            packet = allow_long_values(connection)
            most = rows_per_value(packet, ESTIMATED_FEATURE_ROW_BYTES, MARIADB_PAGE_ROWS)
            self.page_rows = min(chunk_rows, most)
            table = credit_score_features.name
            columns = ", ".join(FEATURE_ROW_COLUMNS)
            self.lines_statement = text(
                f"SELECT {lines_sql(_feature_line_fields(), 'customer_id, id')} FROM ("
                f"SELECT {columns} FROM {table} WHERE date = :day AND customer_id > :after "
                "ORDER BY customer_id, id LIMIT :limit) AS page"
            )
            self.schema = _feature_line_schema()
        self.statement = _features_page_statement(self.page_rows)

    def page(self, day: date, after: str) -> pd.DataFrame:
        parameters = {"day": day, "after": after}
        if self.lines:
            count, lines = self.connection.execute(
                self.lines_statement, {**parameters, "limit": self.page_rows}
            ).one()
            if not count:
                return _frame([])
            table = parse_lines(lines, count, self.schema)
            if table is not None:
                return table.to_pandas()
        return _frame(self.connection.execute(self.statement, parameters).all())


def read_feature_chunks(
    connection: Connection, day: date, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> Iterator[pd.DataFrame]:
    """The day's feature rows, about `chunk_rows` at a time, each chunk holding every row of
    its customers (a customer never straddles two chunks), in customer order."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    reader = _PageReader(connection, chunk_rows)
    pending: list[pd.DataFrame] = []
    pending_rows = 0
    for page in _whole_customer_pages(connection, day, reader):
        pending.append(page)
        pending_rows += len(page)
        if pending_rows + reader.page_rows > chunk_rows:  # the next page would not fit
            yield _joined(pending)
            pending, pending_rows = [], 0
    if pending:
        yield _joined(pending)


def _joined(pages: list[pd.DataFrame]) -> pd.DataFrame:
    return pages[0] if len(pages) == 1 else pd.concat(pages, ignore_index=True)


def _whole_customer_pages(
    connection: Connection, day: date, reader: _PageReader
) -> Iterator[pd.DataFrame]:
    """Keyset pages that end on a customer's last row: a full page gives back its last
    customer, read again from the next page (or whole, if that customer filled the page)."""
    after = ""
    while True:
        rows = reader.page(day, after)
        if rows.empty:
            return
        if len(rows) < reader.page_rows:
            yield rows
            return
        customers = rows["customer_id"].to_numpy()
        last = customers[-1]
        end = len(customers) - 1
        while end > 0 and customers[end - 1] == last:  # the page's last customer's rows
            end -= 1
        if end == 0:  # one customer filled the page: read all of theirs at once
            whole = _frame(
                connection.execute(_one_customer_statement(), {"day": day, "customer": last}).all()
            )
            after = last
        else:
            whole = rows.iloc[:end]
            after = customers[end - 1]
        yield whole


class ScoredFrame(NamedTuple):
    """Feature rows as scored: class probabilities (columns in `LABELS` order), per row the
    answered class (a position in `LABELS`), how many numeric values the data contract made
    missing first, and with `reasons` each row's top reason codes for its answered class."""

    probabilities: np.ndarray
    answered: np.ndarray
    repaired_values: int
    codes: list[tuple[str | None, ...]] | None


def score_frame(bundle: ModelBundle, rows: pd.DataFrame, *, reasons: bool = False) -> ScoredFrame:
    """Score feature rows as the API scores them: the answer rule of `core.answers` (the
    label chosen with the model's decision offsets, the probabilities its own), after the
    data contract and `prepare_model_input`."""
    rows = rows.copy()
    numbers = rows[list(NUMERIC_FEATURES)].apply(pd.to_numeric, errors="coerce")
    numbers = numbers.to_numpy(dtype="float64", copy=True)
    made_missing = make_implausible_missing(NUMERIC_FEATURES, numbers)
    for position, name in enumerate(NUMERIC_FEATURES):
        rows[name] = numbers[:, position]
    model_input = prepare_model_input(rows, bundle.scalers, columns=trained_columns(bundle.model))
    classes = [str(label) for label in bundle.model.classes_]
    unknown = sorted(set(classes) - set(LABELS))
    if unknown:
        raise ValueError(f"{bundle.tag} predicts unknown labels {unknown}")
    rule = AnswerRule.of(bundle.model, bundle.metadata)
    probabilities, answered = rule.answer(bundle.model, model_input)
    order = np.array([LABELS.index(label) for label in classes])
    by_label = np.zeros((len(rows), len(LABELS)), dtype="float64")
    by_label[:, order] = probabilities
    codes = reason_codes(bundle, model_input, answered) if reasons else None
    return ScoredFrame(by_label, order[answered], int(made_missing.sum()), codes)


def reason_codes(
    bundle: ModelBundle, model_input: pd.DataFrame, class_index: np.ndarray
) -> list[tuple[str | None, ...]]:
    """Per row, the codes of its top reasons for the class given (by the model's class
    order), the largest SHAP contribution first: CatBoost's SHAP values of the model's
    columns summed into reasons as the API's explanations sum them (`core.reasons`)."""
    shap_values = bundle.model.get_feature_importance(make_pool(model_input), type="ShapValues")
    reason_map = ReasonMap(list(model_input.columns))
    by_reason = reason_map.contributions(class_shap(shap_values, class_index)[:, :-1])
    count = len(PREDICTION_REASON_COLUMNS)
    top = np.argsort(-np.abs(by_reason), axis=1, kind="stable")[:, :count]
    codes = np.asarray(reason_map.codes, dtype=object)[top]
    return [tuple(row) for row in codes.tolist()]


def prediction_columns(
    score_dt: date,
    customer_ids: list[str],
    probabilities: np.ndarray,
    model_tag: str,
    reasons: list[tuple[str | None, ...]] | None = None,
    answered: np.ndarray | None = None,
) -> dict[str, list]:
    """Columns of credit_score_predictions as plain Python values: the answered label
    (`answered`, positions in `LABELS`; the highest probability's without it), each class's
    probability, the model's tag, the day as ISO text (what the Date column stores on SQLite
    and what MariaDB's DATE reads), and the top reason codes (None without `reasons`)."""
    count = len(customer_ids)
    best = probabilities.argmax(axis=1) if answered is None else np.asarray(answered)
    if reasons is None:
        reason_values: list[list] = [[None] * count for _ in PREDICTION_REASON_COLUMNS]
    else:
        reason_values = [list(column) for column in zip(*reasons, strict=True)]
    return {
        "score_dt": [score_dt.isoformat()] * count,
        "customer_id": customer_ids,
        "prediction": np.asarray(LABELS, dtype=object)[best].tolist(),
        **{
            PREDICTION_CONFIDENCE_COLUMNS[label]: probabilities[:, position].tolist()
            for position, label in enumerate(LABELS)
        },
        "model_version": [model_tag] * count,
        **dict(zip(PREDICTION_REASON_COLUMNS, reason_values, strict=True)),
    }


def insert_predictions(connection: Connection, columns: dict[str, list]) -> None:
    """Insert the rows inside the caller's transaction. On MariaDB the rows travel as one
    JSON document per statement, unpacked by the server (`INSERT ... SELECT FROM
    JSON_TABLE`): the driver then escapes one string instead of seven values a row. Elsewhere
    SQLAlchemy's own INSERT, compiled for the dialect, runs as one executemany on the
    driver's cursor; skipping SQLAlchemy's per-value processing, which plain str and float
    values do not need, halved the write on SQLite."""
    if is_mariadb(connection.dialect.name):
        _insert_through_json_table(connection, columns)
        return
    compiled = insert(credit_score_predictions).compile(dialect=connection.dialect)
    names = [column.name for column in credit_score_predictions.columns]
    if compiled.positiontup is not None:  # positional paramstyle (SQLite's qmark)
        parameters: list = list(zip(*(columns[name] for name in compiled.positiontup), strict=True))
    else:  # named paramstyle
        parameters = [
            dict(zip(names, row, strict=True))
            for row in zip(*(columns[name] for name in names), strict=True)
        ]
    cursor = connection.connection.cursor()
    try:
        cursor.executemany(compiled.string, parameters)
    finally:
        cursor.close()


# A prediction row as JSON is at most ~300 bytes (a 32-character id of 4-byte characters,
# a label, three doubles): a statement's document stays well under the packet limit.
ESTIMATED_PREDICTION_ROW_BYTES = 400
# Columns that vary per row; score_dt and model_version are one value per statement.
_PER_ROW = (
    "customer_id",
    "prediction",
    *PREDICTION_CONFIDENCE_COLUMNS.values(),
    *PREDICTION_REASON_COLUMNS,
)


def _json_table_insert(connection: Connection):
    table = credit_score_predictions
    paths = ", ".join(
        f"{name} {table.c[name].type.compile(dialect=connection.dialect)} "
        f"PATH '$[{position}]' ERROR ON EMPTY ERROR ON ERROR"
        for position, name in enumerate(_PER_ROW)
    )
    names = ", ".join(column.name for column in table.columns)
    chosen = ", ".join(
        f"rows_.{column.name}" if column.name in _PER_ROW else f":{column.name}"
        for column in table.columns
    )
    return text(
        f"INSERT INTO {table.name} ({names}) SELECT {chosen} "
        f"FROM JSON_TABLE(:document, '$[*]' COLUMNS ({paths})) AS rows_"
    ).bindparams(bindparam("score_dt", type_=String))


def _insert_through_json_table(connection: Connection, columns: dict[str, list]) -> None:
    rows = list(zip(*(columns[name] for name in _PER_ROW), strict=True))
    if not rows:
        return
    if len(set(columns["score_dt"])) != 1 or len(set(columns["model_version"])) != 1:
        raise ValueError("one insert holds the predictions of one day by one model")
    constants = {
        "score_dt": columns["score_dt"][0],
        "model_version": columns["model_version"][0],
    }
    statement = _json_table_insert(connection)
    step = rows_per_value(max_packet_bytes(connection), ESTIMATED_PREDICTION_ROW_BYTES, 100_000)
    for first in range(0, len(rows), step):
        document = orjson.dumps(rows[first : first + step]).decode()
        connection.execute(statement, {**constants, "document": document})


def delete_day_statement():
    table = credit_score_predictions
    return delete(table).where(table.c.score_dt == _DAY)


def _feature_chunks_for(
    connection: Connection, day: date, chunk_rows: int
) -> Iterator[pd.DataFrame]:
    """The feature chunks `score_day` scores. On MariaDB they are read ahead on a thread
    over a connection of their own (one transaction: one consistent snapshot of the
    features), so the server renders the next pages while this connection scores and
    writes; SQLite allows one writer and the transaction's connection reads them in turn."""
    if not is_mariadb(connection.dialect.name):
        return read_feature_chunks(connection, day, chunk_rows)
    engine = connection.engine

    def read_on_own_connection() -> Iterator[pd.DataFrame]:
        with engine.connect() as reader:
            yield from read_feature_chunks(reader, day, chunk_rows)

    return prefetched(read_on_own_connection)


def score_day(
    connection: Connection,
    day: date,
    bundle: ModelBundle,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: Callable[[int], None] | None = None,
    reasons: bool = False,
) -> ScoringResult:
    """Replace the predictions of `day` with `bundle`'s scores of every customer with
    features that day. Run it inside one transaction (`engine.begin()`): the delete and
    every chunk's insert then commit together or not at all. Raises NoFeaturesForDay,
    leaving the table untouched, when the day has no feature rows."""
    started = time.perf_counter()
    available = count_feature_rows(connection, day)
    if available == 0:
        raise NoFeaturesForDay(
            f"no rows of {FEATURES_TABLE} are dated {day.isoformat()}: nothing to score, and "
            f"the predictions of {day.isoformat()} were left as they were. Load that day's "
            "features first (e.g. `credit-platform seed synthetic` or `credit-platform simulate`)."
        )
    result = ScoringResult(score_dt=day, model_tag=bundle.tag)
    chunks = _feature_chunks_for(connection, day, chunk_rows)
    with contextlib.closing(chunks):  # a failure stops the read-ahead at once
        deleted = connection.execute(delete_day_statement(), {"day": day}).rowcount
        result.replaced_rows = max(deleted, 0)
        for chunk in chunks:
            unique = chunk.drop_duplicates("customer_id", keep="last")
            result.duplicate_feature_rows += len(chunk) - len(unique)
            scored = score_frame(bundle, unique, reasons=reasons)
            result.repaired_values += scored.repaired_values
            customers = unique["customer_id"].tolist()
            columns = prediction_columns(
                day, customers, scored.probabilities, bundle.tag, scored.codes, scored.answered
            )
            insert_predictions(connection, columns)
            result.rows += len(unique)
            result.label_counts.update(columns["prediction"])
            if progress is not None:
                progress(len(chunk))
    result.seconds = time.perf_counter() - started
    return result
