"""Several replicas of the prediction service, one model: real `bentoml serve` processes of
the built Bento sharing one MariaDB database and one BentoML store (each with its own home),
a deploy through the deployed_bento asset addressed to one of them, and the readiness
bound of a replica that cannot follow."""

from __future__ import annotations

import shutil
import subprocess
import time
from datetime import date
from pathlib import Path

import pytest
import requests
from dagster import instance_for_test
from sqlalchemy.engine import make_url

from bench.sample_requests import load_sample, valid_request_payloads
from credit_platform.core import routes, settings
from credit_platform.core.bento import build_bento, serve_bento_command
from credit_platform.core.db import init_schema, make_engine
from credit_platform.core.model_record import replicas
from credit_platform.core.service_process import ServiceProcess, free_port
from credit_platform.defs.resources.feature_store import FeatureStoreResource
from credit_platform.defs.resources.prediction_service import PredictionServiceResource
from credit_platform.ingest.synthetic import seed_synthetic
from credit_platform_tests.api.test_reliability_serving import assert_logged_exactly_once, wait_for
from credit_platform_tests.defs.test_deploy import _deploy
from credit_platform_tests.harness import LoadGenerator, TcpProxy
from credit_platform_tests.training_fixtures import tiny_grid, train_and_check, training_resources

pytestmark = [pytest.mark.slow]

TOKEN = "replicas-test-admin-token"
FIRST, SECOND = "2025-02-03", "2025-02-04"
POLL_SECONDS = 0.5
STALE_SECONDS = 6.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory, kaggle_sample):
    """Two passing models of two partitions; the built Bento; and a copy of the BentoML
    store taken before the second model was saved (a replica whose store lacks it)."""
    tmp = tmp_path_factory.mktemp("replicas")
    url = f"sqlite:///{tmp / 'training.db'}"
    engine = init_schema(url)
    seed_synthetic(engine, customers=50, days=36, start=date(2025, 1, 1), seed=5, progress=False)
    engine.dispose()
    resources = training_resources(tmp, url)
    tags = {}
    with instance_for_test() as instance:
        tags[FIRST] = train_and_check(resources, instance, FIRST, tiny_grid(), 0.3).output_for_node(
            "credit_score_model"
        )["bento_tag"]
        bento = build_bento()
        lagging_store = tmp / "lagging_bentoml"
        shutil.copytree(settings.bentoml_home(), lagging_store)
        tags[SECOND] = train_and_check(
            resources, instance, SECOND, tiny_grid(), 0.3
        ).output_for_node("credit_score_model")["bento_tag"]
        yield {
            "resources": resources,
            "instance": instance,
            "tags": tags,
            "bento": bento,
            "lagging_store": lagging_store,
            "payloads": valid_request_payloads(load_sample(kaggle_sample, rows=300), 40),
        }


def start_replica(
    home: Path, db_url: str, bento: str, model_tag: str, store: Path | None = None
) -> ServiceProcess:
    """One replica as the stack runs it: the built Bento, its own home, one worker."""
    home.mkdir(parents=True)
    port = free_port()
    env = {
        settings.FEATURE_STORE_URL_ENV: db_url,
        settings.HOME_ENV: str(home),
        settings.PREDICTION_SPOOL_DIR_ENV: str(home / "spool"),
        settings.API_MODEL_TAG_ENV: model_tag,
        settings.ADMIN_TOKEN_ENV: TOKEN,
        settings.API_WORKERS_ENV: "1",
        settings.API_MODEL_POLL_SECONDS_ENV: str(POLL_SECONDS),
        settings.API_MODEL_STALE_SECONDS_ENV: str(STALE_SECONDS),
    }
    if store is not None:
        env[settings.BENTOML_HOME_ENV] = str(store)
    return ServiceProcess(
        env, home / "service.log", port, command=serve_bento_command(bento, "127.0.0.1", port)
    )


def deploy(trained, db_url: str, api_url: str, partition: str, timeout: float):
    """deployed_bento for `partition`, addressed to the one replica (or balancer) at
    `api_url`, waiting for the replicas that report in `db_url`."""
    service = PredictionServiceResource(
        api_url=api_url, admin_token=TOKEN, autostart=False, replicas_timeout_seconds=timeout
    )
    platform = {
        "resources": {**trained["resources"], "feature_store": FeatureStoreResource(url=db_url)},
        "instance": trained["instance"],
    }
    return _deploy(platform, partition, service)


def metadata(service: ServiceProcess) -> dict:
    return requests.get(f"{service.url}{routes.METADATA}", timeout=10).json()


def readyz(service: ServiceProcess) -> requests.Response:
    return requests.get(f"{service.url}{routes.READYZ}", timeout=10)


def live_reports(db_url: str) -> dict[str, str]:
    """replica id -> the model it reports, for the live replicas."""
    engine = make_engine(db_url)
    try:
        return {r.state.replica_id: r.state.model_tag for r in replicas(engine) if r.live}
    finally:
        engine.dispose()


