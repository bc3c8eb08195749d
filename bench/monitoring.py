"""Monitoring benchmark: `model_monitoring` for one day over 1,000,000 prediction-log rows
on MariaDB (target: at most 30 s).

    .venv/bin/python -m bench.monitoring   # ~3 min; writes bench/results/monitoring.json

Data, in a benchmark-owned database: the synthetic generator writes 10,000 customers x 13
days ending the day after the model's training partition (the model: the benchmark home's
newest, trained once from the Kaggle sample, as the other benchmarks use it), so the
training window and the monitored day both have rows. The log gets 10,000 rows for the
monitored day (each customer's real features; 70% of predictions right; 90% champion, 10% a
shadow model no longer in the store), inserted in one multi-row statement, then copied 99
times inside MariaDB (`INSERT ... SELECT` against a numbers table) to 1,000,000 rows.
The timed step is the asset and its two checks, materialized as Dagster runs it.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from datetime import date, datetime, timedelta

from bench.common import (
    ensure_kaggle_model,
    machine,
    mariadb_buffer_pool_mb,
    mariadb_database,
    print_figures,
    write_results,
)

CUSTOMERS = 10_000
SEED_DAYS = 13
COPIES = 100
TARGET_SECONDS = 30
SHADOW_TAG = "credit_score_classifier:bench_retired_shadow"


def generate_log(url: str, served_tag: str, day: date, copies: int = COPIES) -> dict:
    """CUSTOMERS x COPIES log rows created on `day`; returns the generation figures."""
    from sqlalchemy import insert, select, text

    from credit_platform.core.db import make_engine
    from credit_platform.core.features import LABELS, MODEL_FEATURES, TARGET
    from credit_platform.core.schema import (
        credit_predictions_api_log,
        credit_score,
        credit_score_features,
    )

    engine = make_engine(url)
    started = time.perf_counter()
    feats, labels = credit_score_features, credit_score
    statement = (
        select(feats.c.customer_id, *[feats.c[name] for name in MODEL_FEATURES], labels.c[TARGET])
        .select_from(feats.join(labels, feats.c.id == labels.c.id))
        .where(feats.c.date == day)
    )
    draw = random.Random(0)
    start = datetime.combine(day, datetime.min.time())
    with engine.connect() as connection:
        rows = connection.execute(statement).all()
    base = []
    for position, row in enumerate(rows):
        record = row._mapping
        label = record[TARGET]
        right = draw.random() < 0.7
        base.append(
            {
                "request_id": f"b{position}",
                "customer_id": record["customer_id"],
                "features": {name: record[name] for name in MODEL_FEATURES},
                "prediction": label if right else LABELS[(LABELS.index(label) + 1) % 3],
                "confidence": 0.6,
                "elapsed_ms": draw.uniform(2.0, 40.0),
                "model_version": served_tag if draw.random() < 0.9 else SHADOW_TAG,
                "role": "champion",
                "created_at": start + timedelta(seconds=position),
            }
        )
    for row in base:
        if row["model_version"] == SHADOW_TAG:
            row["role"] = "shadow"
    with engine.begin() as connection:
        connection.execute(insert(credit_predictions_api_log), base)
        connection.execute(text("CREATE TABLE bench_copies (n INT PRIMARY KEY)"))
        connection.execute(
            text(
                "INSERT INTO bench_copies (n) VALUES "
                + ", ".join(f"({n})" for n in range(1, copies))
            )
        )
    based = time.perf_counter() - started
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO credit_predictions_api_log (request_id, customer_id, features, "
                "prediction, confidence, elapsed_ms, model_version, role, created_at) "
                "SELECT CONCAT(l.request_id, '-', c.n), l.customer_id, l.features, l.prediction, "
                "l.confidence, l.elapsed_ms + c.n * 0.01, l.model_version, l.role, "
                "l.created_at + INTERVAL (c.n * 700) SECOND "
                "FROM credit_predictions_api_log l CROSS JOIN bench_copies c"
            )
        )
        connection.execute(text("DROP TABLE bench_copies"))
    with engine.connect() as connection:
        connection.execute(text("ANALYZE TABLE credit_predictions_api_log")).all()
        total = connection.execute(
            text("SELECT COUNT(*) FROM credit_predictions_api_log")
        ).scalar_one()
    engine.dispose()
    return {
        "log_rows": int(total),
        "log_base_rows": len(base),
        "log_base_seconds": round(based, 1),
        "log_generation_seconds": round(time.perf_counter() - started, 1),
    }


def monitor(url: str, day: date) -> tuple[float, dict]:
    """The asset and its checks for `day`, as Dagster runs them; (seconds, metadata)."""
    from dagster import materialize

    from credit_platform.defs.assets.monitoring import MONITORING_CHECKS, model_monitoring
    from credit_platform.defs.resources.feature_store import FeatureStoreResource
    from credit_platform.defs.resources.monitoring_policy import MonitoringPolicyResource

    started = time.perf_counter()
    result = materialize(
        [model_monitoring, *MONITORING_CHECKS],
        partition_key=day.isoformat(),
        resources={
            "feature_store": FeatureStoreResource(url=url),
            "monitoring_policy": MonitoringPolicyResource(),
        },
    )
    seconds = time.perf_counter() - started
    if not result.success:
        raise SystemExit("error: model_monitoring failed")
    metadata = result.asset_materializations_for_node("model_monitoring")[0].metadata
    checks = {
        evaluation.check_name: evaluation.passed
        for evaluation in result.get_asset_check_evaluations()
    }
    return seconds, {
        "requests_reported": metadata["requests"].value,
        "champion_live_accuracy": metadata["champion_live_accuracy"].value,
        "champion_max_psi": metadata["champion_max_psi"].value,
        "report_rows": metadata["dagster/row_count"].value,
        "checks_passed": checks,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--copies", type=int, default=COPIES, help="log rows = 10,000 x this (default 100)"
    )
    args = parser.parse_args(argv)
    started_machine = machine()
    from credit_platform.core.model_store import model_metadata
    from credit_platform.ingest.synthetic import seed_synthetic

    served_tag = ensure_kaggle_model()
    partition = date.fromisoformat(model_metadata(served_tag)["partition"])
    day = partition + timedelta(days=1)
    with mariadb_database("bench_monitoring") as url:
        from credit_platform.core.db import make_engine

        print(f"seeding {CUSTOMERS:,} customers x {SEED_DAYS} days ending {day} ...", flush=True)
        engine = make_engine(url)
        seeded = time.perf_counter()
        seed_synthetic(
            engine,
            customers=CUSTOMERS,
            days=SEED_DAYS,
            start=day - timedelta(days=SEED_DAYS - 1),
            seed=0,
            progress=False,
        )
        engine.dispose()
        seed_seconds = time.perf_counter() - seeded
        print(f"generating {CUSTOMERS * args.copies:,} log rows ...", flush=True)
        figures: dict = {
            "seed_seconds": round(seed_seconds, 1),
            **generate_log(url, served_tag, day, args.copies),
        }
        print(f"  {figures}", flush=True)
        print(f"model_monitoring for {day} ...", flush=True)
        seconds, outcome = monitor(url, day)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures.update(
        {
            "day": day.isoformat(),
            "served_model": served_tag,
            "training_partition": partition.isoformat(),
            "monitoring_seconds": round(seconds, 2),
            "log_rows_per_second": round(figures["log_rows"] / seconds),
            "peak_rss_mb": round(peak_mb),
            "mariadb_buffer_pool_mb": mariadb_buffer_pool_mb(),
            **outcome,
            "targets": {f"monitoring_seconds <= {TARGET_SECONDS}": seconds <= TARGET_SECONDS},
        }
    )
    if args.copies != COPIES:
        print_figures("monitoring benchmark (a smaller log: not written)", figures)
        return 0
    path = write_results(
        "monitoring",
        figures,
        command="python -m bench.monitoring " + " ".join(argv or sys.argv[1:]),
        started_machine=started_machine,
    )
    print_figures("monitoring benchmark", figures)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
