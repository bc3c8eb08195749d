"""How long the newest migration holds the schema lock on a store of real size (MariaDB).

    .venv/bin/python -m bench.migration --customers 3000 --days 35   # ~105,000 rows a table

A fresh MariaDB database gets `--customers` × `--days` synthetic source rows, is taken back
to the revision before the head, and is then upgraded to the head, timed: the time every
other process starting meanwhile waits on the schema lock (CREDIT_SCHEMA_LOCK_TIMEOUT).
The feature-target table holds one day's window per built day. Writes
bench/results/migration.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date, timedelta

from bench.common import machine, mariadb_database, print_figures, write_results


def main(argv: list[str] | None = None) -> None:
    from sqlalchemy import func, select

    from credit_platform.core import migrations
    from credit_platform.core.db import make_engine
    from credit_platform.core.feature_target_sql import build_partition
    from credit_platform.core.schema import credit_score, credit_score_features_target
    from credit_platform.ingest.synthetic import seed_synthetic

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--days", type=int, default=35)
    parser.add_argument("--built-days", type=int, default=3, help="feature-target days built")
    args = parser.parse_args(argv)
    started_machine = machine()
    start = date(2025, 1, 1)
    end = start + timedelta(days=args.days - 1)
    with mariadb_database("bench_migration") as url:
        engine = make_engine(url)
        try:
            seed_synthetic(
                engine, customers=args.customers, days=args.days, start=start, progress=False
            )
            for offset in range(args.built_days):
                with engine.begin() as connection:
                    build_partition(connection, end - timedelta(days=offset), 7)
            with engine.connect() as connection:
                source_rows = connection.scalar(select(func.count()).select_from(credit_score))
                target_rows = connection.scalar(
                    select(func.count()).select_from(credit_score_features_target)
                )
                head = migrations.head_revision()
                previous = migrations.script_directory().get_revision(head).down_revision
                migrations.downgrade(connection, previous)
                began = time.perf_counter()
                migrations.upgrade(connection)
                seconds = time.perf_counter() - began
                assert migrations.current_revision(connection) == head
        finally:
            engine.dispose()
    figures = {
        "revision": head,
        "from_revision": previous,
        "rows_per_source_table": source_rows,
        "feature_target_rows": target_rows,
        "upgrade_seconds": round(seconds, 2),
    }
    print_figures("migration to the head", figures)
    command = "python -m bench.migration " + " ".join(sys.argv[1:])
    path = write_results("migration", figures, command=command, started_machine=started_machine)
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
