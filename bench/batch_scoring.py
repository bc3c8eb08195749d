"""Batch-scoring benchmark: one day of `credit_score_predictions` for 1,000,000 customers,
the write included, on SQLite (and on MariaDB with --mariadb).

    .venv/bin/python -m bench.batch_scoring             # writes bench/results/batch_scoring.json
    .venv/bin/python -m bench.batch_scoring --mariadb   # SQLite, then the MariaDB server

Data: the synthetic generator makes one day of 100,000 customers through the platform's
writer (features only); the database then copies them nine times under new customer ids
(`INSERT ... SELECT`) to 1,000,000 feature rows on the day. The model is a real one: the
continuous-training job on the shared Kaggle sample (small grid), trained once per
benchmark home. The measured call is the asset's: `score_day` in one transaction, first on
an empty day, then again replacing the day's 1,000,000 rows. Target: 45 s each.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date

from bench.common import (
    bench_home,
    ensure_kaggle_model,
    machine,
    mariadb_database,
    print_figures,
    write_results,
)

DAY = date(2025, 9, 1)
BASE_CUSTOMERS = 100_000
TARGET_SECONDS = 45.0


def generate(url: str, customers: int) -> dict:
    """`customers` feature rows dated DAY (a multiple of BASE_CUSTOMERS, or fewer)."""
    import numpy as np
    from sqlalchemy import text

    from credit_platform.core.db import init_schema
    from credit_platform.core.features import MODEL_FEATURES
    from credit_platform.core.schema import credit_score_features
    from credit_platform.ingest.cleaning import CleaningLog
    from credit_platform.ingest.synthetic import customer_profiles, synthetic_days
    from credit_platform.ingest.writer import SourceWriter

    base = min(customers, BASE_CUSTOMERS)
    copies = max(1, customers // base)
    engine = init_schema(url)
    started = time.perf_counter()
    frames, _ = synthetic_days(
        customer_profiles(np.arange(1, base + 1), 0), [DAY], 0, CleaningLog()
    )
    with SourceWriter(
        engine, chunk_rows=20_000, progress=False, tables=(credit_score_features,)
    ) as writer:
        writer.write(frames)
    generated = time.perf_counter() - started
    concat = "||" if engine.dialect.name == "sqlite" else None
    columns = ", ".join(("date", "name", "ssn", *MODEL_FEATURES))
    with engine.begin() as connection:
        for copy in range(1, copies):
            suffix = f"-r{copy}"
            if concat:
                ids = f"id || '{suffix}', customer_id || '{suffix}'"
            else:
                ids = f"CONCAT(id, '{suffix}'), CONCAT(customer_id, '{suffix}')"
            connection.execute(
                text(
                    f"INSERT INTO credit_score_features (id, customer_id, {columns}) "
                    f"SELECT {ids}, {columns} FROM credit_score_features "
                    "WHERE id NOT LIKE '%-r%'"
                )
            )
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT COUNT(*) FROM credit_score_features")).scalar_one()
    engine.dispose()
    return {
        "feature_rows": int(rows),
        "generator_seconds": round(generated, 1),
        "generation_seconds": round(time.perf_counter() - started, 1),
    }


def measure(url: str, model_tag: str) -> dict:
    """Read-only pass, then the asset's scoring twice (empty day, then replace)."""
    from credit_platform.core.batch_scoring import read_feature_chunks, score_day
    from credit_platform.core.db import make_engine
    from credit_platform.core.model_store import load_model_bundle

    bundle = load_model_bundle(model_tag)
    engine = make_engine(url)
    try:
        started = time.perf_counter()
        with engine.connect() as connection:
            read_rows = sum(len(chunk) for chunk in read_feature_chunks(connection, DAY))
        read_seconds = time.perf_counter() - started
        runs = []
        for _ in ("first", "replace"):
            started = time.perf_counter()
            with engine.begin() as connection:
                result = score_day(connection, DAY, bundle)
            runs.append((time.perf_counter() - started, result))
    finally:
        engine.dispose()
    (first_seconds, first), (replace_seconds, again) = runs
    return {
        "rows_scored": first.rows,
        "read_only_rows": read_rows,
        "read_only_seconds": round(read_seconds, 2),
        "score_and_write_seconds": round(first_seconds, 2),
        "rows_per_second": round(first.rows / first_seconds),
        "replace_seconds": round(replace_seconds, 2),
        "replaced_rows": again.replaced_rows,
        "prediction_mix": dict(first.label_counts),
        "targets": {
            f"score_and_write_seconds <= {TARGET_SECONDS:g}": first_seconds <= TARGET_SECONDS,
            f"replace_seconds <= {TARGET_SECONDS:g}": replace_seconds <= TARGET_SECONDS,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--mariadb", action="store_true", help="Also measure on MariaDB.")
    args = parser.parse_args(argv)
    started_machine = machine()
    model_tag = ensure_kaggle_model()
    figures: dict = {"customers": args.customers, "model_tag": model_tag}

    path = bench_home() / "batch_scoring.db"
    path.unlink(missing_ok=True)
    url = f"sqlite:///{path}"
    print(f"SQLite: generating {args.customers:,} feature rows ...", flush=True)
    figures["sqlite"] = {**generate(url, args.customers), **measure(url, model_tag)}
    path.unlink(missing_ok=True)
    print_figures("batch scoring, SQLite", figures["sqlite"])

    if args.mariadb:
        with mariadb_database("bench_batch_scoring") as maria_url:
            print(f"MariaDB: generating {args.customers:,} feature rows ...", flush=True)
            figures["mariadb"] = {
                **generate(maria_url, args.customers),
                **measure(maria_url, model_tag),
            }
        print_figures("batch scoring, MariaDB", figures["mariadb"])

    written = write_results(
        "batch_scoring",
        figures,
        command="python -m bench.batch_scoring " + " ".join(argv or sys.argv[1:]),
        started_machine=started_machine,
    )
    print(f"written to {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
