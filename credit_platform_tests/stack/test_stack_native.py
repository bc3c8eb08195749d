"""The production stack, run natively: the services of docker-compose.yml started with
their own command lines on free local ports against the local MariaDB (as on a host
without containers; test_stack_docker.py runs the containers themselves), in the order
their `depends_on` conditions give, each declared ready by its own compose healthcheck.

What the containers would get, they get here: the databases and grants the MariaDB image's
init scripts create (sql/schema_mariadb.sql and deploy/mariadb/20-stack-databases.sh, run
against throwaway `credit_test_<random>` databases and user), DAGSTER_HOME holding
deploy/dagster's files verbatim, and each service's compose environment with in-network
addresses and container paths swapped for local ones (`stack_fixtures.NativeAddresses`).

The instance keeps its DockerRunLauncher: nothing here launches a run (sensor ticks skip,
GraphQL only reads), so the real stack config is what is under test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import requests
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import URL, make_url

from bench.sample_requests import load_sample
from bench.sample_requests import valid_request_payloads as sample_payloads
from credit_platform.core import routes, settings
from credit_platform.core.bento import bento_tag
from credit_platform.core.db import make_engine
from credit_platform.core.schema import credit_predictions_api_log
from credit_platform.core.service_process import free_port
from credit_platform.defs.resources.mlflow_tracking import MlflowTrackingResource
from credit_platform_tests.conftest import MARIADB_SERVER_URL, _mariadb_answers
from credit_platform_tests.model_fixtures import save_tiny_model
from credit_platform_tests.stack_fixtures import (
    REPO_ROOT,
    REQUIRE_SECRETS,
    NativeAddresses,
    command_port,
    copy_stack_dagster_home,
    dependencies,
    filled_env_file,
    healthcheck_command,
    interpolate,
    load_compose,
)

pytestmark = [pytest.mark.slow, pytest.mark.mariadb]

# The local server stands in for the mariadb container; natively there is one API process
# and no balancer, so the balancer's address leads to it, and no Docker API proxy (nothing
# here launches a run container; test_stack_docker.py runs all three).
EXTERNAL = {"mariadb", "api-gateway", "docker-proxy"}
START_TIMEOUT = 120.0
STOP_TIMEOUT = 20.0
# The code server's spawned gRPC server runs in a session of its own and, if its proxy went
# away before shutting it down (seen once under a loaded CI run), ends itself after
# Dagster's heartbeat TTL without heartbeats (DAGSTER_GRPC_PROXY_HEARTBEAT_TTL_SECONDS,
# default 30 s); only a descendant still alive after that is a leftover.
ORPHAN_GRACE = 35.0
LOCATION = "credit_platform"
ASSETS = {
    "credit_score_features_target",
    "train_valid_split",
    "scalers",
    "credit_score_model",
    "deployed_bento",
}


@dataclass
class NativeService:
    """One compose service running as a local process group."""

    name: str
    argv: list[str]
    probe: list[str]
    env: dict[str, str]
    cwd: Path
    log: Path
    process: subprocess.Popen | None = None
    healthy: bool = False
    family: list[psutil.Process] = field(default_factory=list)
    leftovers: list[int] = field(default_factory=list)  # descendants SIGTERM did not end

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: workers die with it
            )

    def check_health(self) -> bool:
        """Runs the compose healthcheck once; fails the test if the service has died."""
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")
        try:
            done = subprocess.run(
                self.probe, cwd=self.cwd, env=self.env, capture_output=True, timeout=20
            )
        except subprocess.TimeoutExpired:
            return False
        self.healthy = done.returncode == 0
        return self.healthy

    def terminate(self) -> None:
        """SIGTERM to the group, as `docker compose stop` sends it."""
        if self.process is None:
            return
        try:
            self.family = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            self.family = []
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)

    def finish(self) -> None:
        """SIGKILL to whatever is left after STOP_TIMEOUT, including descendants in sessions
        of their own (BentoML's workers start one); those are recorded as leftovers."""
        if self.process is None:
            return
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.group_alive() and time.monotonic() < deadline:
            self.process.poll()  # reap the leader so the group can empty
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        _, alive = psutil.wait_procs(self.family, timeout=max(1.0, deadline - time.monotonic()))
        if alive:  # outside the group: an orphan may still end on its own timer
            _, alive = psutil.wait_procs(alive, timeout=ORPHAN_GRACE)
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        self.leftovers = [process.pid for process in alive]

    def group_alive(self) -> bool:
        assert self.process is not None
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class StackDatabases:
    """What the MariaDB image creates on a first start, on the local server."""

    server: URL
    user: str
    password: str
    store: str
    dagster: str
    mlflow: str

    def url(self, database: str) -> str:
        return self.server.set(database=database).render_as_string(hide_password=False)


@dataclass
class NativeStack:
    services: dict[str, NativeService]
    databases: StackDatabases
    model_tag: str
    ports: dict[int, int]  # container port -> local port
    artifacts: Path  # what the MLflow container mounts as its artifacts volume

    def http(self, container_port: int) -> str:
        return f"http://127.0.0.1:{self.ports[container_port]}"

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = requests.post(
            f"{self.http(3001)}/graphql",
            json={"query": query, "variables": variables or {}},
            timeout=30,
        )
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]


