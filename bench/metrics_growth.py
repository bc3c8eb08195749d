"""/metrics under paths a client makes up: the real service (MariaDB log), 10,000 requests
to random unknown paths (404s), and /metrics measured before and after them.

    .venv/bin/python -m bench.metrics_growth     # about 1 minute; bench/results/metrics_growth.json

Reports, before and after the random paths: the size of /metrics, its number of series
(sample lines), the median time to render it (5 GETs), and the resident memory of the
service's processes. Run from a checkout of older code (its `bench/` beside it) to compare.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import requests

from bench.common import (
    ensure_kaggle_model,
    machine,
    mariadb_database,
    print_figures,
    process_tree_rss_mb,
    write_results,
)
from credit_platform.core import routes
from credit_platform.core.service_process import ServiceProcess


def scrape(url: str, times: int = 5) -> dict:
    """Size, series and median render time of /metrics (each GET on a new connection). A
    scrape the service does not answer in time (BentoML's 60 s request timeout: 504) is
    counted, with its time; size and series then come from the answered ones, if any."""
    seconds = []
    statuses = []
    text = None
    for _ in range(times):
        started = time.perf_counter()
        response = requests.get(f"{url}{routes.METRICS}", timeout=600)
        seconds.append(time.perf_counter() - started)
        statuses.append(response.status_code)
        if response.status_code == 200:
            text = response.text
    figures: dict = {
        "render_ms_median": round(statistics.median(seconds) * 1000, 1),
        "scrapes_not_answered": sum(status != 200 for status in statuses),
        "statuses": statuses,
    }
    if text is not None:
        series = [line for line in text.splitlines() if line and not line.startswith("#")]
        # BentoML labels one gauge with each worker's pid: a series per worker that served.
        per_worker = sum('pid="' in line for line in series)
        figures.update(bytes=len(text.encode()), series=len(series), per_worker_series=per_worker)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", type=int, default=10_000, help="random unknown paths sent")
    parser.add_argument("--name", default="metrics_growth", help="results file name")
    args = parser.parse_args(argv)

    started_machine = machine()
    model_tag = ensure_kaggle_model()
    work = Path(tempfile.mkdtemp(prefix="credit_bench_metrics_"))
    figures: dict = {"model_tag": model_tag, "random_paths": args.paths}
    with mariadb_database("bench_metrics") as db_url:
        env = {
            **os.environ,
            "FEATURE_STORE_URL": db_url,
            "CREDIT_API_MODEL_TAG": model_tag,
            "CREDIT_PREDICTION_SPOOL_DIR": str(work / "spool"),
            "CREDIT_API_ADMIN_TOKEN": uuid.uuid4().hex,
        }
        server = ServiceProcess(env, work / "service.log")
        try:
            server.wait_ready()
            for attempt in range(20):  # every worker has served a request
                requests.get(f"{server.url}/warm-up-{attempt}", timeout=30)
            figures["before"] = {
                **scrape(server.url),
                "rss_mb": process_tree_rss_mb(server.process.pid),
            }
            started = time.perf_counter()
            with requests.Session() as session:
                for number in range(args.paths):
                    path = f"/{uuid.uuid4().hex[:12]}/{number}"
                    status = session.get(f"{server.url}{path}", timeout=30).status_code
                    if status != 404:
                        raise SystemExit(f"{path} answered {status}, expected 404")
            figures["paths_seconds"] = round(time.perf_counter() - started, 1)
            figures["after"] = {
                **scrape(server.url, times=3),
                "rss_mb": process_tree_rss_mb(server.process.pid),
            }
        finally:
            server.stop()
    for moment in ("before", "after"):
        print_figures(f"/metrics {moment} {args.paths:,} random paths", figures[moment])
    path = write_results(
        args.name,
        figures,
        command="python -m bench.metrics_growth",
        started_machine=started_machine,
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
