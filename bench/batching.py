"""Single-row scoring under concurrency: the service's `CoalescingScorer` against BentoML's
adaptive batching, in one server, alternating, same run.

    .venv/bin/python -m bench.batching    # ~4 min; writes bench/results/batching.json

The routes of `bench/batching_service.py` score with the same model (the benchmark home's
Kaggle model) in the same 2-worker server; neither logs. wrk (`-t2 -c64`, closed loop)
sends single-row bodies from the Kaggle sample: `{"data": row}` to `/coalesced`,
`{"data": [row]}` to `/adaptive` and `/adaptive_loose` (a batchable API takes a list, which
BentoML's dispatcher joins with the lists of concurrent requests; max_latency_ms 20 and
1,000). Rounds alternate the order; each route's figure is the median of its runs, counting
2xx answers only (the dispatcher answers 503 to a request it expects to be late).
`/batch_sizes` reports the rows per model call each path made in one worker.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import requests

from bench.batching_service import LOOSE_LATENCY_MS, MAX_BATCH_SIZE, MAX_LATENCY_MS
from bench.common import (
    KAGGLE_SAMPLE,
    bench_home,
    ensure_kaggle_model,
    machine,
    print_figures,
    write_results,
)
from bench.serving import ensure_wrk, run_wrk
from credit_platform.core.service_process import ServiceProcess, free_port

ROUTES = {"coalesced": "/coalesced", "adaptive": "/adaptive", "adaptive_loose": "/adaptive_loose"}


def answered_rps(run) -> float:
    """2xx answers a second (BentoML's dispatcher refuses requests it expects to be late)."""
    return (run.requests - run.non_2xx - run.socket_errors) / run.seconds


def write_bodies(directory: Path) -> dict[str, Path]:
    from bench.sample_requests import load_sample, valid_request_payloads

    rows = valid_request_payloads(load_sample(KAGGLE_SAMPLE, rows=10_000), 500)
    bodies = {
        "coalesced": [json.dumps({"data": row}) for row in rows],
        "adaptive": [json.dumps({"data": [row]}) for row in rows],
    }
    bodies["adaptive_loose"] = bodies["adaptive"]
    paths = {}
    for name, lines in bodies.items():
        paths[name] = directory / f"{name}.jsonl"
        paths[name].write_text("".join(line + "\n" for line in lines))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)

    started_machine = machine()
    wrk = ensure_wrk()
    model_tag = ensure_kaggle_model()
    print(f"model: {model_tag}; platform home: {bench_home()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="credit_bench_batching_"))
    bodies = write_bodies(work)
    port = free_port()
    server = ServiceProcess(
        {**os.environ, "CREDIT_API_MODEL_TAG": model_tag},
        work / "service.log",
        port=port,
        command=[
            sys.executable,
            "-m",
            "bentoml",
            "serve",
            "bench.batching_service:BatchingBench",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
    )
    load = {"threads": 2, "connections": args.connections, "seconds": args.seconds}
    runs: dict[str, list] = {name: [] for name in ROUTES}
    try:
        server.wait_ready()
        for name, route in ROUTES.items():  # warm-up, and a check that each route answers
            answer = requests.post(
                f"{server.url}{route}", data=bodies[name].read_text().splitlines()[0], timeout=10
            )
            answer.raise_for_status()
            run_wrk(
                wrk, server.url, route, bodies[name], work, threads=1, connections=16, seconds=3
            )
        for number in range(args.rounds):
            order = list(ROUTES) if number % 2 == 0 else list(reversed(ROUTES))
            for name in order:
                run = run_wrk(wrk, server.url, ROUTES[name], bodies[name], work, **load)
                print(
                    f"round {number + 1} {name}: {answered_rps(run):,.0f}/s answered, "
                    f"{run.non_2xx + run.socket_errors} refused, p99 {run.p99_ms:.1f} ms",
                    flush=True,
                )
                runs[name].append(run)
        sizes = requests.post(f"{server.url}/batch_sizes", json={}, timeout=10).json()
    finally:
        server.stop()

    figures: dict = {"model_tag": model_tag, "load": load, "rounds": args.rounds}
    for name, done in runs.items():
        median = sorted(done, key=answered_rps)[len(done) // 2]
        figures[f"{name}_rps"] = round(statistics.median(map(answered_rps, done)), 1)
        figures[f"{name}_p50_ms"] = round(median.p50_ms, 2)
        figures[f"{name}_p99_ms"] = round(median.p99_ms, 2)
        figures[f"{name}_non_2xx"] = sum(run.non_2xx + run.socket_errors for run in done)
        figures[f"{name}_runs_rps"] = [round(answered_rps(run), 1) for run in done]
        figures[f"{name}_runs_p99_ms"] = [round(run.p99_ms, 2) for run in done]
    figures["coalesced_rows_per_call"] = round(
        sizes["coalesced_rows"] / max(sizes["coalesced_groups"], 1), 2
    )
    figures["adaptive_rows_per_call"] = round(
        sizes["adaptive_rows"] / max(sizes["adaptive_calls"], 1), 2
    )
    figures["adaptive_max_batch_size"] = MAX_BATCH_SIZE
    figures["adaptive_max_latency_ms"] = MAX_LATENCY_MS
    figures["adaptive_loose_max_latency_ms"] = LOOSE_LATENCY_MS
    figures["faster"] = max(ROUTES, key=lambda name: figures[f"{name}_rps"])
    print_figures("Single-row scoring: CoalescingScorer vs BentoML adaptive batching", figures)
    path = write_results(
        "batching", figures, command="python -m bench.batching", started_machine=started_machine
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
