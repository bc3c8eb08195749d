"""Serving benchmark: the real service, a real model, logging to the real MariaDB, under
load from wrk on loopback; then the seed-style baseline under the same load.

    .venv/bin/python -m bench.serving     # about 4 minutes; writes bench/results/serving.json

Runs, in order: (1) three closed-loop capacity runs of single-row /predict (wrk, as fast
as the service answers; the median is the capacity); (2) a fixed-rate run at 80% of it,
whose latency percentiles are the reported ones; (3) /predict_batch with 1,000-row bodies;
(4) the seed-style baseline (`bench/baseline/seed_service.py`) under the capacity runs'
load. After the runs it checks the log: every X-Request-ID that got a 2xx must be in
`credit_predictions_api_log` exactly once.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    KAGGLE_SAMPLE,
    REPO_ROOT,
    bench_home,
    children_cpu_seconds,
    ensure_kaggle_model,
    machine,
    mariadb_buffer_pool_mb,
    mariadb_database,
    print_figures,
    process_cpu_seconds,
    process_tree_rss_mb,
    write_results,
)
from credit_platform.core import routes
from credit_platform.core.service_process import ServiceProcess, free_port

LUA = REPO_ROOT / "bench" / "wrk" / "load.lua"
BATCH_ROWS = 1000
TARGETS = {
    "rps": 1000,
    "p99_ms": 50,
    "ratio": 10,
    "batch_rows_per_s": 50_000,
}


def ensure_wrk() -> str:
    """wrk from Debian's packages; installed when missing and we may, else a clear error."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing: apt-get install -y wrk", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False)
        found = shutil.which("wrk")
        if not found:
            subprocess.run(["apt-get", "update", "-qq"], check=False)
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False)
            found = shutil.which("wrk")
    if not found:
        raise SystemExit(
            "error: the serving benchmark needs wrk (Debian package 'wrk'): "
            "run `sudo apt-get install -y wrk` and try again"
        )
    return found


@dataclass
class WrkRun:
    prefix: str
    requests: int
    non_2xx: int
    socket_errors: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    answered_ids: list[str]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def ok(self) -> int:
        return len(self.answered_ids)


def write_bodies(directory: Path) -> tuple[Path, Path]:
    """Request bodies from valid rows of the shared Kaggle sample: single rows, and
    1,000-row batches."""
    from bench.sample_requests import load_sample, valid_request_payloads

    rows = valid_request_payloads(load_sample(KAGGLE_SAMPLE, rows=10_000), 2000)
    single = directory / "single.jsonl"
    single.write_text("".join(json.dumps({"data": row}) + "\n" for row in rows[:500]))
    batch = directory / "batch.jsonl"
    batch.write_text(
        "".join(
            json.dumps({"data": (rows[offset:] + rows[:offset])[:BATCH_ROWS]}) + "\n"
            for offset in (0, 250, 500, 750)
        )
    )
    return single, batch


