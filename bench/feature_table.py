"""Feature-target benchmark: one partition and a 30-day backfill on MariaDB holding
1,000,000 label rows and their features.

    .venv/bin/python -m bench.feature_table   # ~10 min; writes bench/results/feature_table.json

Data: the synthetic generator writes 10,000 customers x 10 days (100,000 labels and their
feature rows) through the platform's own writer; MariaDB then copies them nine times,
10 days later each time (`INSERT ... SELECT`), to 1,000,000 labels over 100 days
(2025-01-01..2025-04-10, 10,000 a day). The build is the asset's: `build_partition` in one
transaction per base day, retention 7 days. One partition's window is a month: about
320,000 rows.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date, timedelta

from bench.common import machine, mariadb_database, print_figures, write_results

CUSTOMERS = 10_000
SEED_DAYS = 10
COPIES = 10
START = date(2025, 1, 1)
RETENTION_DAYS = 7
BACKFILL_DAYS = 30
TARGET_PARTITION_SECONDS = 30


def generate(url: str) -> dict:
    """1,000,000 labels and features; returns how long each step took."""
    from sqlalchemy import text

    from credit_platform.core.db import make_engine
    from credit_platform.core.features import MODEL_FEATURES
    from credit_platform.ingest.synthetic import seed_synthetic

    engine = make_engine(url)
    started = time.perf_counter()
    seed_synthetic(engine, customers=CUSTOMERS, days=SEED_DAYS, start=START, seed=0, progress=False)
    generated = time.perf_counter() - started
    feature_columns = ", ".join(f"`{name}`" for name in ("name", "ssn", *MODEL_FEATURES))
    with engine.begin() as connection:
        for copy in range(1, COPIES):
            shift = {"suffix": f"-r{copy}", "days": SEED_DAYS * copy}
            connection.execute(
                text(
                    "INSERT INTO credit_score (id, customer_id, date, credit_score) "
                    "SELECT CONCAT(id, :suffix), customer_id, DATE_ADD(date, INTERVAL :days DAY), "
                    "credit_score FROM credit_score WHERE id NOT LIKE '%-r%'"
                ),
                shift,
            )
            connection.execute(
                text(
                    f"INSERT INTO credit_score_features (id, customer_id, date, {feature_columns}) "
                    "SELECT CONCAT(id, :suffix), customer_id, DATE_ADD(date, INTERVAL :days DAY), "
                    f"{feature_columns} FROM credit_score_features WHERE id NOT LIKE '%-r%'"
                ),
                shift,
            )
    copied = time.perf_counter() - started - generated
    with engine.connect() as connection:
        for table in ("credit_score", "credit_score_features"):
            connection.execute(text(f"ANALYZE TABLE {table}")).all()
        labels = connection.execute(text("SELECT COUNT(*) FROM credit_score")).scalar_one()
        features = connection.execute(
            text("SELECT COUNT(*) FROM credit_score_features")
        ).scalar_one()
    engine.dispose()
    return {
        "label_rows": int(labels),
        "feature_rows": int(features),
        "generator_seconds": round(generated, 1),
        "copy_seconds": round(copied, 1),
        "generation_seconds": round(generated + copied, 1),
    }


def build(url: str, base_dt: date) -> tuple[float, int]:
    """One partition exactly as the asset builds it: one transaction."""
    from credit_platform.core.db import make_engine
    from credit_platform.core.feature_target_sql import build_partition

    engine = make_engine(url)
    started = time.perf_counter()
    with engine.begin() as connection:
        result = build_partition(connection, base_dt, RETENTION_DAYS)
    seconds = time.perf_counter() - started
    engine.dispose()
    return seconds, result.rows


def query_plan(url: str, base_dt: date) -> list[str]:

    from credit_platform.core.db import make_engine
    from credit_platform.core.feature_target_sql import insert_partition_statement, window_start_for

    engine = make_engine(url)
    select_part = insert_partition_statement().select
    compiled = select_part.compile(dialect=engine.dialect)
    params = {"base_dt": base_dt, "window_start": window_start_for(base_dt)}
    with engine.connect() as connection:
        result = connection.exec_driver_sql(f"EXPLAIN {compiled.string}", params)
        rows = result.mappings().all()
    engine.dispose()
    return [
        f"{row['table']}: type={row['type']} key={row['key']} rows={row['rows']} "
        f"{row['Extra'] or ''}".strip()
        for row in rows
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backfill-days", type=int, default=BACKFILL_DAYS)
    args = parser.parse_args(argv)
    started_machine = machine()
    last_day = START + timedelta(days=SEED_DAYS * COPIES - 1)

    with mariadb_database("bench_feature_table") as url:
        print("generating 1,000,000 labels and their features ...", flush=True)
        figures: dict = generate(url)
        print(f"  {figures}", flush=True)
        plan = query_plan(url, last_day)
        print(f"one partition ({last_day}) ...", flush=True)
        partition_seconds, partition_rows = build(url, last_day)
        days = [last_day - timedelta(days=n) for n in range(args.backfill_days - 1, -1, -1)]
        print(f"backfill {days[0]}..{days[-1]} ({len(days)} partitions) ...", flush=True)
        per_day = []
        backfill_started = time.perf_counter()
        for day in days:
            seconds, rows = build(url, day)
            per_day.append({"base_dt": day.isoformat(), "seconds": round(seconds, 2), "rows": rows})
        backfill_seconds = time.perf_counter() - backfill_started

    figures.update(
        {
            "partition_base_dt": last_day.isoformat(),
            "partition_rows": partition_rows,
            "partition_seconds": round(partition_seconds, 2),
            "backfill_partitions": len(days),
            "backfill_seconds": round(backfill_seconds, 1),
            "backfill_rows": sum(day["rows"] for day in per_day),
            "backfill_max_partition_seconds": max(day["seconds"] for day in per_day),
            "retention_days": RETENTION_DAYS,
            "query_plan": plan,
            "backfill": per_day,
            "targets": {"partition_seconds <= 30": partition_seconds <= TARGET_PARTITION_SECONDS},
        }
    )
    path = write_results(
        "feature_table",
        figures,
        command="python -m bench.feature_table " + " ".join(argv or sys.argv[1:]),
        started_machine=started_machine,
    )
    print_figures("feature-table benchmark", figures)
    for line in plan:
        print(f"  plan: {line}")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