def test_a_deploy_to_one_replica_reaches_all_three_under_load(trained, mariadb_url, tmp_path):
    first, second = trained["tags"][FIRST], trained["tags"][SECOND]
    init_schema(mariadb_url).dispose()
    fleet = [
        start_replica(tmp_path / f"replica-{n}", mariadb_url, trained["bento"], first)
        for n in range(3)
    ]
    loads: list[LoadGenerator] = []
    try:
        for service in fleet:
            service.wait_ready()
        ids = [metadata(service)["replica"]["replica"] for service in fleet]
        assert len(set(ids)) == 3
        wait_for(
            lambda: live_reports(mariadb_url) == dict.fromkeys(ids, first), 30, "three reports"
        )

        loads = [
            LoadGenerator(service.url, trained["payloads"], threads=1, max_seconds=150).start()
            for service in fleet
        ]
        wait_for(lambda: all(load.count() >= 20 for load in loads), 60, "load on every replica")
        started = time.monotonic()
        result = deploy(trained, mariadb_url, fleet[0].url, SECOND, timeout=STALE_SECONDS)
        converged = time.monotonic() - started
        assert result.success, result.failure_data_for_node("deployed_bento")
        # The run returned only once every live replica reported the model: each serves it.
        assert [metadata(service)["model_version"] for service in fleet] == [second] * 3
        counts = [load.count() for load in loads]
        wait_for(
            lambda: all(
                load.count() >= count + 20 for load, count in zip(loads, counts, strict=True)
            ),
            60,
            "load after the deploy",
        )

        # A challenger attached on one replica and detached on another reaches all three.
        def challengers() -> list:
            found = [metadata(service)["challenger"] for service in fleet]
            return [(c["model_version"], c["role"]) if c else None for c in found]

        admin = {"Authorization": f"Bearer {TOKEN}"}
        attached = requests.post(
            f"{fleet[0].url}{routes.ADMIN_CHALLENGER}",
            json={"tag": first, "role": "shadow"},
            headers=admin,
            timeout=60,
        )
        assert attached.status_code == 200, attached.text
        wait_for(lambda: challengers() == [(first, "shadow")] * 3, 10, "the shadow everywhere")
        detached = requests.delete(
            f"{fleet[1].url}{routes.ADMIN_CHALLENGER}", headers=admin, timeout=60
        )
        assert detached.status_code == 200, detached.text
        wait_for(lambda: challengers() == [None] * 3, 10, "no challenger anywhere")
    finally:
        outcomes = [outcome for load in loads for outcome in load.stop()]
        for service in fleet:
            service.stop()

    failures = [outcome for outcome in outcomes if outcome.status != 200]
    assert not failures, failures[:3]
    resent = [item for load in loads for item in load.resent]
    assert len(resent) <= max(3, len(outcomes) // 100), resent
    for load in loads:
        assert_logged_exactly_once(mariadb_url, load.prefix, load.answered())

    materialization = result.asset_materializations_for_node("deployed_bento")[0].metadata
    assert materialization["how"].value == "hot swap"
    assert materialization["live_replicas"].value == 3
    reported = {row["replica"]: row for row in materialization["replicas"].value}
    assert set(reported) == set(ids)
    assert {row["model_tag"] for row in reported.values()} == {second}
    assert all(row["live"] and row["problem"] is None for row in reported.values())
    assert converged < 60  # the build is a no-op; the replicas follow within the bound
    # The stopped replicas removed their rows: no later deploy waits for them.
    assert live_reports(mariadb_url) == {}


def test_a_replica_that_cannot_follow_leaves_rotation_after_the_bound_and_fails_the_deploy(
    trained, mariadb_url, tmp_path
):
    first, second = trained["tags"][FIRST], trained["tags"][SECOND]
    init_schema(mariadb_url).dispose()
    url = make_url(mariadb_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 3306)
    proxied = url.set(port=proxy.port).render_as_string(hide_password=False)
    healthy = start_replica(tmp_path / "healthy", mariadb_url, trained["bento"], first)
    # Its own model store, a copy taken before the second model was saved.
    lagging = start_replica(
        tmp_path / "lagging", proxied, trained["bento"], first, store=trained["lagging_store"]
    )
    try:
        healthy.wait_ready()
        lagging.wait_ready()
        lagging_id = metadata(lagging)["replica"]["replica"]

        # A database blip shorter than the bound costs no readiness.
        proxy.cut()
        blip_end = time.monotonic() + STALE_SECONDS / 2
        while time.monotonic() < blip_end:
            assert readyz(lagging).status_code == 200
            time.sleep(0.2)
        proxy.restore()

        result = deploy(trained, mariadb_url, healthy.url, SECOND, timeout=STALE_SECONDS + 6)
        assert not result.success
        error = str(result.failure_data_for_node("deployed_bento").error)
        assert lagging_id in error and second in error, error
        assert metadata(healthy)["model_version"] == second
        assert readyz(healthy).status_code == 200
        # Past the bound the lagging replica is out of rotation, saying why; it still
        # answers with the old model for whoever reaches it directly.
        answer = readyz(lagging)
        assert answer.status_code == 503
        assert f"no model {second}" in answer.json()["reason"], answer.json()
        assert metadata(lagging)["model_version"] == first

        # It keeps retrying: once the model reaches its store, it follows and is ready again.
        models = Path(trained["lagging_store"], "models", settings.MODEL_NAME)
        version = second.split(":", 1)[1]
        shutil.copytree(
            settings.bentoml_home() / "models" / settings.MODEL_NAME / version, models / version
        )
        wait_for(lambda: readyz(lagging).status_code == 200, 30, "the lagging replica ready")
        assert metadata(lagging)["model_version"] == second
        wait_for(lambda: live_reports(mariadb_url).get(lagging_id) == second, 10, "its report")

        # A database gone for longer than the bound takes it out too, until it returns.
        proxy.cut()
        wait_for(lambda: readyz(lagging).status_code == 503, STALE_SECONDS + 10, "not ready")
        assert "has not been read" in readyz(lagging).json()["reason"]
        proxy.restore()
        wait_for(lambda: readyz(lagging).status_code == 200, 20, "ready after the outage")
    finally:
        healthy.stop()
        lagging.stop()
        proxy.close()


BALANCER_CONFIG = settings.REPO_ROOT / "deploy" / "haproxy" / "haproxy.cfg"
NO_HAPROXY = "haproxy is not installed (apt-get install haproxy): the balancer is not tested"


def balancer_config(listen_port: int, replica_ports: list[int]) -> str:
    """The stack's HAProxy config with its Docker parts swapped for this machine: a
    loopback port instead of :3000, and the replicas' ports instead of the compose service's
    DNS name (everything else, checks, retries and timeouts, as production has it)."""
    config = BALANCER_CONFIG.read_text()
    swaps = {
        "    bind :3000\n": f"    bind 127.0.0.1:{listen_port}\n",
        " init-addr none resolvers docker resolve-prefer ipv4\n": "\n",
        "    server-template api 5 api:3000 check\n": "".join(
            f"    server api{n} 127.0.0.1:{port} check\n" for n, port in enumerate(replica_ports)
        ),
    }
    for production, local in swaps.items():
        assert production in config, f"{BALANCER_CONFIG} no longer has {production!r}"
        config = config.replace(production, local)
    return config


def test_the_balancer_config_is_valid():
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip(NO_HAPROXY)
    checked = subprocess.run(
        [haproxy, "-c", "-f", str(BALANCER_CONFIG)], capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_balancer_routes_around_a_stopped_replica_and_a_deploy_through_it_reaches_all(
    trained, mariadb_url, tmp_path
):
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip(NO_HAPROXY)
    first, second = trained["tags"][FIRST], trained["tags"][SECOND]
    init_schema(mariadb_url).dispose()
    fleet = [
        start_replica(tmp_path / f"replica-{n}", mariadb_url, trained["bento"], first)
        for n in range(3)
    ]
    port = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(balancer_config(port, [service.port for service in fleet]))
    balancer_url = f"http://127.0.0.1:{port}"
    with (tmp_path / "haproxy.log").open("w") as sink:
        balancer = subprocess.Popen(
            [haproxy, "-db", "-f", str(config)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    load = None
    try:
        for service in fleet:
            service.wait_ready()
        seen: set[str] = set()

        def every_replica_behind_the_balancer() -> bool:
            try:
                answer = requests.get(f"{balancer_url}{routes.METADATA}", timeout=5)
            except requests.RequestException:
                return False
            if answer.status_code == 200:
                seen.add(answer.json()["replica"]["replica"])
            return len(seen) == 3

        wait_for(every_replica_behind_the_balancer, 60, "three replicas behind the balancer")
        load = LoadGenerator(balancer_url, trained["payloads"], threads=3, max_seconds=150)
        load.start()
        wait_for(lambda: load.count() >= 60, 60, "load through the balancer")
        fleet[1].stop()  # as `docker compose stop` does: SIGTERM, the log drained
        stopped_at = load.count()
        wait_for(lambda: load.count() >= stopped_at + 60, 60, "load after the stop")
        result = deploy(trained, mariadb_url, balancer_url, SECOND, timeout=STALE_SECONDS)
        assert result.success, result.failure_data_for_node("deployed_bento")
        assert [metadata(fleet[0])["model_version"], metadata(fleet[2])["model_version"]] == [
            second,
            second,
        ]
        deployed_at = load.count()
        wait_for(lambda: load.count() >= deployed_at + 60, 60, "load after the deploy")
    finally:
        outcomes = load.stop() if load is not None else []
        balancer.terminate()
        balancer.wait(10)
        for service in fleet:
            service.stop()

    failures = [outcome for outcome in outcomes if outcome.status != 200]
    assert not failures, (failures[:3], (tmp_path / "haproxy.log").read_text()[-2000:])
    assert len(load.resent) <= max(3, len(outcomes) // 100), load.resent
    assert_logged_exactly_once(mariadb_url, load.prefix, load.answered())
    reported = result.asset_materializations_for_node("deployed_bento")[0].metadata
    assert reported["live_replicas"].value == 2  # the stopped replica removed its row
    assert {row["model_tag"] for row in reported["replicas"].value} == {second}