def _require_mariadb() -> URL:
    reason = _mariadb_answers()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(
                f"MariaDB is required in CI but {MARIADB_SERVER_URL} did not answer: {reason}"
            )
        pytest.skip(f"no MariaDB server answers at {MARIADB_SERVER_URL}: {reason}")
    if shutil.which("mariadb") is None:
        pytest.fail("the `mariadb` client runs the image's init scripts here; install it")
    return make_url(MARIADB_SERVER_URL)


def _run_init_file(server: URL, path: Path, env: dict[str, str]) -> None:
    """Run one /docker-entrypoint-initdb.d file as the MariaDB image does: `.sql` through the
    client into MARIADB_DATABASE, `.sh` sourced with the image's `docker_process_sql`."""
    client = [
        "mariadb",
        "--protocol=tcp",
        f"--host={server.host or '127.0.0.1'}",
        f"--port={server.port or 3306}",
        f"--user={server.username or 'root'}",
    ]
    script = (
        'docker_process_sql() { MYSQL_PWD="$ROOT_PASSWORD" '
        + " ".join(client)
        + ' --database="$MARIADB_DATABASE" "$@"; }\n'
        + (f'docker_process_sql < "{path}"\n' if path.suffix == ".sql" else f'. "{path}"\n')
    )
    done = subprocess.run(
        ["bash", "-euc", script],
        env={**os.environ, **env, "ROOT_PASSWORD": server.password or ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"{path.name} failed: {done.stderr}"


@pytest.fixture(scope="module")
def stack_databases() -> Iterator[StackDatabases]:
    server = _require_mariadb()
    token = uuid.uuid4().hex[:10]
    databases = StackDatabases(
        server=server,
        user=f"credit_test_{token}",
        password=uuid.uuid4().hex,
        store=f"credit_test_{token}_store",
        dagster=f"credit_test_{token}_dagster",
        mlflow=f"credit_test_{token}_mlflow",
    )
    admin = create_engine(server)
    try:
        with admin.begin() as connection:  # what the image does for MARIADB_DATABASE/USER
            connection.execute(text(f"CREATE DATABASE `{databases.store}`"))
            connection.execute(
                text(f"CREATE USER '{databases.user}'@'%' IDENTIFIED BY :password"),
                {"password": databases.password},
            )
            connection.execute(
                text(f"GRANT ALL PRIVILEGES ON `{databases.store}`.* TO '{databases.user}'@'%'")
            )
        init_env = {
            "MARIADB_DATABASE": databases.store,
            "MARIADB_USER": databases.user,
            "DAGSTER_DATABASE": databases.dagster,
            "MLFLOW_DATABASE": databases.mlflow,
        }
        mounts = [
            volume.split(":")[:2] for volume in load_compose()["services"]["mariadb"]["volumes"]
        ]
        for source, target in sorted(mounts, key=lambda mount: mount[1]):  # the image's order
            if target.startswith("/docker-entrypoint-initdb.d/"):
                _run_init_file(server, REPO_ROOT / source, init_env)
        yield databases
    finally:
        with admin.begin() as connection:
            for name in (databases.store, databases.dagster, databases.mlflow):
                connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
            connection.execute(text(f"DROP USER IF EXISTS '{databases.user}'@'%'"))
        admin.dispose()


def _compose_for(databases: StackDatabases) -> dict:
    """The compose file interpolated as `docker compose` would with .env made from
    .env.example, the database names and credentials being this test's."""
    env = {
        **filled_env_file(),
        "MARIADB_USER": databases.user,
        "MARIADB_PASSWORD": databases.password,
        "MARIADB_DATABASE": databases.store,
        "DAGSTER_DATABASE": databases.dagster,
        "MLFLOW_DATABASE": databases.mlflow,
    }
    return interpolate(load_compose(), env)


def _base_environment(service_env: dict[str, str]) -> dict[str, str]:
    """This process's environment without platform or Dagster settings the service does not
    set itself (so nothing from the test session leaks in), plus the service's."""
    platform = {value for name, value in vars(settings).items() if name.endswith("_ENV")}
    inherited = {
        name: value
        for name, value in os.environ.items()
        if name not in platform and not name.startswith(("DAGSTER_", "MLFLOW_", "BENTOML_"))
    }
    return {**inherited, "BENTOML_DO_NOT_TRACK": "true", **service_env}


def _start_in_dependency_order(services: dict[str, NativeService], needs: dict) -> None:
    started: set[str] = set()
    while len(started) < len(services):
        wave = [
            name
            for name in services
            if name not in started
            and all(services[dep].healthy for dep in needs[name] if dep not in EXTERNAL)
        ]
        assert wave, f"depends_on has a cycle among {sorted(set(services) - started)}"
        for name in wave:
            services[name].start()
            started.add(name)
        deadline = time.monotonic() + START_TIMEOUT
        waiting = list(wave)
        while waiting:
            waiting = [name for name in waiting if not services[name].check_health()]
            if waiting and time.monotonic() > deadline:
                pytest.fail(
                    "not healthy within "
                    f"{START_TIMEOUT:.0f}s: "
                    + "; ".join(f"{name}:\n{services[name].tail()}" for name in waiting)
                )
            if waiting:
                time.sleep(1.0)


@pytest.fixture(scope="module")
def stack(stack_databases, tmp_path_factory, kaggle_sample) -> Iterator[NativeStack]:
    root = tmp_path_factory.mktemp("native_stack")
    sample = load_sample(kaggle_sample, rows=1500)
    model_tag = save_tiny_model(sample, partition="2025-01-20", iterations=10)
    compose = _compose_for(stack_databases)
    wanted = [name for name in compose["services"] if name not in EXTERNAL]
    ports = {command_port(compose["services"][name]["command"]): free_port() for name in wanted}
    ports.pop(None, None)
    server = stack_databases.server
    database_address = f"{server.host or '127.0.0.1'}:{server.port or 3306}"
    endpoints = {"mariadb:3306": database_address}
    for name in wanted:
        port = command_port(compose["services"][name]["command"])
        if port is not None:
            endpoints[f"{name}:{port}"] = f"127.0.0.1:{ports[port]}"
            endpoints[f"localhost:{port}"] = f"127.0.0.1:{ports[port]}"
    endpoints["api-gateway:3000"] = endpoints["api:3000"]
    dagster_home = copy_stack_dagster_home(root / "dagster_home")
    native = NativeAddresses(
        endpoints=endpoints,
        paths={
            "/var/lib/credit_platform/bentoml": str(settings.bentoml_home()),
            "/var/lib/credit_platform": str(root / "platform"),
            "/var/lib/credit_platform_api": str(root / "api_home"),
            "/opt/dagster/dagster_home": str(dagster_home),
            "/var/lib/mlflow/artifacts": str(root / "mlartifacts"),
        },
        ports=ports,
        overrides={
            "DAGSTER_MYSQL_HOST": server.host or "127.0.0.1",
            "DAGSTER_MYSQL_PORT": str(server.port or 3306),
            "DAGSTER_CODE_SERVER_HOST": "127.0.0.1",
            "DAGSTER_CODE_SERVER_PORT": str(ports[4000]),
            # The engine's own socket, as a native daemon would use it.
            "DOCKER_HOST": "unix:///var/run/docker.sock",
        },
    )
    services: dict[str, NativeService] = {}
    for name in wanted:
        spec = compose["services"][name]
        env = native.environment(spec.get("environment") or {})
        argv, probe = native.command(spec["command"]), native.command(healthcheck_command(spec))
        cwd = Path(native.text(spec.get("working_dir", str(root))))
        leftovers = native.leftovers(env, [*argv, *probe, str(cwd)], list(compose["services"]))
        assert not leftovers, f"{name} would still reach into the containers: {leftovers}"
        argv = ["sh", str(REQUIRE_SECRETS), *argv]  # the image's entrypoint checks the secrets
        services[name] = NativeService(
            name=name,
            argv=argv,
            probe=probe,
            env=_base_environment(env),
            cwd=cwd,
            log=root / f"{name}.log",
        )
    for directory in ("platform", "api_home", "mlartifacts"):
        (root / directory).mkdir(exist_ok=True)
    result = NativeStack(
        services=services,
        databases=stack_databases,
        model_tag=model_tag,
        ports=ports,
        artifacts=root / "mlartifacts",
    )
    try:
        _start_in_dependency_order(
            services, {name: dependencies(compose["services"][name]) for name in wanted}
        )
        yield result
    finally:
        for service in services.values():
            service.terminate()
        for service in services.values():
            service.finish()
        lingering = [s.name for s in services.values() if s.leftovers]
        assert not lingering, f"processes outlived their service's stop: {lingering}"


def test_webserver_lists_the_assets_from_the_code_server(stack):
    data = stack.graphql(
        """
        {
          assetNodes { assetKey { path } }
          instance { runLauncher { name } runQueuingSupported }
          workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } }
        }
        """
    )
    keys = {"/".join(node["assetKey"]["path"]) for node in data["assetNodes"]}
    assert keys >= ASSETS
    assert data["instance"]["runLauncher"]["name"] == "DockerRunLauncher"
    assert data["instance"]["runQueuingSupported"] is True
    entries = data["workspaceOrError"]["locationEntries"]
    assert [(entry["name"], entry["loadStatus"]) for entry in entries] == [(LOCATION, "LOADED")]


SENSOR_TICKS = """
query ($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor {
      sensorState { status ticks(limit: 5) { status skipReason error { message } } }
    }
  }
}
"""


def _ticks(stack: NativeStack, sensor: str) -> list[dict]:
    selector = {
        "repositoryLocationName": LOCATION,
        "repositoryName": "__repository__",
        "sensorName": sensor,
    }
    data = stack.graphql(SENSOR_TICKS, {"selector": selector})["sensorOrError"]
    assert data["__typename"] == "Sensor", data
    assert data["sensorState"]["status"] == "RUNNING"
    return data["sensorState"]["ticks"]


def test_daemon_records_sensor_ticks_in_mariadb(stack):
    """Both sensors tick through the code server: the new-data sensor reads the (empty)
    feature store in MariaDB, the deploy sensor asks the MLflow server for a champion."""
    expected = {
        "new_data_sensor": "credit_score has no labels yet",
        "deploy_sensor": "the MLflow registry has no champion: no model has passed its quality "
        "check yet",
    }
    deadline = time.monotonic() + 90
    ticks: dict[str, list[dict]] = {}
    while time.monotonic() < deadline:
        # Finished ticks only: the newest one may still be running (status STARTED).
        ticks = {
            sensor: [tick for tick in _ticks(stack, sensor) if tick["status"] != "STARTED"]
            for sensor in expected
        }
        if all(ticks.values()):
            break
        time.sleep(2)
    for sensor, reason in expected.items():
        assert ticks.get(sensor), (
            f"no finished {sensor} tick within 90s:\n{stack.services['dagster-daemon'].tail()}"
        )
        tick = ticks[sensor][0]
        assert (tick["status"], tick["skipReason"]) == ("SKIPPED", reason), tick
    rows = _dagster_table_count(stack, "job_ticks")
    assert rows >= 2, "the ticks live in the instance's MariaDB database"


def _dagster_table_count(stack: NativeStack, table: str) -> int:
    engine = make_engine(stack.databases.url(stack.databases.dagster))
    try:
        with engine.connect() as connection:
            return connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
    finally:
        engine.dispose()


def test_mlflow_server_logs_a_run_to_mariadb_and_its_artifacts_to_the_volume(stack):
    import mlflow

    tracking = MlflowTrackingResource(
        tracking_uri=stack.http(5000), experiment_name="native_stack_test"
    )
    with tracking.start_run("stack-smoke") as run:
        mlflow.log_param("grid", "small")
        mlflow.log_metric("val_accuracy", 0.625)
        mlflow.log_text("served through the tracking server", "notes/smoke.txt")
    logged = tracking.client().get_run(run.info.run_id)
    assert logged.info.status == "FINISHED"
    assert logged.data.metrics["val_accuracy"] == 0.625
    assert logged.info.artifact_uri.startswith("mlflow-artifacts:/")

    engine = make_engine(stack.databases.url(stack.databases.mlflow))
    try:
        with engine.connect() as connection:
            stored = connection.execute(
                text("SELECT status FROM runs WHERE run_uuid = :id"), {"id": run.info.run_id}
            ).scalar_one()
    finally:
        engine.dispose()
    assert stored == "FINISHED"
    artifacts = list(stack.artifacts.rglob("smoke.txt"))
    assert len(artifacts) == 1 and run.info.run_id in str(artifacts[0])
    assert artifacts[0].read_text() == "served through the tracking server"


def test_api_answers_and_logs_the_prediction_in_mariadb(stack, kaggle_sample):
    api = stack.http(3000)
    metadata = requests.get(f"{api}{routes.METADATA}", timeout=10).json()
    assert metadata["model_version"] == stack.model_tag
    # The api service's command runs the service's built Bento, the one a deploy builds.
    assert metadata["bento_tag"] == bento_tag()
    command = psutil.Process(stack.services["api"].process.pid).cmdline()
    assert command[1:4] == ["-m", "bentoml", "serve"] and command[4] == bento_tag(), command
    payload = sample_payloads(load_sample(kaggle_sample, rows=200), 1)[0]
    request_id = f"native-stack-{uuid.uuid4().hex[:12]}"
    response = requests.post(
        f"{api}{routes.PREDICT}",
        json={"data": payload},
        headers={"X-Request-ID": request_id},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    answer = response.json()

    engine = make_engine(stack.databases.url(stack.databases.store))
    try:
        with engine.connect() as connection:
            row = (
                connection.execute(
                    select(credit_predictions_api_log).where(
                        credit_predictions_api_log.c.request_id == request_id
                    )
                )
                .mappings()
                .one()
            )
    finally:
        engine.dispose()
    assert row["customer_id"] == payload["customer_id"]
    assert row["prediction"] == answer["predict"]
    assert row["model_version"] == stack.model_tag
