"""Asynchronous batch jobs: a worker's resident memory before, at its peak during, and after
a 150,000-row job (about 99 MB of real rows) and the largest job the limits allow (200,000
rows of 4 KiB: 819 MB), the job store's size per job, and job and /predict_batch
throughput, with a MariaDB prediction log.

    .venv/bin/python -m bench.jobs                         # writes bench/results/jobs.json
    .venv/bin/python -m bench.jobs --against /work/wt/main-ab --rounds 3

`--against DIR` runs the same 150,000-row job and the same /predict_batch load on the code
checked out in DIR (a worktree of the code before a change) and on this one, alternating
(A, B, A, B, ...: a slow spell of the machine hits both), each on a fresh server; the
largest job runs on this code only (before the change it took a worker past 4 GB and
failed). The job's worker is found from the store (its owner; in the old code, its claim
file) and its peak is its VmHWM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

from bench.common import (
    KAGGLE_SAMPLE,
    REPO_ROOT,
    bench_home,
    ensure_kaggle_model,
    machine,
    mariadb_database,
    print_figures,
    write_results,
)
from bench.serving import ensure_wrk, run_wrk, write_bodies
from credit_platform.core import routes

JOB_ROWS = 150_000
MAX_ROW_BYTES = 4096
MAX_JOB_ROWS = 200_000
MEMORY_TARGET_MB = 150  # a job may grow its worker's resident memory by at most this


def _status_fields(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) // 1024
    return fields


def _descendants(pid: int) -> list[int]:
    from credit_platform.core.processes import descendants

    return descendants(pid)


class Server:
    """`credit-platform serve` from the checkout `tree` (its own Bento), in a session of its
    own, with `workers` workers and a job store under `work`."""

    def __init__(self, tree: Path, env: dict[str, str], work: Path, name: str) -> None:
        from credit_platform.core.service_process import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.work = work
        self.log = work / f"{name}.log"
        self.job_dir = work / f"jobs-{name}"
        command = [sys.executable, "-m", "credit_platform.cli.serve", "--host", "127.0.0.1"]
        command += ["--port", str(self.port)]
        with self.log.open("a") as sink:
            self.process = subprocess.Popen(
                command,
                cwd=tree,
                env={
                    **env,
                    # A spool of its own: a server replays the spool files a stopped one
                    # left, reading each whole, which would count against this server's
                    # memory.
                    "CREDIT_PREDICTION_SPOOL_DIR": str(work / f"spool-{name}"),
                    "PYTHONPATH": str(tree),
                    "CREDIT_API_JOB_DIR": str(self.job_dir),
                    "BENTOML_DO_NOT_TRACK": "true",
                },
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 240
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited:\n{self.log.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}{routes.READYZ}", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"the server was not ready:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)

    def workers(self) -> dict[int, dict[str, int]]:
        found = {}
        for pid in _descendants(self.process.pid):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"worker" in command and b"service" in command:
                    found[pid] = _status_fields(pid)
            except OSError:
                continue
        return found

    def job_owner(self, task_id: str) -> int | None:
        """The worker running `task_id`: from this code's job store, else from the old
        code's claim file."""
        index = self.job_dir / "jobs.db"
        if index.exists():
            import sqlite3

            with sqlite3.connect(index) as connection:
                row = connection.execute(
                    "SELECT owner FROM jobs WHERE task_id = ?", (task_id,)
                ).fetchone()
            if row:
                return int(row[0].rpartition(":")[2].split("-")[0])
        claim = bench_home() / "run" / "api-jobs" / f"{task_id}.json"
        if claim.exists():
            return int(json.loads(claim.read_text())["pid"])
        return None

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                for pid in [self.process.pid, *_descendants(self.process.pid)]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.process.wait(10)


