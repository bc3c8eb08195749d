"""Memory and time of replaying a prediction-log spool left by a long database outage.

    .venv/bin/python -m bench.spool_replay                      # this checkout, ~2 min
    .venv/bin/python -m bench.spool_replay --a /old/checkout    # and another, alternating

A spool of `--rows` real log rows (the Kaggle sample's features as the service logs them) is
left in a spool directory under the name of a process that is gone, as a worker killed
during an outage leaves it; a new `PredictionLogger` finds it at start and replays it into
a fresh MariaDB database. Each replay runs in a process of its own (the checkout's code on
its path), which reports its resident memory before the logger starts and at its peak, and
the seconds until every row is in the table. With `--a`, the checkouts alternate round by
round. Writes bench/results/spool_replay.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import KAGGLE_SAMPLE, machine, mariadb_database, print_figures, write_results

REPO = Path(__file__).resolve().parents[1]
# A pid no process has (above the kernel's pid_max), so the spool is a dead process's.
GONE_PID = 4_194_305
REPLAY_TIMEOUT_SECONDS = 900


def write_spool(spool_dir: Path, rows: int) -> Path:
    """`rows` log rows as the spool's JSON lines, under a gone process's name."""
    from api.prediction_log import SPOOL_PREFIX
    from bench.sample_requests import load_sample, log_row, valid_request_payloads

    payloads = valid_request_payloads(load_sample(KAGGLE_SAMPLE, rows=3_000), 1_000)
    now = datetime.now(UTC).replace(tzinfo=None)
    path = spool_dir / f"{SPOOL_PREFIX}{GONE_PID}.jsonl"
    with path.open("w", encoding="utf-8") as spool:
        for number in range(rows):
            row = log_row(payloads[number % len(payloads)], f"outage-{number}", now)
            spool.write(row.to_json() + "\n")
    return path


def resident_mb() -> float:
    """This process's resident memory now (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def replay_in_this_process(url: str, spool_dir: Path, rows: int) -> dict:
    """The child's side: start a logger, wait until the spool is replayed, report."""
    from sqlalchemy import create_engine, func, select

    from api.prediction_log import PredictionLogger
    from credit_platform.core.schema import credit_predictions_api_log

    before_mb = resident_mb()
    started = time.perf_counter()
    logger = PredictionLogger(url, spool_dir)
    deadline = time.monotonic() + REPLAY_TIMEOUT_SECONDS
    while logger.stats.replayed_rows < rows and time.monotonic() < deadline:
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    logger.close()
    engine = create_engine(url)
    with engine.connect() as connection:
        logged = connection.scalar(select(func.count()).select_from(credit_predictions_api_log))
    engine.dispose()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "rows_in_table": logged,
        "seconds": round(seconds, 2),
        "rss_before_mb": round(before_mb, 1),
        "peak_rss_mb": round(peak_mb, 1),
        "replay_growth_mb": round(peak_mb - before_mb, 1),
        "spool_left": sorted(path.name for path in spool_dir.iterdir() if path.suffix == ".jsonl"),
    }


def measure(tree: Path, rows: int) -> dict:
    """One replay of a fresh spool into a fresh database with `tree`'s code."""
    with (
        tempfile.TemporaryDirectory(prefix="spool-replay-") as folder,
        mariadb_database("bench_spool") as url,
    ):
        spool_dir = Path(folder)
        spool = write_spool(spool_dir, rows)
        spool_mb = spool.stat().st_size / 2**20
        # This file runs the child; the logger it measures is `tree`'s.
        env = {**os.environ, "PYTHONPATH": str(tree)}
        child = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", url, str(spool_dir)]
            + ["--rows", str(rows)],
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode != 0:
            raise SystemExit(f"the replay in {tree} failed:\n{child.stderr[-3000:]}")
        figures = json.loads(child.stdout.strip().splitlines()[-1])
        figures["spool_mb"] = round(spool_mb, 1)
        if figures["rows_in_table"] != rows or figures["spool_left"]:
            raise SystemExit(f"the replay in {tree} lost rows or left its spool: {figures}")
        return figures


def summary(runs: list[dict]) -> dict:
    return {
        "replay_growth_mb_median": statistics.median(run["replay_growth_mb"] for run in runs),
        "peak_rss_mb_median": statistics.median(run["peak_rss_mb"] for run in runs),
        "seconds_median": statistics.median(run["seconds"] for run in runs),
        "rows_per_second_median": round(
            statistics.median(run["rows_in_table"] / run["seconds"] for run in runs)
        ),
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--a", type=Path, help="another checkout, measured in turn with this")
    parser.add_argument("--child", nargs=2, metavar=("URL", "SPOOL_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        url, spool_dir = args.child
        print(json.dumps(replay_in_this_process(url, Path(spool_dir), args.rows)))
        return
    started_machine = machine()
    trees = {"b": REPO} if args.a is None else {"a": args.a.resolve(), "b": REPO}
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    for round_number in range(args.rounds):
        order = list(trees) if round_number % 2 == 0 else list(reversed(trees))
        for name in order:
            runs[name].append(measure(trees[name], args.rows))
            print(f"round {round_number + 1} {name}: {runs[name][-1]}", flush=True)
    figures = {"rows": args.rows, "rounds": args.rounds}
    for name, tree in trees.items():
        figures[name] = {"tree": str(tree), **summary(runs[name])}
        print_figures(f"{name} ({tree})", figures[name])
    command = "python -m bench.spool_replay " + " ".join(sys.argv[1:])
    path = write_results("spool_replay", figures, command=command, started_machine=started_machine)
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
