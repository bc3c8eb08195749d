"""Seed 004's Locust scenario against the real service (MariaDB log), recorded beside the
seed's own result. Optional: Locust is not a dependency of the platform.

    python3.11 -m venv /tmp/locust-venv && /tmp/locust-venv/bin/pip install locust==2.43.1
    .venv/bin/python -m bench.locust_run --locust /tmp/locust-venv/bin/locust
                                            # ~2.5 min; writes bench/results/locust.json
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import (
    REPO_ROOT,
    ensure_kaggle_model,
    machine,
    mariadb_database,
    print_figures,
    process_tree_rss_mb,
    write_results,
)
from bench.serving import service_env
from credit_platform.core.service_process import ServiceProcess

SEED = {"rps": 32.3, "p50_ms": 76, "p95_ms": 260, "p99_ms": 430, "requests": 3618, "failures": 4}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--locust", default=shutil.which("locust") or "locust")
    parser.add_argument("--run-time", default="120s")
    args = parser.parse_args(argv)
    if not Path(args.locust).exists() and not shutil.which(args.locust):
        raise SystemExit(
            "error: Locust is not installed; see the command in bench/locustfile.py "
            "(pip install locust==2.43.1 in a venv of its own), then pass --locust PATH"
        )
    started_machine = machine()
    model_tag = ensure_kaggle_model()
    work = Path(tempfile.mkdtemp(prefix="credit_bench_locust_"))
    with mariadb_database("bench_locust") as db_url:
        server = ServiceProcess(
            service_env(db_url, model_tag, work / "spool"), work / "service.log"
        )
        url = server.url
        try:
            server.wait_ready()
            print(f"locust: 100 users, 5/s, 1-5 s waits, {args.run_time}", flush=True)
            subprocess.run(
                [
                    args.locust, "-f", str(REPO_ROOT / "bench" / "locustfile.py"),
                    "--host", url, "--headless", "--users", "100", "--spawn-rate", "5",
                    "--run-time", args.run_time, "--csv", str(work / "locust"),
                    "--only-summary",
                ],
                check=True,
            )  # fmt: skip
            rss_mb = process_tree_rss_mb(server.process.pid)
        finally:
            server.stop()
    with (work / "locust_stats.csv").open() as stats:
        row = next(line for line in csv.DictReader(stats) if line["Name"] == "Aggregated")
    requests, failures = int(row["Request Count"]), int(row["Failure Count"])
    ours = {
        "rps": round(float(row["Requests/s"]), 1),
        "p50_ms": float(row["50%"]),
        "p95_ms": float(row["95%"]),
        "p99_ms": float(row["99%"]),
        "requests": requests,
        "failures": failures,
        "failure_rate": round(failures / requests, 5) if requests else None,
    }
    figures = {
        **{f"{key}": value for key, value in ours.items()},
        "seed": {**SEED, "failure_rate": round(SEED["failures"] / SEED["requests"], 5)},
        "model_tag": model_tag,
        "rss_mb": rss_mb,
        "scenario": "100 users, spawn rate 5/s, wait between(1, 5) s, POST /predict",
    }
    path = write_results(
        "locust",
        figures,
        command="python -m bench.locust_run " + " ".join(argv or sys.argv[1:]),
        started_machine=started_machine,
    )
    print_figures("locust (seed 004 scenario)", figures)
    print(f"  seed 004: {SEED}")
    print(f"written to {path}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
