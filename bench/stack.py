"""Production-stack benchmark: the Docker image and stack of docker-compose.yml, measured
on this machine, with the native service beside it in the same run.

    .venv/bin/python -m bench.stack     # about 15 minutes; writes bench/results/stack.json

Needs a Docker engine with compose v2 (bash scripts/docker_setup.sh) and no
`credit_platform` stack already on it. Builds from a copy of the checkout's tracked files:
(1) the image cold (`build --no-cache`), then again after a one-line change to the
service's code; (2) the stack up from empty volumes to every service healthy; (3) the
Kaggle model of the other benchmarks imported into the stack's BentoML store and served;
single-row /predict through the published port by wrk: the native service on the same
model (local MariaDB log), one API replica, and three replicas behind the balancer, each as
the median of closed-loop runs; every answered request checked in the stack's log.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import (
    REPO_ROOT,
    bench_home,
    ensure_kaggle_model,
    machine,
    mariadb_database,
    print_figures,
    write_results,
)
from bench.docker_stack import (
    ComposeStack,
    base_images,
    docker_stack_available,
    leftover_project_objects,
    pip_ca_bundle,
    run,
)
from bench.serving import ensure_wrk, run_wrk, service_env, warm_up, write_bodies
from credit_platform.core import routes
from credit_platform.core.service_process import ServiceProcess, free_port

SERVICES = ("mariadb", "mlflow", "dagster-user-code", "dagster-webserver", "dagster-daemon")
CHANGED_FILE = Path("api") / "service.py"


def copy_checkout(target: Path) -> Path:
    """The tracked files of this checkout (what a clone holds), copied to `target`."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        relative = name.decode()
        source = REPO_ROOT / relative
        if source.is_file():
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / relative)
    return target


def image_size_mb(image: str) -> float:
    size = run(["docker", "image", "inspect", "--format", "{{.Size}}", image]).stdout
    return round(int(size) / 1e6, 1)


def import_model(stack: ComposeStack, model_tag: str, work: Path) -> None:
    """The host's model into the stack's BentoML store (the shared volume)."""
    import bentoml

    archive = work / "model.bentomodel"
    bentoml.models.export_model(model_tag, str(archive))
    container = stack.containers("dagster-user-code")[0]["Name"]
    run(["docker", "cp", str(archive), f"{container}:/tmp/model.bentomodel"])
    stack.exec("dagster-user-code", "bentoml", "models", "import", "/tmp/model.bentomodel")


def wrk_median(wrk: str, url: str, bodies: Path, work: Path, load: dict, runs: int) -> dict:
    done = [run_wrk(wrk, url, routes.PREDICT, bodies, work, **load) for _ in range(runs)]
    failed = sum(r.non_2xx + r.socket_errors for r in done)
    middle = sorted(done, key=lambda r: r.rps)[len(done) // 2]
    return {
        "rps": round(middle.rps, 1),
        "rps_runs": [round(r.rps, 1) for r in done],
        "p99_ms": round(middle.p99_ms, 1),
        "failed_requests": failed,
        "answered_ids": [rid for r in done for rid in r.answered_ids],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=15, help="length of each wrk run")
    parser.add_argument("--runs", type=int, default=3, help="closed-loop runs per setup")
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)

    missing = docker_stack_available()
    if missing:
        raise SystemExit(f"error: {missing}")
    if leftover_project_objects():
        raise SystemExit("error: a credit_platform stack exists on this engine; stop it first")
    started_machine = machine()
    wrk = ensure_wrk()
    model_tag = ensure_kaggle_model()
    print(f"model: {model_tag}; platform home: {bench_home()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="credit_bench_stack_"))
    checkout = copy_checkout(work / "checkout")
    single, _ = write_bodies(work)
    load = {"threads": 2, "connections": args.connections, "seconds": args.seconds}
    figures: dict = {"model_tag": model_tag, "load": load}

    images = base_images()
    figures["base_images"] = images
    stack = ComposeStack.create(
        work / "compose",
        project_dir=checkout,
        CREDIT_PLATFORM_IMAGE="credit-platform:bench",
        DAGSTER_UI_PORT=str(free_port()),
        MLFLOW_UI_PORT=str(free_port()),
        API_PORT=str(free_port()),
        API_MODEL_TAG=model_tag,
        PIP_CA_BUNDLE=pip_ca_bundle(),
        **images,
    )
    try:
        print("cold image build (--no-cache)", flush=True)
        stack.timed("build_cold_s", "build", "--no-cache", "api")
        figures["image_mb"] = image_size_mb("credit-platform:bench")
        changed = checkout / CHANGED_FILE
        changed.write_text(changed.read_text() + "\n# a code change\n")
        print("image build after a one-line code change", flush=True)
        stack.timed("build_code_change_s", "build", "api")

        print("stack up from empty volumes", flush=True)
        started = time.monotonic()
        stack.compose("up", "-d", *SERVICES)
        stack.wait_healthy(list(SERVICES), timeout=600)
        stack.timings["up_to_healthy_s"] = round(time.monotonic() - started, 1)

        import_model(stack, model_tag, work)
        stack.compose("up", "-d")
        stack.wait_healthy(["api", "api-gateway"], timeout=600)
        url = stack.url("API_PORT")
        time.sleep(5)  # the balancer's health checks find the replica
        warm_up(wrk, url, single, work)
        print("one replica through the published port", flush=True)
        one = wrk_median(wrk, url, single, work, load, args.runs)

        with mariadb_database("bench_stack_native") as db_url:
            native = ServiceProcess(
                service_env(db_url, model_tag, work / "spool"), work / "native.log"
            )
            try:
                native.wait_ready()
                warm_up(wrk, native.url, single, work)
                print("the native service, same model", flush=True)
                beside = wrk_median(wrk, native.url, single, work, load, args.runs)
            finally:
                native.stop()

        stack.compose("up", "-d", "--scale", "api=3", "--no-recreate")
        stack.wait_healthy(["api"], timeout=600)
        time.sleep(8)
        warm_up(wrk, url, single, work)
        print("three replicas behind the balancer", flush=True)
        three = wrk_median(wrk, url, single, work, load, args.runs)

        answered = one["answered_ids"] + three["answered_ids"]
        logged = {
            request_id
            for start in range(0, len(answered), 2000)
            for (request_id,) in stack.sql(
                "SELECT request_id FROM credit_predictions_api_log WHERE request_id IN ("
                + ", ".join(f"'{rid}'" for rid in answered[start : start + 2000])
                + ")"
            )
        }
        figures["log_missing"] = len(set(answered) - logged)
    finally:
        stack.compose("down", "-v", "--remove-orphans", "--timeout", "20", check=False)
        shutil.rmtree(work, ignore_errors=True)

    for name, result in (("native", beside), ("one_replica", one), ("three_replicas", three)):
        result.pop("answered_ids")
        figures[name] = result
    figures.update(stack.timings)
    figures["one_replica_vs_native"] = round(one["rps"] / beside["rps"], 3)
    figures["three_vs_one_replica"] = round(three["rps"] / one["rps"], 3)
    figures["rps_stdev_one_replica"] = round(statistics.pstdev(one["rps_runs"]), 1)
    path = write_results(
        "stack", figures, command="python -m bench.stack", started_machine=started_machine
    )
    print_figures("production stack", figures)
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