def write_job_body(path: Path, rows: int, *, pad_to: int | None = None) -> int:
    """A job body of `rows` real rows (cycled from the Kaggle sample under new customer
    ids); with `pad_to`, each row padded with whitespace to that many bytes (a pretty-
    printing client). Its size in bytes."""
    from bench.sample_requests import load_sample, valid_request_payloads

    payloads = valid_request_payloads(load_sample(KAGGLE_SAMPLE, rows=10_000), 2000)
    with path.open("w") as sink:
        sink.write('{"data": [')
        for number in range(rows):
            row = json.dumps({**payloads[number % len(payloads)], "customer_id": f"J{number:08d}"})
            if pad_to is not None:
                row = row[:-1] + " " * (pad_to - len(row) - 1) + "}"
            sink.write(("," if number else "") + row)
        sink.write("]}")
    return path.stat().st_size


def _tree_bytes(path: Path) -> int:
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def _task_store_bytes() -> int:
    """BentoML's own task store (the code before the change kept every job in it)."""
    home = Path(os.environ.get("BENTOML_HOME") or bench_home() / "bentoml")
    return sum(_tree_bytes(path) for path in home.glob("task_result.db*"))


def run_job(server: Server, body: Path, rows: int) -> dict:
    """Submits the body (streamed from disk), waits for the job, fetches its answers;
    times, the job worker's memory and the stores' growth."""
    before = server.workers()
    log_lines = len(server.log.read_text(errors="replace").splitlines())
    store_before = _tree_bytes(server.job_dir) + _task_store_bytes()
    started = time.perf_counter()
    with body.open("rb") as source:
        submitted = requests.post(
            f"{server.url}{routes.JOB_SUBMIT}",
            data=source,
            headers={"Content-Type": "application/json"},
            timeout=600,
        )
    submit_seconds = time.perf_counter() - started
    if submitted.status_code != 200:
        return {"submit_status": submitted.status_code, "error": submitted.text[:500]}
    task_id = submitted.json()["task_id"]
    owner = server.job_owner(task_id)
    while True:
        polled = requests.get(
            f"{server.url}{routes.JOB_STATUS}", params={"task_id": task_id}, timeout=120
        )
        if polled.status_code != 200:  # the code before the change answered 500 at times
            status = {"status": f"status answered {polled.status_code}", "error": polled.text}
            break
        status = polled.json()
        if status["status"] != "in_progress":
            break
        time.sleep(0.25)
    job_seconds = time.perf_counter() - started
    answer = requests.get(f"{server.url}{routes.JOB_GET}", params={"task_id": task_id}, timeout=600)
    answers = len(answer.json()) if answer.status_code == 200 else 0
    time.sleep(3)  # what the worker keeps once the job is over
    after = server.workers()
    owner = owner if owner in after else None
    figures = {
        "rows": rows,
        "body_mb": round(body.stat().st_size / 1e6, 1),
        "status": status["status"],
        "get_status": answer.status_code,
        "answers": answers,
        "submit_seconds": round(submit_seconds, 2),
        "job_seconds": round(job_seconds, 2),
        "job_rows_per_s": round(rows / job_seconds),
        "store_mb_per_job": round(
            (_tree_bytes(server.job_dir) + _task_store_bytes() - store_before) / 1e6, 1
        ),
    }
    if owner is not None and owner in before:
        figures.update(
            worker_rss_before_mb=before[owner]["VmRSS"],
            worker_rss_peak_mb=after[owner]["VmHWM"],
            worker_rss_after_mb=after[owner]["VmRSS"],
            worker_rss_growth_mb=after[owner]["VmHWM"] - before[owner]["VmRSS"],
        )
    # The log database not answering in time sends rows to the spool, and its replay reads a
    # whole spool file into memory: a worker's peak then says more about the outage than
    # about the job.
    figures["log_spool_warnings"] = sum(
        "spooling to" in line
        for line in server.log.read_text(errors="replace").splitlines()[log_lines:]
    )
    if status["status"] != "completed":
        figures["error"] = str(status.get("error") or answer.text[:300])
    return figures


def batch_throughput(
    server: Server, work: Path, wrk: str, batch_bodies: Path, seconds: int
) -> dict:
    run = run_wrk(
        wrk,
        server.url,
        routes.PREDICT_BATCH,
        batch_bodies,
        work,
        threads=2,
        connections=8,
        seconds=seconds,
    )
    return {"batch_rows_per_s": round(run.ok * 1000 / run.seconds), "batch_non_2xx": run.non_2xx}


