"""The prediction log's hand-written SQL literals against a C driver's (mysqlclient), same run.

    .venv/bin/pip install mysqlclient==2.3.2   # bench only: needs pkg-config, libmariadb-dev
    .venv/bin/python -m bench.sql_literals     # ~1 min; writes bench/results/sql_literals.json

Rows: 1,000-row batches of real log rows (the Kaggle sample's features as the service logs
them, batch request ids). Two measurements, alternating the candidates round by round:

1. rendering: one batch's multi-row `INSERT` as the bytes sent to the server, CPU µs a row;
   - `hand`: `mariadb_insert_statements` (api/prediction_log.py), encoded to UTF-8 as PyMySQL
     does when it sends the text;
   - `mysqlclient_c`: the same statement with every text value escaped and quoted by
     mysqlclient's `string_literal` (libmariadb's `mysql_real_escape_string`, C);
   - `pymysql`: every value through PyMySQL's own `connection.literal` (pure Python), as the
     log did before it rendered its statements.
2. end to end: the batches inserted into MariaDB, one transaction each, CPU µs a row of this
   process (rendering, driver, protocol) and wall time;
   - `pymysql_hand`: the log's path (PyMySQL sending the hand-rendered statements);
   - `mysqlclient_executemany`: mysqlclient's own multi-row `executemany` (C escaping, C
     protocol), as a project using that driver would write it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from bench.common import KAGGLE_SAMPLE, machine, mariadb_database, print_figures, write_results

BATCH_ROWS = 1_000


def log_rows(batches: int) -> list[list]:
    from bench.sample_requests import load_sample, log_row, valid_request_payloads

    payloads = valid_request_payloads(load_sample(KAGGLE_SAMPLE, rows=3_000), BATCH_ROWS)
    now = datetime.now(UTC).replace(tzinfo=None)
    return [
        [
            log_row(payload, f"bench{batch}-{time.time_ns()}#{position}", now)
            for position, payload in enumerate(payloads)
        ]
        for batch in range(batches)
    ]


def _head() -> bytes:
    from api.prediction_log import _ROW_FIELDS
    from credit_platform.core.schema import credit_predictions_api_log

    columns = ", ".join(f"`{name}`" for name in _ROW_FIELDS)
    return f"INSERT INTO `{credit_predictions_api_log.name}` ({columns}) VALUES ".encode()


def render_hand(rows) -> list[bytes]:
    from api.prediction_log import mariadb_insert_statements

    return [statement.encode("utf-8") for statement in mariadb_insert_statements(rows)]


def render_with(literal: Callable[[str], bytes]) -> Callable[[list], list[bytes]]:
    """The same statement with each text value quoted by `literal` (str -> quoted bytes)."""
    from api.prediction_log import features_json

    head = _head()

    def render(rows) -> list[bytes]:
        stamps: dict = {}
        values = []
        for row in rows:
            stamp = stamps.get(row.created_at)
            if stamp is None:
                stamp = stamps[row.created_at] = f"'{row.created_at:%Y-%m-%d %H:%M:%S.%f}'".encode()
            values.append(
                b"("
                + b",".join(
                    (
                        literal(row.request_id),
                        literal(row.customer_id),
                        literal(features_json(row.features)),
                        literal(row.prediction),
                        repr(float(row.confidence)).encode(),
                        repr(float(row.elapsed_ms)).encode(),
                        literal(row.model_version),
                        stamp,
                        literal(row.role),
                    )
                )
                + b")"
            )
        return [head + b",".join(values)]

    return render


def mysqlclient_connection(url: str):
    import MySQLdb
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return MySQLdb.connect(
        host=parsed.host,
        port=parsed.port or 3306,
        user=parsed.username,
        password=parsed.password or "",
        database=parsed.database,
        charset="utf8mb4",
    )


def pymysql_connection(url: str):
    import pymysql
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return pymysql.connect(
        host=parsed.host,
        port=parsed.port or 3306,
        user=parsed.username,
        password=parsed.password or "",
        database=parsed.database,
        charset="utf8mb4",
    )


def cpu_us_per_row(render: Callable, batches: list[list]) -> float:
    started = time.process_time()
    for rows in batches:
        render(rows)
    return (time.process_time() - started) / (len(batches) * BATCH_ROWS) * 1e6


def insert_pymysql_hand(connection, rows) -> None:
    with connection.cursor() as cursor:
        for statement in render_hand(rows):
            cursor.execute(statement)
    connection.commit()


def insert_mysqlclient_executemany(connection, rows) -> None:
    from api.prediction_log import _ROW_FIELDS, features_json
    from credit_platform.core.schema import credit_predictions_api_log

    columns = ", ".join(f"`{name}`" for name in _ROW_FIELDS)
    marks = ", ".join(["%s"] * len(_ROW_FIELDS))
    statement = f"INSERT INTO `{credit_predictions_api_log.name}` ({columns}) VALUES ({marks})"
    params = [
        (
            row.request_id,
            row.customer_id,
            features_json(row.features),
            row.prediction,
            row.confidence,
            row.elapsed_ms,
            row.model_version,
            row.created_at,
            row.role,
        )
        for row in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(statement, params)
    connection.commit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", type=int, default=10, help="1,000-row batches a round")
    args = parser.parse_args(argv)
    try:
        import MySQLdb
    except ImportError:
        print("error: pip install mysqlclient==2.3.2 (bench only)", file=sys.stderr)
        return 2
    started_machine = machine()
    with mariadb_database("bench_sql_literals") as url:
        c_connection = mysqlclient_connection(url)
        py_connection = pymysql_connection(url)
        render = {
            "hand": render_hand,
            "mysqlclient_c": render_with(lambda value: c_connection.string_literal(value.encode())),
            "pymysql": render_with(lambda value: py_connection.escape(value).encode()),
        }
        render_runs: dict[str, list[float]] = {name: [] for name in render}
        for round_number in range(args.rounds):
            batches = log_rows(args.batches)
            order = list(render) if round_number % 2 == 0 else list(reversed(render))
            for name in order:
                render_runs[name].append(cpu_us_per_row(render[name], batches))

        insert = {
            "pymysql_hand": (py_connection, insert_pymysql_hand),
            "mysqlclient_executemany": (c_connection, insert_mysqlclient_executemany),
        }
        insert_cpu: dict[str, list[float]] = {name: [] for name in insert}
        insert_wall: dict[str, list[float]] = {name: [] for name in insert}
        for round_number in range(args.rounds):
            order = list(insert) if round_number % 2 == 0 else list(reversed(insert))
            for name in order:
                connection, write = insert[name]
                batches = log_rows(args.batches)
                wall, cpu = time.perf_counter(), time.process_time()
                for rows in batches:
                    write(connection, rows)
                rows_written = len(batches) * BATCH_ROWS
                insert_cpu[name].append((time.process_time() - cpu) / rows_written * 1e6)
                insert_wall[name].append((time.perf_counter() - wall) / rows_written * 1e6)
        with py_connection.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM credit_predictions_api_log")
            (stored,) = cursor.fetchone()
        c_connection.close()
        py_connection.close()

    expected = 2 * args.rounds * args.batches * BATCH_ROWS
    assert stored == expected, (stored, expected)
    figures: dict = {
        "batch_rows": BATCH_ROWS,
        "rounds": args.rounds,
        "mysqlclient_version": MySQLdb.version_info,
        "rows_stored": stored,
    }
    for name, runs in render_runs.items():
        figures[f"render_{name}_cpu_us_per_row"] = round(statistics.median(runs), 3)
        figures[f"render_{name}_runs"] = [round(value, 3) for value in runs]
    for name in insert:
        figures[f"insert_{name}_cpu_us_per_row"] = round(statistics.median(insert_cpu[name]), 3)
        figures[f"insert_{name}_wall_us_per_row"] = round(statistics.median(insert_wall[name]), 3)
        figures[f"insert_{name}_cpu_runs"] = [round(value, 3) for value in insert_cpu[name]]
    print_figures("SQL literals: hand-written vs mysqlclient (C) vs PyMySQL", figures)
    path = write_results(
        "sql_literals",
        figures,
        command="python -m bench.sql_literals",
        started_machine=started_machine,
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
