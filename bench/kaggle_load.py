"""Kaggle loader benchmark: `credit-platform seed kaggle` on a 640,000-row file (about 200 MB).

    .venv/bin/python -m bench.kaggle_load   # 10-15 minutes; writes bench/results/kaggle_load.json

The file is the shared sample repeated 64 times in a temporary directory, each copy with
ids and customer ids of its own (`<id>_<copy>`), so every row is stored. The command runs as
a user runs it (progress on stderr) into a fresh feature store (embedded SQLite, or MariaDB
with --mariadb); the figures are its wall-clock time, its CPU time and its peak resident
memory (the child's own maximum RSS from wait4). A second run of the same command measures
a reload, which stores nothing new.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

from bench.common import (
    KAGGLE_SAMPLE,
    REPO_ROOT,
    machine,
    mariadb_database,
    print_figures,
    write_results,
)

COPIES = 64
TARGET_PEAK_RSS_MB = 500


def make_file(path: Path, copies: int) -> int:
    """The shared sample repeated `copies` times with new ids; returns the data rows written."""
    if not KAGGLE_SAMPLE.exists():
        raise SystemExit(f"error: the shared Kaggle sample is missing at {KAGGLE_SAMPLE}")
    with KAGGLE_SAMPLE.open(newline="", encoding="utf-8") as source:
        reader = csv.reader(source)
        header = next(reader)
        rows = list(reader)
    id_column, customer_column = header.index("id"), header.index("customer_id")
    written = 0
    with path.open("w", newline="", encoding="utf-8") as target:
        writer = csv.writer(target)
        writer.writerow(header)
        for copy in range(copies):
            for row in rows:
                row = list(row)
                row[id_column] = f"{row[id_column]}_{copy:02d}"
                row[customer_column] = f"{row[customer_column]}_{copy:02d}"
                writer.writerow(row)
                written += 1
    return written


def timed_load(csv_path: Path, db_url: str, log: Path, chunk_rows: int | None) -> dict:
    """Run the command once; its seconds, peak RSS and the summary lines it printed."""
    command = [sys.executable, "-m", "credit_platform.cli.main", "seed", "kaggle", str(csv_path)]
    command += ["--db-url", db_url]
    if chunk_rows:
        command += ["--chunk-rows", str(chunk_rows)]
    with log.open("a") as progress:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=progress, text=True
        )
        stdout = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.stderr.write(stdout[-4000:] + log.read_text()[-4000:])
        raise SystemExit(f"error: {' '.join(command)} failed")
    lines = stdout.splitlines()
    summary = {
        line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip()
        for line in lines
        if line.strip().startswith(("rows read", "credit_score_features:"))
    }
    return {
        "seconds": round(seconds, 1),
        # CPU time of the command itself: on a shared machine a steadier figure than wall time.
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
        "summary": summary,
    }


def report(run: dict) -> None:
    cpu, rss = run["cpu_seconds"], run["peak_rss_mb"]
    print(f"  {run['seconds']} s ({cpu} s CPU), peak RSS {rss} MB", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=COPIES, help="sample copies (10,000 rows)")
    parser.add_argument("--mariadb", action="store_true", help="load into MariaDB, not SQLite")
    parser.add_argument("--chunk-rows", type=int, default=None, help="the command's chunk size")
    args = parser.parse_args(argv)
    started_machine = machine()
    work = Path(tempfile.mkdtemp(prefix="credit_bench_kaggle_load_"))
    try:
        csv_path = work / "kaggle_large.csv"
        print(f"writing {args.copies} copies of the shared sample ...", flush=True)
        rows = make_file(csv_path, args.copies)
        size_mb = csv_path.stat().st_size / 1024 / 1024
        print(f"  {rows:,} rows, {size_mb:,.0f} MB", flush=True)
        store = (
            mariadb_database("bench_kaggle_load")
            if args.mariadb
            else nullcontext(f"sqlite:///{work / 'feature_store.db'}")
        )
        with store as db_url:
            print("$ credit-platform seed kaggle kaggle_large.csv (first load) ...", flush=True)
            first = timed_load(csv_path, db_url, work / "progress.log", args.chunk_rows)
            report(first)
            print("$ credit-platform seed kaggle kaggle_large.csv (reload) ...", flush=True)
            again = timed_load(csv_path, db_url, work / "progress.log", args.chunk_rows)
            report(again)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures = {
        "rows": rows,
        "file_mb": round(size_mb, 1),
        "store": "mariadb" if args.mariadb else "sqlite",
        "chunk_rows": args.chunk_rows or "default",
        "load_seconds": first["seconds"],
        "load_cpu_seconds": first["cpu_seconds"],
        "load_rows_per_second": round(rows / first["seconds"]),
        "load_peak_rss_mb": first["peak_rss_mb"],
        "reload_seconds": again["seconds"],
        "reload_cpu_seconds": again["cpu_seconds"],
        "reload_peak_rss_mb": again["peak_rss_mb"],
        "load_summary": first["summary"],
        "reload_summary": again["summary"],
        "targets": {
            f"peak_rss_mb <= {TARGET_PEAK_RSS_MB}": max(first["peak_rss_mb"], again["peak_rss_mb"])
            <= TARGET_PEAK_RSS_MB
        },
    }
    path = write_results(
        "kaggle_load" if not args.mariadb else "kaggle_load_mariadb",
        figures,
        command="python -m bench.kaggle_load " + " ".join(argv or sys.argv[1:]),
        started_machine=started_machine,
    )
    print_figures("kaggle load benchmark", figures)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
