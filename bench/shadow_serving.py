"""Shadow benchmark: single-row capacity of the real service with a shadow model attached,
next to the same service without it, in one run on one machine.

    .venv/bin/python -m bench.shadow_serving   # about 3 minutes; bench/results/shadow_serving.json

A shadow scores every answered request a second time, off the response path, and logs it;
on two cores that is more model work and more log rows per request. The runs alternate
(without, with, without, with, ...) so drift of the machine hits both alike; the figure is
the median of each. Afterwards the log is checked: every answered request is logged once as
the champion's, and the shadow's rows are counted against the answered ones.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import requests

from bench.common import (
    bench_home,
    ensure_kaggle_model,
    machine,
    mariadb_database,
    print_figures,
    write_results,
)
from bench.serving import check_log, ensure_wrk, run_wrk, service_env, warm_up, write_bodies
from credit_platform.core import routes
from credit_platform.core.service_process import ServiceProcess

TARGETS = {"max_capacity_cost": 0.35}  # the shadow may cost at most 35% of capacity


def shadow_copy(tag: str) -> str:
    """The same model saved again under a new tag: a challenger of the champion's size."""
    from credit_platform.core.model_store import load_model_bundle, save_model_bundle

    bundle = load_model_bundle(tag)
    return save_model_bundle(
        bundle.model,
        bundle.scalers,
        partition=bundle.metadata.get("partition") or "shadow",
        metrics={
            name: value
            for name, value in (bundle.metadata.get("metrics") or {}).items()
            if isinstance(value, int | float)
        },
        params=bundle.metadata.get("params") or {},
    )


def set_shadow(url: str, token: str, tag: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    if tag is None:
        response = requests.delete(f"{url}{routes.ADMIN_CHALLENGER}", headers=headers, timeout=120)
    else:
        response = requests.post(
            f"{url}{routes.ADMIN_CHALLENGER}",
            json={"tag": tag, "role": "shadow"},
            headers=headers,
            timeout=120,
        )
    if response.status_code != 200:
        raise SystemExit(f"error: the challenger change failed: {response.text}")


def shadow_rows(db_url: str, prefix: str) -> int:
    from sqlalchemy import create_engine, func, select

    from credit_platform.core.schema import credit_predictions_api_log as log

    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            return connection.execute(
                select(func.count()).where(
                    log.c.request_id.like(f"{prefix}-%"), log.c.role == "shadow"
                )
            ).scalar_one()
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=15, help="length of each load run")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of runs (without, with)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    args = parser.parse_args(argv)

    started_machine = machine()
    wrk = ensure_wrk()
    champion = ensure_kaggle_model()
    shadow = shadow_copy(champion)
    print(f"champion {champion}, shadow {shadow}; platform home: {bench_home()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="credit_bench_shadow_"))
    single, _ = write_bodies(work)
    load = {"threads": args.threads, "connections": args.connections, "seconds": args.seconds}
    runs: dict[str, list] = {"without": [], "with": []}
    with mariadb_database("bench_shadow") as db_url:
        env = service_env(db_url, champion, work / "spool")
        token = env["CREDIT_API_ADMIN_TOKEN"]
        server = ServiceProcess(env, work / "service.log")
        try:
            server.wait_ready()
            warm_up(wrk, server.url, single, work)
            for number in range(args.rounds):
                for mode in ("without", "with"):
                    set_shadow(server.url, token, shadow if mode == "with" else None)
                    print(f"round {number + 1}/{args.rounds}: {mode} a shadow", flush=True)
                    runs[mode].append(
                        run_wrk(wrk, server.url, routes.PREDICT, single, work, **load)
                    )
            set_shadow(server.url, token, None)  # drains nothing: rows are queued per request
        finally:
            server.stop()  # the shadow's queue is scored and logged before the log closes
        checks = {
            f"{mode}_{number + 1}": check_log(db_url, run)
            for mode, mode_runs in runs.items()
            for number, run in enumerate(mode_runs)
        }
        shadowed = [shadow_rows(db_url, run.prefix) for run in runs["with"]]

    without = statistics.median(run.rps for run in runs["without"])
    with_shadow = statistics.median(run.rps for run in runs["with"])
    answered_with = sum(run.ok for run in runs["with"])
    # check_log counts every row under a run's prefix: the shadow's "<id>@shadow" rows too.
    champion_rows = sum(
        check["logged_rows"] for name, check in checks.items() if name.startswith("with_")
    ) - sum(shadowed)
    cost = 1 - with_shadow / without if without else None
    figures = {
        "champion": champion,
        "shadow": shadow,
        "load": load,
        "rps_without_shadow": round(without, 1),
        "rps_with_shadow": round(with_shadow, 1),
        "capacity_cost": round(cost, 3) if cost is not None else None,
        "runs_rps_without": [round(run.rps, 1) for run in runs["without"]],
        "runs_rps_with": [round(run.rps, 1) for run in runs["with"]],
        "p99_ms_without": round(statistics.median(run.p99_ms for run in runs["without"]), 2),
        "p99_ms_with": round(statistics.median(run.p99_ms for run in runs["with"]), 2),
        "answered_with_shadow": answered_with,
        # Logged champion rows include requests answered as a run's clock ran out.
        "champion_rows_logged_with_shadow": champion_rows,
        "shadow_rows_logged": sum(shadowed),
        "shadow_rows_not_logged": champion_rows - sum(shadowed),
        "non_2xx": sum(run.non_2xx for mode_runs in runs.values() for run in mode_runs),
        "answered_but_not_logged_once": sum(
            check["answered_but_not_logged_once"] for check in checks.values()
        ),
        "log_checks": checks,
    }
    figures["targets"] = {
        "the shadow costs <= 35% of capacity": cost is not None
        and cost <= TARGETS["max_capacity_cost"],
        "zero non-2xx": figures["non_2xx"] == 0,
        "every 2xx logged exactly once as the champion's": all(
            check["answered_but_not_logged_once"] == 0 and check["duplicates"] == 0
            for check in checks.values()
        ),
    }
    path = write_results(
        "shadow_serving",
        figures,
        command="python -m bench.shadow_serving " + " ".join(argv or []),
        started_machine=started_machine,
    )
    print_figures("shadow serving benchmark", figures)
    for target, met in figures["targets"].items():
        print(f"  {'met   ' if met else 'MISSED'} {target}")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