def run_wrk(
    wrk: str,
    url: str,
    path: str,
    bodies: Path,
    work: Path,
    *,
    threads: int,
    connections: int,
    seconds: int,
    rate: int = 0,
) -> WrkRun:
    prefix = f"b{uuid.uuid4().hex[:10]}"
    ids_dir = work / prefix
    ids_dir.mkdir()
    command = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        url,
        "--",
        path,
        prefix,
        str(bodies),
        str(ids_dir),
        str(rate),
        str(threads),
    ]
    completed = subprocess.run(command, capture_output=True, text=True)
    match = re.search(r"^WRK_JSON (\{.*\})$", completed.stdout, re.MULTILINE)
    if completed.returncode != 0 or not match:
        raise SystemExit(f"error: wrk failed:\n{completed.stdout}\n{completed.stderr}")
    summary = json.loads(match.group(1))
    answered = [
        line.strip()
        for file in sorted(ids_dir.glob("*.ids"))
        for line in file.read_text().splitlines()
        if line.strip()
    ]
    return WrkRun(
        prefix=prefix,
        requests=int(summary["requests"]),
        non_2xx=int(summary["errors_status"]),
        socket_errors=sum(
            int(summary[key])
            for key in ("errors_connect", "errors_read", "errors_write", "errors_timeout")
        ),
        seconds=summary["duration_us"] / 1e6,
        p50_ms=summary["p50_us"] / 1000,
        p95_ms=summary["p95_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        max_ms=summary["max_us"] / 1000,
        answered_ids=answered,
    )


def logged_request_ids(url: str, prefix: str) -> list[str]:
    from sqlalchemy import create_engine, select

    from credit_platform.core.schema import credit_predictions_api_log as log

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(
                connection.execute(
                    select(log.c.request_id).where(log.c.request_id.like(f"{prefix}-%"))
                ).scalars()
            )
    finally:
        engine.dispose()


def check_log(db_url: str, run: WrkRun, *, rows_per_request: int = 1) -> dict:
    """Every answered id logged exactly once (batches: one row per position, "<id>#<n>")."""
    logged = logged_request_ids(db_url, run.prefix)
    counts: dict[str, int] = {}
    for request_id in logged:
        key = request_id.rsplit("#", 1)[0] if rows_per_request > 1 else request_id
        counts[key] = counts.get(key, 0) + 1
    missing = [rid for rid in run.answered_ids if counts.get(rid, 0) != rows_per_request]
    return {
        "logged_rows": len(logged),
        "answered_rows": run.ok * rows_per_request,
        "answered_but_not_logged_once": len(missing),
        "duplicates": len(logged) - len(set(logged)),
    }


def service_env(db_url: str, model_tag: str, spool: Path) -> dict[str, str]:
    return {
        **os.environ,
        "FEATURE_STORE_URL": db_url,
        "CREDIT_API_MODEL_TAG": model_tag,
        "CREDIT_PREDICTION_SPOOL_DIR": str(spool),
        "CREDIT_API_ADMIN_TOKEN": uuid.uuid4().hex,
    }


def warm_up(wrk: str, url: str, bodies: Path, work: Path) -> None:
    run_wrk(wrk, url, routes.PREDICT, bodies, work, threads=1, connections=16, seconds=3)


def cpu_per_row(
    workers_after: dict[int, float],
    workers_before: dict[int, float],
    mariadb_after: float | None,
    mariadb_before: float | None,
    *,
    rows: int,
    seconds: float,
) -> dict:
    """Where a batch row's CPU goes: the service's workers and, when it runs on this
    machine, the MariaDB server (microseconds of CPU per answered row, and cores used)."""
    worker_seconds = sum(
        after - workers_before.get(pid, 0.0) for pid, after in workers_after.items()
    )
    figures = {
        "batch_worker_cpu_us_per_row": round(worker_seconds * 1e6 / rows, 1) if rows else None,
        "batch_worker_cpu_share": sorted(
            round((after - workers_before.get(pid, 0.0)) / seconds, 2)
            for pid, after in workers_after.items()
        ),
    }
    if mariadb_after is not None and mariadb_before is not None:
        used = mariadb_after - mariadb_before
        figures["batch_mariadb_cpu_us_per_row"] = round(used * 1e6 / rows, 1) if rows else None
        figures["batch_mariadb_cpu_share"] = round(used / seconds, 2)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=20, help="length of each load run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument(
        "--capacity-runs", type=int, default=3, help="closed-loop runs; the median is reported"
    )
    parser.add_argument(
        "--batch-connections", type=int, default=8, help="connections of the batch run"
    )
    args = parser.parse_args(argv)

    started_machine = machine()
    wrk = ensure_wrk()
    model_tag = ensure_kaggle_model()
    print(f"model: {model_tag}; platform home: {bench_home()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="credit_bench_serving_"))
    single, batch = write_bodies(work)
    load = {"threads": args.threads, "connections": args.connections, "seconds": args.seconds}
    figures: dict = {"model_tag": model_tag, "load": load}

    figures["mariadb_buffer_pool_mb"] = mariadb_buffer_pool_mb()
    with mariadb_database("bench_serving") as db_url:
        server = ServiceProcess(
            service_env(db_url, model_tag, work / "spool"), work / "service.log"
        )
        url = server.url
        try:
            server.wait_ready()
            warm_up(wrk, url, single, work)
            capacity_runs = []
            for number in range(args.capacity_runs):
                print(
                    f"capacity run {number + 1}/{args.capacity_runs}: {args.connections} "
                    f"connections, {args.seconds}s",
                    flush=True,
                )
                capacity_runs.append(run_wrk(wrk, url, routes.PREDICT, single, work, **load))
            capacity = sorted(capacity_runs, key=lambda run: run.rps)[len(capacity_runs) // 2]
            rate = int(capacity.rps * 0.8)
            print(
                f"fixed-rate run at {rate}/s (80% of the median {capacity.rps:.0f}/s)",
                flush=True,
            )
            cpu_before = children_cpu_seconds(server.process.pid)
            latency = run_wrk(wrk, url, routes.PREDICT, single, work, **load, rate=rate)
            cpu_after = children_cpu_seconds(server.process.pid)
            worker_cpu = sorted(
                round((cpu_after[pid] - cpu_before.get(pid, 0.0)) / latency.seconds, 2)
                for pid in cpu_after
            )
            print("batch run: /predict_batch with 1,000-row bodies", flush=True)
            cpu_before = children_cpu_seconds(server.process.pid)
            mariadb_before = process_cpu_seconds("mariadbd")
            batches = run_wrk(
                wrk,
                url,
                routes.PREDICT_BATCH,
                batch,
                work,
                threads=1,
                connections=args.batch_connections,
                seconds=args.seconds,
            )
            batch_cpu = cpu_per_row(
                children_cpu_seconds(server.process.pid),
                cpu_before,
                process_cpu_seconds("mariadbd"),
                mariadb_before,
                rows=batches.ok * BATCH_ROWS,
                seconds=batches.seconds,
            )
            rss_mb = process_tree_rss_mb(server.process.pid)
        finally:
            server.stop()
        checks = {
            **{
                f"capacity_{number + 1}": check_log(db_url, run)
                for number, run in enumerate(capacity_runs)
            },
            "fixed_rate": check_log(db_url, latency),
            "batch": check_log(db_url, batches, rows_per_request=BATCH_ROWS),
        }

    with mariadb_database("bench_baseline") as baseline_url:
        port = free_port()
        baseline = ServiceProcess(
            service_env(baseline_url, model_tag, work / "baseline_spool"),
            work / "baseline.log",
            port=port,
            command=[
                sys.executable,
                "-m",
                "bentoml",
                "serve",
                "bench.baseline.seed_service:SeedBaselineService",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--working-dir",
                str(REPO_ROOT),
            ],
        )
        url = baseline.url
        try:
            baseline.wait_ready()
            warm_up(wrk, url, single, work)
            print("baseline capacity run (seed-style service, same load)", flush=True)
            base = run_wrk(wrk, url, routes.PREDICT, single, work, **load)
        finally:
            baseline.stop()
        checks["baseline"] = check_log(baseline_url, base)

    single_runs = (*capacity_runs, latency)
    figures.update(
        {
            "rps": round(capacity.rps, 1),
            "p50_ms": round(latency.p50_ms, 2),
            "p95_ms": round(latency.p95_ms, 2),
            "p99_ms": round(latency.p99_ms, 2),
            "fixed_rate_offered_rps": rate,
            "fixed_rate_achieved_rps": round(latency.rps, 1),
            "capacity_p99_ms": round(capacity.p99_ms, 2),
            "requests": sum(run.requests for run in single_runs),
            "non_2xx": sum(run.non_2xx for run in single_runs),
            "socket_errors": sum(run.socket_errors for run in single_runs),
            "answered_2xx": sum(run.ok for run in single_runs),
            "capacity_runs_rps": [round(run.rps, 1) for run in capacity_runs],
            "fixed_rate_worker_cpu_share": worker_cpu,
            "logged_rows": sum(
                check["logged_rows"]
                for name, check in checks.items()
                if name != "batch" and name != "baseline"
            ),
            "answered_but_not_logged_once": sum(
                check["answered_but_not_logged_once"] for check in checks.values()
            ),
            "baseline_rps": round(base.rps, 1),
            "baseline_p99_ms": round(base.p99_ms, 2),
            "ratio": round(capacity.rps / base.rps, 1) if base.rps else None,
            "batch_rows_per_s": round(batches.ok * BATCH_ROWS / batches.seconds),
            "batch_requests": batches.requests,
            "batch_non_2xx": batches.non_2xx,
            "batch_connections": args.batch_connections,
            **batch_cpu,
            "rss_mb": rss_mb,
            "log_checks": checks,
        }
    )
    figures["targets"] = {
        "rps >= 1000": figures["rps"] >= TARGETS["rps"],
        "p99_ms <= 50 at 80% of capacity": figures["p99_ms"] <= TARGETS["p99_ms"],
        "zero non-2xx": figures["non_2xx"] == 0 and figures["socket_errors"] == 0,
        "every 2xx logged exactly once": all(
            check["answered_but_not_logged_once"] == 0 and check["duplicates"] == 0
            for check in checks.values()
        ),
        "ratio >= 10": (figures["ratio"] or 0) >= TARGETS["ratio"],
        "batch_rows_per_s >= 50000": figures["batch_rows_per_s"] >= TARGETS["batch_rows_per_s"],
    }
    path = write_results(
        "serving",
        figures,
        command="python -m bench.serving " + " ".join(argv or sys.argv[1:]),
        started_machine=started_machine,
    )
    print_figures("serving benchmark", figures)
    for target, met in figures["targets"].items():
        print(f"  {'met   ' if met else 'MISSED'} {target}")
    print(f"written to {path}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
