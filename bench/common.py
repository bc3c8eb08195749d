"""What every benchmark shares: its own platform home, the machine description, results
files, throw-away MariaDB databases, a model trained from the shared Kaggle sample, and
server processes started in their own process group.

Import this module before anything from `credit_platform` or BentoML: it pins the
benchmark's home (CREDIT_BENCH_HOME, default ~/.credit_platform_bench) so a benchmark never
touches the user's ~/.credit_platform, and points the API URL at a port nothing answers on.
"""

from __future__ import annotations

import atexit
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
KAGGLE_SAMPLE = REPO_ROOT.parent / "shared" / "data" / "kaggle_credit_train_sample.csv"
# Every Kaggle row is dated in August 2025: this partition's window holds all 10,000.
KAGGLE_PARTITION = "2025-08-31"
MARIADB_SERVER_URL = os.environ.get(
    "CREDIT_BENCH_MARIADB_URL", "mysql+pymysql://root:@127.0.0.1:3306"
)


def bench_home() -> Path:
    return Path(os.environ.get("CREDIT_BENCH_HOME") or Path.home() / ".credit_platform_bench")


def pin_environment() -> dict[str, str]:
    """Point every platform setting at the benchmark home (in this process, and returned
    for the subprocesses): variables a user exported are cleared, and the prediction API's
    URL is a port this process holds without listening, so nothing a benchmark runs can
    reach a service it did not start (a demo on port 3000)."""
    from bench.isolation import SilentPort, pin_isolated_environment

    home = bench_home()
    home.mkdir(parents=True, exist_ok=True)
    silent_api = SilentPort()  # held until this process exits (atexit keeps a reference)
    atexit.register(silent_api.close)
    environment = pin_isolated_environment(home, silent_api.url)
    pythonpath = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = (
        f"{REPO_ROOT}{os.pathsep}{pythonpath}" if pythonpath else str(REPO_ROOT)
    )
    return {**environment, "PYTHONPATH": os.environ["PYTHONPATH"]}


pin_environment()


def machine() -> dict:
    """The machine a figure was measured on, and how busy it was when the run began."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(memory_kb / 1024 / 1024, 1),
        "loadavg_at_start": [round(value, 2) for value in os.getloadavg()],
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def write_results(name: str, figures: dict, *, command: str, started_machine: dict) -> Path:
    """bench/results/<name>.json: the figures, the command that made them, the machine."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {
        **figures,
        "command": command,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**started_machine, "loadavg_at_end": [round(v, 2) for v in os.getloadavg()]},
    }
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(payload, indent=2) + "\n")
    temporary.replace(path)
    return path


def print_figures(title: str, figures: dict) -> None:
    print(f"\n{title}")
    for key, value in figures.items():
        if isinstance(value, dict | list):
            continue
        shown = f"{value:,.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else value
        print(f"  {key:<28} {shown}")


@contextmanager
def mariadb_database(prefix: str) -> Iterator[str]:
    """A fresh database on the shared MariaDB server (schema created), dropped afterwards."""
    from sqlalchemy import create_engine, text

    from credit_platform.core.db import init_schema

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    server = create_engine(MARIADB_SERVER_URL, connect_args={"connect_timeout": 5})
    try:
        with server.begin() as connection:
            connection.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    except Exception as error:
        raise SystemExit(
            f"error: the benchmark needs the MariaDB server at {MARIADB_SERVER_URL} "
            f"(CREDIT_BENCH_MARIADB_URL): {error}"
        ) from error
    url = f"{MARIADB_SERVER_URL}/{name}"
    try:
        init_schema(url).dispose()
        yield url
    finally:
        with server.begin() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        server.dispose()


def mariadb_buffer_pool_mb() -> int:
    """The MariaDB server's InnoDB buffer pool, in MiB (recorded beside the figures)."""
    from sqlalchemy import create_engine, text

    server = create_engine(MARIADB_SERVER_URL, connect_args={"connect_timeout": 5})
    try:
        with server.connect() as connection:
            size = connection.execute(text("SELECT @@GLOBAL.innodb_buffer_pool_size")).scalar()
    finally:
        server.dispose()
    return int(size) // (1024 * 1024)


def run_cli(*args: str, echo: bool = True) -> float:
    """`credit-platform ARGS` in the benchmark home; returns its wall-clock seconds."""
    command = [sys.executable, "-m", "credit_platform.cli.main", *args]
    if echo:
        print("$ credit-platform " + " ".join(args), flush=True)
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        sys.stderr.write(completed.stdout[-4000:] + completed.stderr[-4000:])
        raise SystemExit(f"error: credit-platform {' '.join(args)} failed")
    return seconds


def ensure_kaggle_store() -> None:
    """The shared Kaggle sample loaded into the benchmark home's feature store (idempotent)."""
    if not KAGGLE_SAMPLE.exists():
        raise SystemExit(f"error: the shared Kaggle sample is missing at {KAGGLE_SAMPLE}")
    run_cli("seed", "kaggle", str(KAGGLE_SAMPLE), "--quiet")


def newest_model_tag() -> str | None:
    from credit_platform.core.model_store import list_model_tags

    tags = list_model_tags()
    return tags[0] if tags else None


def ensure_kaggle_model() -> str:
    """A real model of the Kaggle partition (the CT job, small grid), trained once per home."""
    tag = newest_model_tag()
    if tag is None:
        ensure_kaggle_store()
        run_cli("materialize", "--partition", KAGGLE_PARTITION, "--grid", "small")
        tag = newest_model_tag()
    if tag is None:
        raise SystemExit("error: training did not save a model")
    return tag


def process_tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MiB."""
    total = 0
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    for process in tree:
        with suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += process.memory_info().rss
    return round(total / 2**20, 1)


def children_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) used so far by each child of `pid` (a server's workers)."""
    found: dict[int, float] = {}
    try:
        children = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return found
    for child in children:
        with suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = child.cpu_times()
            found[child.pid] = times.user + times.system
    return found


def process_cpu_seconds(name: str) -> float | None:
    """CPU seconds used so far by the local process called `name` (e.g. mariadbd), or None
    when no such process runs here (a server on another machine)."""
    for process in psutil.process_iter(["name", "cpu_times"]):
        times = process.info["cpu_times"]
        if process.info["name"] == name and times is not None:
            return times.user + times.system
    return None
