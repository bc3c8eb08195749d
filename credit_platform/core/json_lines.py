"""Bulk reads from MariaDB as JSON lines parsed by Arrow.

PyMySQL is written in Python and spends microseconds on every field it decodes: a million
rows of thirty fields take longer to receive than everything done with them afterwards. So
the bulk reads ask the server for each range of rows as *one* value: every row rendered as
a JSON object on its own line (`CONCAT`, `JSON_QUOTE`; a JSON column spliced in as stored),
the lines joined by `GROUP_CONCAT`. One value costs the driver next to nothing, and
`pyarrow.json` parses the lines into typed columns in C++.

A range whose value does not parse as the expected columns (cut short at the packet limit,
a field of another type, a JSON value that is no object) returns None, and the caller reads
that range the ordinary way: the fast path never changes a result, it only skips work.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.json as pa_json
from sqlalchemy import text
from sqlalchemy.engine import Connection

from credit_platform.core.features import NUMERIC_FEATURES

# Kinds of fields: a text column (quoted, escaped), a number column (rendered as the
# protocol renders it), a JSON column (spliced in as stored: MariaDB validates it on insert).
TEXT, NUMBER, JSON = "text", "number", "json"


@dataclass(frozen=True)
class LineField:
    """One key of the rendered object: its name, the SQL expression, and its kind."""

    key: str
    sql: str
    kind: str


def object_sql(fields: Sequence[LineField]) -> str:
    """The SQL expression rendering one row as a JSON object; NULL renders as null."""
    parts = []
    for position, field in enumerate(fields):
        if field.kind == TEXT:
            value = f"COALESCE(JSON_QUOTE({field.sql}), 'null')"
        elif field.kind in (NUMBER, JSON):
            value = f"COALESCE({field.sql}, 'null')"
        else:
            raise ValueError(f"unknown field kind {field.kind!r} for {field.key!r}")
        opening = "{" if position == 0 else ","
        parts.append(f"'{opening}\"{field.key}\":'")
        parts.append(value)
    parts.append("'}'")
    return f"CONCAT({', '.join(parts)})"


def lines_sql(fields: Sequence[LineField], order_by: str = "") -> str:
    """`COUNT(*), GROUP_CONCAT(<row object> [ORDER BY ...] SEPARATOR newline)` for a SELECT's
    column list; `order_by` (SQL) when the lines must come in that order."""
    ordered = f" ORDER BY {order_by}" if order_by else ""
    return f"COUNT(*), GROUP_CONCAT({object_sql(fields)}{ordered} SEPARATOR '\\n')"


def feature_arrow_type(name: str) -> pa.DataType:
    """A model feature's column type in the parsed lines: every numeric feature (counts
    included) as float64, as the model input takes it; the others as text."""
    return pa.float64() if name in NUMERIC_FEATURES else pa.string()


def max_packet_bytes(connection: Connection) -> int:
    """The server's packet limit: no statement or value may be longer."""
    return int(connection.execute(text("SELECT @@max_allowed_packet")).scalar_one())


def allow_long_values(connection: Connection) -> int:
    """Let GROUP_CONCAT build values up to the packet limit on this session; returns the
    limit in bytes (a value must fit in one packet to reach the client)."""
    packet = max_packet_bytes(connection)
    connection.execute(text("SET SESSION group_concat_max_len = :size"), {"size": packet})
    return packet


def rows_per_value(packet_bytes: int, estimated_row_bytes: int, most: int) -> int:
    """How many rows one aggregated value may hold: half the packet limit over a generous
    estimate of a row's size (a longer range is cut short and read the ordinary way)."""
    return max(100, min(most, packet_bytes // 2 // estimated_row_bytes))


def parse_lines(value: str | bytes | None, count: int, schema: pa.Schema) -> pa.Table | None:
    """The aggregated value as a table of `schema`'s columns (keys outside it ignored, a
    missing key null); None unless it parses into exactly `count` rows of those types."""
    if value is None or count == 0:
        return None
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    options = pa_json.ParseOptions(
        explicit_schema=schema, unexpected_field_behavior="ignore", newlines_in_values=False
    )
    try:
        table = pa_json.read_json(io.BytesIO(data), parse_options=options)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    return table if table.num_rows == count else None
