"""Paired A/B of two checkouts' serving cost: both services run side by side and the load
alternates between them in short runs (A B B A ...), so a busy or drifting machine weighs
on both alike.

    .venv/bin/python -m bench.serving_ab --a /path/to/old/checkout --b . --rounds 4

What it compares, per run: /predict_batch rows per second with 1,000-row bodies, the
workers' CPU per batch row (the figure least moved by other load) and MariaDB's, and
closed-loop single-row /predict requests per second with the workers' CPU per request.
Each checkout trains its own small-grid model of the Kaggle sample in a home of its own
(`--same-model` serves A's model from both, to tell the code's cost from the model's).
Writes bench/results/serving_ab.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import (
    KAGGLE_PARTITION,
    KAGGLE_SAMPLE,
    bench_home,
    children_cpu_seconds,
    machine,
    mariadb_database,
    print_figures,
    process_cpu_seconds,
    write_results,
)
from bench.serving import BATCH_ROWS, ensure_wrk, run_wrk, service_env, write_bodies
from credit_platform.core import routes, settings
from credit_platform.core.service_process import ServiceProcess

CHECKOUT_VARIABLES = (
    settings.HOME_ENV,
    settings.BENTOML_HOME_ENV,
    settings.DAGSTER_HOME_ENV,
    "PYTHONPATH",
)
LIST_MODELS = (
    "from credit_platform.core.model_store import list_model_tags; "
    "print((list_model_tags() or [''])[0])"
)


@dataclass
class Checkout:
    """One side of the comparison: a source tree, its own platform home and model."""

    name: str
    tree: Path
    home: Path
    env: dict[str, str] = field(default_factory=dict)
    model_tag: str = ""
    service: ServiceProcess | None = None
    runs: list[dict] = field(default_factory=list)

    def run(self, *args: str, check: bool = True) -> str:
        completed = subprocess.run(
            [sys.executable, *args], cwd=self.tree, env=self.env, capture_output=True, text=True
        )
        if check and completed.returncode != 0:
            sys.stderr.write(completed.stdout[-3000:] + completed.stderr[-3000:])
            raise SystemExit(f"error: {self.name}: {' '.join(args[:4])} failed")
        return completed.stdout.strip()

    def newest_model(self) -> str:
        return (self.run("-c", LIST_MODELS).splitlines() or [""])[-1]

    def ensure_model(self) -> None:
        self.model_tag = self.newest_model()
        if not self.model_tag:
            print(f"{self.name}: training a small-grid model in {self.home}", flush=True)
            cli = ("-m", "credit_platform.cli.main")
            self.run(*cli, "seed", "kaggle", str(KAGGLE_SAMPLE), "--quiet")
            self.run(*cli, "materialize", "--partition", KAGGLE_PARTITION, "--grid", "small")
            self.model_tag = self.newest_model()
        if not self.model_tag:
            raise SystemExit(f"error: {self.name}: training saved no model")

    def start(self, db_url: str, work: Path) -> None:
        # service_env starts from this process's environment: the checkout's own on top.
        env = {
            **service_env(db_url, self.model_tag, work / f"spool_{self.name}"),
            **{key: self.env[key] for key in CHECKOUT_VARIABLES},
        }
        self.service = ServiceProcess(env, work / f"service_{self.name}.log", cwd=self.tree)

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()


def checkout_env(tree: Path, home: Path) -> dict[str, str]:
    """This process's pinned environment (bench.common) moved to the checkout's own home
    and source tree."""
    env = dict(os.environ)
    env.update(
        {
            settings.HOME_ENV: str(home),
            settings.BENTOML_HOME_ENV: str(home / "bentoml"),
            settings.DAGSTER_HOME_ENV: str(home / "dagster"),
            "PYTHONPATH": str(tree),
        }
    )
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    return env


def share_model(source: Checkout, target: Checkout, work: Path) -> None:
    """Copy the source's model into the target's BentoML store and serve it there."""
    exported = work / "shared_model.bentomodel"
    bentoml = [sys.executable, "-m", "bentoml"]
    subprocess.run(
        [*bentoml, "models", "export", source.model_tag, str(exported)],
        env=source.env,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*bentoml, "models", "import", str(exported)],
        env=target.env,
        check=False,
        capture_output=True,
    )
    target.model_tag = source.model_tag


def measure(checkout: Checkout, wrk: str, single: Path, batch: Path, work: Path, seconds: int):
    url, pid = checkout.service.url, checkout.service.process.pid
    before = children_cpu_seconds(pid)
    mariadb_before = process_cpu_seconds("mariadbd")
    batches = run_wrk(
        wrk,
        url,
        routes.PREDICT_BATCH,
        batch,
        work,
        threads=1,
        connections=8,
        seconds=seconds,
    )
    after = children_cpu_seconds(pid)
    mariadb_after = process_cpu_seconds("mariadbd")
    rows = batches.ok * BATCH_ROWS
    worker = sum(value - before.get(key, 0.0) for key, value in after.items())
    before = children_cpu_seconds(pid)
    singles = run_wrk(
        wrk,
        url,
        routes.PREDICT,
        single,
        work,
        threads=2,
        connections=64,
        seconds=seconds,
    )
    after = children_cpu_seconds(pid)
    single_cpu = sum(value - before.get(key, 0.0) for key, value in after.items())
    run = {
        "batch_rows_per_s": round(rows / batches.seconds),
        "batch_worker_cpu_us_per_row": round(worker * 1e6 / rows, 2) if rows else None,
        "batch_mariadb_cpu_us_per_row": (
            round((mariadb_after - mariadb_before) * 1e6 / rows, 2)
            if rows and mariadb_after is not None and mariadb_before is not None
            else None
        ),
        "single_rps": round(singles.rps),
        "single_worker_cpu_us_per_request": (
            round(single_cpu * 1e6 / singles.ok, 1) if singles.ok else None
        ),
        "non_2xx": batches.non_2xx + singles.non_2xx,
        "load_average": round(os.getloadavg()[0], 2),
    }
    checkout.runs.append(run)
    print(f"  {checkout.name}: {json.dumps(run)}", flush=True)


def summary(checkout: Checkout) -> dict:
    keys = [key for key in checkout.runs[0] if key not in ("non_2xx", "load_average")]
    return {
        "tree": str(checkout.tree),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=checkout.tree,
            capture_output=True,
            text=True,
        ).stdout.strip(),
        "model_tag": checkout.model_tag,
        **{
            f"median_{key}": statistics.median(run[key] for run in checkout.runs if run[key])
            for key in keys
        },
        "non_2xx": sum(run["non_2xx"] for run in checkout.runs),
        "runs": checkout.runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=Path, required=True, help="the checkout before")
    parser.add_argument("--b", type=Path, required=True, help="the checkout after")
    parser.add_argument("--rounds", type=int, default=4, help="runs of each, alternating")
    parser.add_argument("--seconds", type=int, default=8, help="length of each load run")
    parser.add_argument("--same-model", action="store_true", help="serve A's model from both")
    parser.add_argument("--name", default="serving_ab", help="results file name")
    args = parser.parse_args(argv)

    started_machine = machine()
    wrk = ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="credit_bench_ab_"))
    checkouts = [
        Checkout(name, tree.resolve(), bench_home() / f"ab_{name}")
        for name, tree in (("a", args.a), ("b", args.b))
    ]
    for checkout in checkouts:
        checkout.env = checkout_env(checkout.tree, checkout.home)
        checkout.ensure_model()
    if args.same_model:
        share_model(checkouts[0], checkouts[1], work)
    single, batch = write_bodies(work)
    with mariadb_database("bench_ab_a") as db_a, mariadb_database("bench_ab_b") as db_b:
        try:
            for checkout, db_url in zip(checkouts, (db_a, db_b), strict=True):
                checkout.start(db_url, work)
            for checkout in checkouts:
                checkout.service.wait_ready(timeout=240)
                run_wrk(
                    wrk,
                    checkout.service.url,
                    routes.PREDICT,
                    single,
                    work,
                    threads=1,
                    connections=16,
                    seconds=3,
                )
            for number in range(args.rounds):
                order = checkouts if number % 2 == 0 else checkouts[::-1]
                print(f"round {number + 1}/{args.rounds}", flush=True)
                for checkout in order:
                    measure(checkout, wrk, single, batch, work, args.seconds)
        finally:
            for checkout in checkouts:
                checkout.stop()
    figures = {checkout.name: summary(checkout) for checkout in checkouts}
    a, b = figures["a"], figures["b"]
    figures["b_over_a"] = {
        key: round(b[key] / a[key] - 1, 4)
        for key in a
        if key.startswith("median_") and isinstance(a[key], (int, float)) and a[key]
    }
    figures["same_model"] = args.same_model
    print_figures("paired serving A/B", {"b_over_a": figures["b_over_a"]})
    path = write_results(
        args.name,
        figures,
        command="python -m bench.serving_ab " + " ".join(argv or sys.argv[1:]),
        started_machine=started_machine,
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