def one_round(
    tree: Path, env: dict, work: Path, name: str, body: Path, wrk: str, batches: Path, seconds: int
) -> dict:
    server = Server(tree, env, work, name)
    try:
        warm = work / "warm.json"
        if not warm.exists():
            write_job_body(warm, 500)
        run_job(server, warm, 500)  # the job path imported and warmed
        figures = run_job(server, body, JOB_ROWS)
        figures.update(batch_throughput(server, work, wrk, batches, seconds))
        return figures
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", type=Path, help="a checkout of the code before a change")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds with --against")
    parser.add_argument("--batch-seconds", type=int, default=10)
    parser.add_argument("--no-max", action="store_true", help="skip the largest job")
    args = parser.parse_args(argv)

    started_machine = machine()
    wrk = ensure_wrk()
    model_tag = ensure_kaggle_model()
    work = Path(tempfile.mkdtemp(prefix="credit_bench_jobs_"))
    _, batches = write_bodies(work)
    body = work / "job.json"
    write_job_body(body, JOB_ROWS)
    figures: dict = {"model_tag": model_tag, "job_rows": JOB_ROWS}
    try:
        with mariadb_database("bench_jobs") as db_url:
            env = {
                **os.environ,
                "FEATURE_STORE_URL": db_url,
                "CREDIT_API_MODEL_TAG": model_tag,
                "CREDIT_API_ADMIN_TOKEN": uuid.uuid4().hex,
            }
            sides = [("after", REPO_ROOT)]
            if args.against:
                sides = [("before", args.against.resolve()), ("after", REPO_ROOT)]
            rounds: dict[str, list[dict]] = {name: [] for name, _ in sides}
            for number in range(args.rounds if args.against else 1):
                for name, tree in sides:
                    print(f"round {number + 1}: {name} ({tree})", flush=True)
                    result = one_round(
                        tree, env, work, f"{name}{number}", body, wrk, batches, args.batch_seconds
                    )
                    print(f"  {result}", flush=True)
                    rounds[name].append(result)
            figures["rounds"] = rounds
            for name, results in rounds.items():
                for key in ("job_rows_per_s", "batch_rows_per_s"):
                    values = [r[key] for r in results if key in r]
                    if values:
                        figures[f"{name}_{key}_median"] = round(statistics.median(values))
                for key in (
                    "worker_rss_before_mb",
                    "worker_rss_peak_mb",
                    "worker_rss_after_mb",
                    "worker_rss_growth_mb",
                    "store_mb_per_job",
                ):
                    values = [r[key] for r in results if key in r]
                    if values:
                        figures[f"{name}_{key}_median"] = statistics.median(values)
            if args.against:
                for key in ("job_rows_per_s", "batch_rows_per_s"):
                    before = figures.get(f"before_{key}_median")
                    after = figures.get(f"after_{key}_median")
                    if before and after:
                        figures[f"{key}_after_over_before"] = round(after / before, 3)
            if not args.no_max:
                largest = work / "largest.json"
                size = write_job_body(largest, MAX_JOB_ROWS, pad_to=MAX_ROW_BYTES - 1)
                print(f"largest job: {MAX_JOB_ROWS} rows, {size} bytes", flush=True)
                server = Server(REPO_ROOT, env, work, "largest")
                try:
                    run_job(server, work / "warm.json", 500)
                    result = run_job(server, largest, MAX_JOB_ROWS)
                finally:
                    server.stop()
                largest.unlink()
                figures["largest_job"] = result
                print(f"  {result}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    largest_job = figures.get("largest_job", {})
    figures["targets_met"] = {
        f"largest job completes, worker growth <= {MEMORY_TARGET_MB} MB": (
            largest_job.get("status") == "completed"
            and largest_job.get("worker_rss_growth_mb", 1e9) <= MEMORY_TARGET_MB
        )
        if largest_job
        else None,
    }
    print_figures("asynchronous jobs", figures)
    path = write_results(
        "jobs",
        figures,
        command="python -m bench.jobs " + " ".join(argv if argv is not None else sys.argv[1:]),
        started_machine=started_machine,
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
