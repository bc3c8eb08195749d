"""Reason codes' cost: explained against unexplained /predict traffic, same service, same
run; and unexplained traffic against the code before reason codes (A/B, alternating).

    .venv/bin/python -m bench.explain_serving [--base-repo PATH] [--rounds 2] [--seconds 15]

1. In-process, the served model (the Kaggle partition's, as `bench.serving`): CPU per row
   of `Predictor.predict` and of `Predictor.explain` (CatBoost's SHAP values, grouped into
   reasons), for single rows and for rows in 1,000-row calls.
2. The real service (`credit-platform serve`, 2 workers, MariaDB log), and with
   `--base-repo` a second one started from that checkout (e.g. a worktree of the previous
   commit), each on a fresh database. Per round, closed-loop wrk runs of single-row
   /predict, alternating the order: this code unexplained, the base unexplained, this code
   explained ("explain": true, 3 reasons). The workers' CPU per answered row is read from
   /proc. After the runs every answered id must be logged once, and every explained row
   with its reasons.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    KAGGLE_SAMPLE,
    bench_home,
    children_cpu_seconds,
    ensure_kaggle_model,
    machine,
    mariadb_database,
    print_figures,
    write_results,
)
from bench.serving import check_log, ensure_wrk, run_wrk, service_env, warm_up
from credit_platform.core import routes
from credit_platform.core.service_process import ServiceProcess, free_port

REASONS = 3


def write_bodies(directory: Path) -> tuple[Path, Path, list[dict]]:
    """The same 500 valid sample rows as single-row bodies, without and with "explain"."""
    from bench.sample_requests import load_sample, valid_request_payloads

    rows = valid_request_payloads(load_sample(KAGGLE_SAMPLE, rows=10_000), 2000)
    plain = directory / "single.jsonl"
    plain.write_text("".join(json.dumps({"data": row}) + "\n" for row in rows[:500]))
    explained = directory / "single_explained.jsonl"
    explained.write_text(
        "".join(
            json.dumps({"data": row, "explain": True, "reasons": REASONS}) + "\n"
            for row in rows[:500]
        )
    )
    return plain, explained, rows


def in_process_costs(model_tag: str, rows: list[dict]) -> dict:
    """CPU microseconds per row of predict and of explain, one row per call and 1,000 rows
    per call (the median of repeated calls, process CPU time, one CatBoost thread)."""
    from api.predictor import load_predictor
    from credit_platform.core.features import MODEL_FEATURES

    predictor = load_predictor(model_tag)
    records = [{name: row[name] for name in MODEL_FEATURES} for row in rows]

    def per_row(call, batch: list[dict], repeats: int) -> float:
        call(batch)  # warm
        times = []
        for _ in range(repeats):
            started = time.process_time()
            call(batch)
            times.append(time.process_time() - started)
        return round(statistics.median(times) * 1e6 / len(batch), 1)

    def explain(batch: list[dict]) -> None:
        predictor.explain(batch, predictor.predict(batch), REASONS)

    model = predictor.bundle.model
    single = records[:1]
    batch = (records * 2)[:1000]
    return {
        "model_trees": int(model.tree_count_),
        "model_depth": int(model.get_all_params().get("depth", 0)),
        "model_columns": len(model.feature_names_),
        "predict_cpu_us_per_row_single": per_row(predictor.predict, single, 200),
        "explain_cpu_us_per_row_single": per_row(explain, single, 30),
        "predict_cpu_us_per_row_in_1000": per_row(predictor.predict, batch, 10),
        "explain_cpu_us_per_row_in_1000": per_row(explain, batch, 3),
    }


def explained_rows_logged(db_url: str, prefix: str) -> tuple[int, int]:
    """(rows of the run, rows of it with reasons)."""
    from sqlalchemy import create_engine, func, select

    from credit_platform.core.schema import credit_predictions_api_log as log

    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            total, explained = connection.execute(
                select(func.count(), func.count(log.c.reasons)).where(
                    log.c.request_id.like(f"{prefix}-%")
                )
            ).one()
    finally:
        engine.dispose()
    return int(total), int(explained)


def base_command(repo: Path, port: int) -> list[str]:
    """`credit-platform serve` of another checkout: run from it, so its code is imported."""
    serve = (
        f"cd {str(repo)!r} && exec {sys.executable!r} -m credit_platform.cli.serve "
        f"--host 127.0.0.1 --port {port}"
    )
    return ["bash", "-c", serve]


def measured_run(wrk: str, server: ServiceProcess, bodies: Path, work: Path, load: dict):
    before = children_cpu_seconds(server.process.pid)
    run = run_wrk(wrk, server.url, routes.PREDICT, bodies, work, **load)
    after = children_cpu_seconds(server.process.pid)
    cpu = sum(after[pid] - before.get(pid, 0.0) for pid in after)
    return run, round(cpu * 1e6 / run.ok, 1) if run.ok else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=15, help="length of each load run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument(
        "--base-repo", type=Path, default=None, help="a checkout of the code to compare with"
    )
    parser.add_argument(
        "--model-tag",
        default=None,
        help="a model of the benchmark home's store to serve "
        "(default: the Kaggle partition's, small grid, trained once per home)",
    )
    parser.add_argument(
        "--in-process-only", action="store_true", help="only the in-process cost per row"
    )
    args = parser.parse_args(argv)

    started_machine = machine()
    wrk = ensure_wrk()
    model_tag = args.model_tag or ensure_kaggle_model()
    print(f"model: {model_tag}; platform home: {bench_home()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="credit_bench_explain_"))
    plain, explained, rows = write_bodies(work)
    load = {"threads": args.threads, "connections": args.connections, "seconds": args.seconds}
    figures: dict = {"model_tag": model_tag, "load": load, "reasons": REASONS}
    print("in-process cost per row", flush=True)
    figures.update(in_process_costs(model_tag, rows))
    if args.in_process_only:
        path = write_results(
            "explain_in_process",
            figures,
            command="python -m bench.explain_serving " + " ".join(argv or sys.argv[1:]),
            started_machine=started_machine,
        )
        print_figures("explained rows in-process", figures)
        print(f"written to {path}")
        return 0

    runs: dict[str, list] = {"this": [], "explained": [], "base": []}
    cpu: dict[str, list] = {"this": [], "explained": [], "base": []}
    with mariadb_database("bench_explain") as db_url, mariadb_database("bench_base") as base_url:
        servers = {
            "this": ServiceProcess(
                service_env(db_url, model_tag, work / "spool"), work / "service.log"
            )
        }
        if args.base_repo:
            port = free_port()
            servers["base"] = ServiceProcess(
                service_env(base_url, model_tag, work / "base_spool"),
                work / "base.log",
                port=port,
                command=base_command(args.base_repo.resolve(), port),
            )
        try:
            for server in servers.values():
                server.wait_ready(timeout=300)
                warm_up(wrk, server.url, plain, work)
            for number in range(args.rounds):
                order = (
                    ["this", "base", "explained"]
                    if number % 2 == 0
                    else [
                        "explained",
                        "base",
                        "this",
                    ]
                )
                for name in order:
                    if name not in servers and name != "explained":
                        continue
                    server = servers["this" if name == "explained" else name]
                    bodies = explained if name == "explained" else plain
                    print(f"round {number + 1}/{args.rounds}: {name}", flush=True)
                    run, per_row = measured_run(wrk, server, bodies, work, load)
                    runs[name].append(run)
                    cpu[name].append(per_row)
        finally:
            for server in servers.values():
                server.stop()
        checks = {
            f"{name}_{number + 1}": check_log(base_url if name == "base" else db_url, run)
            for name, named_runs in runs.items()
            for number, run in enumerate(named_runs)
        }
        with_reasons = [explained_rows_logged(db_url, run.prefix) for run in runs["explained"]]

    def median_rps(name: str) -> float | None:
        return round(statistics.median(run.rps for run in runs[name]), 1) if runs[name] else None

    figures.update(
        {
            "rps_unexplained": median_rps("this"),
            "rps_unexplained_runs": [round(run.rps, 1) for run in runs["this"]],
            "rps_explained": median_rps("explained"),
            "rps_explained_runs": [round(run.rps, 1) for run in runs["explained"]],
            "explained_p50_ms": [round(run.p50_ms, 1) for run in runs["explained"]],
            "explained_p99_ms": [round(run.p99_ms, 1) for run in runs["explained"]],
            "unexplained_p99_ms": [round(run.p99_ms, 1) for run in runs["this"]],
            "worker_cpu_us_per_row_unexplained": cpu["this"],
            "worker_cpu_us_per_row_explained": cpu["explained"],
            "non_2xx": sum(
                run.non_2xx + run.socket_errors for named in runs.values() for run in named
            ),
            "explained_rows_logged_with_reasons": with_reasons,
            "log_checks": checks,
        }
    )
    if runs["base"]:
        figures.update(
            {
                "base_repo": str(args.base_repo),
                "rps_unexplained_base": median_rps("base"),
                "rps_unexplained_base_runs": [round(run.rps, 1) for run in runs["base"]],
                "base_p99_ms": [round(run.p99_ms, 1) for run in runs["base"]],
                "worker_cpu_us_per_row_base": cpu["base"],
                "unexplained_change_vs_base": round(median_rps("this") / median_rps("base") - 1, 4),
            }
        )
    figures["every 2xx logged once, explained ones with reasons"] = all(
        check["answered_but_not_logged_once"] == 0 and check["duplicates"] == 0
        for check in checks.values()
    ) and all(total == explained_count for total, explained_count in with_reasons)
    path = write_results(
        "explain_serving",
        figures,
        command="python -m bench.explain_serving " + " ".join(argv or sys.argv[1:]),
        started_machine=started_machine,
    )
    print_figures("explained serving", figures)
    print(f"written to {path}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
