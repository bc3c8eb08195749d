"""The production stack in a real Docker engine, driven the way an operator uses it.

`docker compose up -d --build` from a clean state with this test's own .env (random
secrets, free ports, the small training grid); data seeded in the code server's
container; the new-data sensor's run and a two-day backfill (README's command), each in a
run container of its own; a newer day whose model the deploy sensor deploys (the Bento
built with no way out of the stack's internal network); a prediction through the
published port logged in MariaDB; the api restarted; the stack taken down and up again with
its volumes; a run container killed mid-run and a run terminated from the UI; `model_monitoring`;
the Docker API proxy refusing what runs do not need (the Docker socket is in that proxy
alone: every run above goes through it); three API replicas behind
the balancer through a deploy and the loss of one replica under load; and at the end
`docker compose down -v` leaving no volume and no run container behind.

The tests run in file order and share one stack (module fixture). Under CI they are
required: scripts/test.sh installs and starts Docker first (scripts/docker_setup.sh).
Elsewhere they skip with one line when no Docker engine answers; run them alone with
`bash scripts/test_stack.sh`. Where no registry can be reached, the base images are the
stand-ins of deploy/standins/ (README "Production" says how they differ).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
import requests

from bench.docker_stack import (
    NAMED_VOLUMES,
    TEST_IMAGE,
    ComposeStack,
    docker_stack_available,
    leftover_project_objects,
    pip_ca_bundle,
    prepare_images,
    run,
)
from bench.sample_requests import load_sample
from bench.sample_requests import valid_request_payloads as sample_payloads
from credit_platform.core import routes
from credit_platform.core.service_process import free_port

pytestmark = [pytest.mark.slow, pytest.mark.docker]

CUSTOMERS = 400
TODAY = datetime.now(UTC).date()
FIRST_DAY = TODAY - timedelta(days=3)  # the newest day of the first load
BACKFILL = (TODAY - timedelta(days=5), TODAY - timedelta(days=4))
NEW_DAY = TODAY - timedelta(days=2)  # labels that arrive later: a newer champion
HISTORY_DAYS = 35
RUN_TIMEOUT = 900.0
# Under CI the stack test is required; elsewhere it needs a Docker engine.
REQUIRED = bool(os.environ.get("CI"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    missing = docker_stack_available()
    if missing:
        if REQUIRED:
            pytest.fail(f"CI requires the Docker stack test: {missing}")
        pytest.skip(f"Docker stack test skipped: {missing}")
    existing = leftover_project_objects()
    if existing:
        reason = f"a credit_platform stack already exists on this engine: {existing[:5]}"
        if REQUIRED:
            pytest.fail(reason)
        pytest.skip(reason + " (the test never touches it)")

    images = prepare_images(tmp_path_factory.mktemp("prepare"))  # waits for a background build
    stack = ComposeStack.create(
        tmp_path_factory.mktemp("compose"),
        CREDIT_PLATFORM_IMAGE=TEST_IMAGE,
        TRAINING_GRID="small",
        DAGSTER_UI_PORT=str(free_port()),
        MLFLOW_UI_PORT=str(free_port()),
        API_PORT=str(free_port()),
        API_WORKERS="1",
        DAGSTER_MAX_CONCURRENT_RUNS="3",
        RETENTION_KEEP_LAST="1",
        PIP_CA_BUNDLE=pip_ca_bundle(),
        **images,
    )
    try:
        stack.timed("build", "build")
        stack.timed("up", "up", "-d")
        stack.wait_healthy(
            ["mariadb", "mlflow", "dagster-user-code", "dagster-webserver", "dagster-daemon"],
            timeout=300,
        )
        stack.timings["up_to_healthy"] = round(
            stack.timings["up"] + stack.timings.get("wait", 0.0), 1
        )
        yield stack
    finally:
        print(f"stack timings (s): {stack.timings}")
        if os.environ.get("CREDIT_STACK_TEST_KEEP") and not REQUIRED:
            print(f"stack left up for a look (.env in {stack.workdir})")
        else:
            stack.compose(
                "down", "-v", "--remove-orphans", "--timeout", "20", timeout=300, check=False
            )


# The Docker socket: only docker-proxy mounts it; the daemon and the webserver reach the
# filtered API at DOCKER_HOST.
DOCKER_SOCKET = "/var/run/docker.sock"
PROXY_CLIENTS = ("dagster-daemon", "dagster-webserver")
# Run inside the daemon's container with the image run containers start from: Docker API
# calls through the proxy, as docker-py (DockerRunLauncher's client) makes them; prints each
# call's outcome ("allowed" or the proxy's status and reason).
PROXY_PROBE = """
import json, sys
import docker

image = sys.argv[1]
client = docker.from_env()
me = open("/etc/hostname").read().strip()
run_like = dict(
    image=image,
    network="credit_platform",
    volumes=[
        "credit_platform_data:/var/lib/credit_platform",
        "credit_platform_dagster_storage:/opt/dagster/dagster_home/storage",
    ],
    auto_remove=True,
    labels={"credit_platform/proxy_probe": "1"},
)
results = {}


def attempt(name, call):
    try:
        call()
        results[name] = "allowed"
    except docker.errors.APIError as error:
        results[name] = f"{error.status_code} {error.explanation}"


attempt("exec", lambda: client.api.exec_create(me, ["id"]))
attempt("list containers", lambda: client.containers.list())
attempt("list images", lambda: client.images.list())
attempt("remove", lambda: client.api.remove_container("credit-platform-no-such-container"))
attempt("delete image", lambda: client.api.remove_image("credit-platform-no-such-image:0"))
attempt("pull", lambda: client.images.pull("busybox", tag="latest"))
attempt("info", lambda: client.info())
attempt(
    "privileged",
    lambda: client.containers.create(command=["true"], privileged=True, **run_like),
)
attempt(
    "host root mounted",
    lambda: client.containers.create(command=["true"], **{**run_like, "volumes": ["/:/host"]}),
)
attempt(
    "host network",
    lambda: client.containers.create(
        command=["true"], **{**run_like, "network": None, "network_mode": "host"}
    ),
)
attempt(
    "another image",
    lambda: client.containers.create(command=["true"], **{**run_like, "image": "busybox:1.36"}),
)
# What the run launcher does (create, start, inspect) passes.
container = client.containers.create(command=["true"], **run_like)
container.start()
container.reload()
results["run-like container"] = container.id
print(json.dumps(results))
"""


def _seed(stack: ComposeStack, end: date, days: int = HISTORY_DAYS) -> None:
    stack.exec(
        "dagster-user-code",
        "credit-platform",
        "seed",
        "synthetic",
        "--customers",
        str(CUSTOMERS),
        "--days",
        str(days),
        "--end",
        end.isoformat(),
        "--quiet",
    )


def _partition_runs(job: str, partition: date):
    def select(run_: dict) -> bool:
        return (
            run_["jobName"] == job
            and run_["tags"].get("dagster/partition") == partition.isoformat()
        )

    return select


def _gone(container: str, timeout: float = 60) -> bool:
    """Whether a container is removed within `timeout` (a run reports success just before
    its process, and so its container, ends)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not run(["docker", "ps", "-a", "-q", "--filter", f"id={container}"]).stdout.strip():
            return True
        time.sleep(2)
    return False


def _metadata(stack: ComposeStack, timeout: float = 60) -> dict:
    """GET /metadata through the published port, waiting while the balancer has no ready
    replica yet (503: its health checks admit a replica a few seconds after it is up)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = requests.get(f"{stack.url('API_PORT')}{routes.METADATA}", timeout=10)
            if response.status_code == 200:
                return response.json()
            problem: object = f"{response.status_code} {response.text[:300]}"
        except requests.RequestException as error:
            problem = error
        if time.monotonic() > deadline:
            raise AssertionError(f"/metadata through the balancer: {problem}")
        time.sleep(2)


def _wait_served(stack: ComposeStack, model_tag: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = _metadata(stack, timeout=10)
            if last.get("model_version") == model_tag:
                return last
        except AssertionError as error:
            last = error
        time.sleep(3)
    raise AssertionError(f"the API does not serve {model_tag}: {last}\n{stack.logs('api')}")


def _champion(stack: ComposeStack) -> str:
    """The MLflow champion's model tag, read by the platform's code in the code server."""
    done = stack.exec(
        "dagster-user-code",
        "python",
        "-c",
        "import json, os;"
        "from credit_platform.defs.resources.mlflow_tracking import MlflowTrackingResource as M;"
        "m = M(tracking_uri=os.environ['MLFLOW_TRACKING_URI'],"
        " experiment_name=os.environ['MLFLOW_EXPERIMENT_NAME'],"
        " ui_url=os.environ['CREDIT_MLFLOW_UI_URL']);"
        "c = m.champion(); print(json.dumps(c.tags if c else {}))",
    )
    tags = json.loads(done.stdout.strip().splitlines()[-1])
    return tags.get("model_tag") or tags["bento_tag"]


def _logged(stack: ComposeStack, request_ids: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for start in range(0, len(request_ids), 500):
        chunk = request_ids[start : start + 500]
        quoted = ", ".join(f"'{request_id}'" for request_id in chunk)
        for request_id, count in stack.sql(
            "SELECT request_id, COUNT(*) FROM credit_predictions_api_log"
            f" WHERE request_id IN ({quoted}) GROUP BY request_id"
        ):
            counts[request_id] = int(count)
    return counts


def _predict(stack: ComposeStack, payload: dict, request_id: str) -> requests.Response:
    return requests.post(
        f"{stack.url('API_PORT')}{routes.PREDICT}",
        json={"data": payload},
        headers={"X-Request-ID": request_id},
        timeout=30,
    )


def test_every_service_comes_up_healthy_and_the_api_waits_for_a_model(stack):
    rows = {row["Service"]: row for row in stack.containers()}
    assert set(rows) >= {
        "mariadb",
        "mlflow",
        "dagster-user-code",
        "dagster-webserver",
        "dagster-daemon",
        "api",
        "api-gateway",
        "docker-proxy",
    }
    stack.wait_healthy(["api-gateway", "docker-proxy"], timeout=120)
    # No model yet: the api waits (and says so) instead of crashing.
    assert rows["api"]["State"] == "running"
    assert "no model" in stack.logs("api").lower() or "wait" in stack.logs("api").lower()


def _uids(container: str) -> set[int]:
    """The user ids of a container's processes, as the host sees them."""
    lines = run(["docker", "top", container, "-eo", "pid,uid"]).stdout.splitlines()[1:]
    return {int(line.split()[1]) for line in lines if line.strip()}


def test_only_the_docker_proxy_holds_the_socket_and_only_it_runs_as_root(stack):
    rows = {row["Service"]: row for row in stack.containers()}
    for service, row in rows.items():
        [info] = json.loads(run(["docker", "inspect", row["ID"]]).stdout)
        sockets = [m for m in info["Mounts"] if m["Source"] == DOCKER_SOCKET]
        assert bool(sockets) == (service == "docker-proxy"), (service, info["Mounts"])
        environment = dict(item.split("=", 1) for item in info["Config"]["Env"])
        if service in PROXY_CLIENTS:
            assert environment["DOCKER_HOST"] == "tcp://docker-proxy:2375"
        else:
            assert "DOCKER_HOST" not in environment, service
        if service != "docker-proxy":
            assert 0 not in _uids(row["ID"]), f"{service} runs a process as root"
    # The proxy's root has no capability at all (it opens the socket as its owner).
    proxy = rows["docker-proxy"]["ID"]
    capabilities = run(
        ["docker", "exec", proxy, "sh", "-c", "grep -h '^Cap[EPB][a-z]*:' /proc/[0-9]*/status"]
    ).stdout.split()
    values = {value for value in capabilities if not value.endswith(":")}
    assert values == {"0000000000000000"}, capabilities
    # Only the daemon and the webserver can reach it: not the code server (nor run
    # containers, MLflow or the API, on the same network as the code server).
    connect = "import socket; socket.create_connection(('docker-proxy', 2375), timeout=5)"
    for service in PROXY_CLIENTS:
        stack.exec(service, "python", "-c", connect)
    refused = stack.exec("dagster-user-code", "python", "-c", connect, check=False)
    assert refused.returncode != 0 and (
        "Name or service not known" in refused.stderr
        or "Temporary failure in name resolution" in refused.stderr
    ), refused.stderr[-500:]


def test_the_docker_proxy_passes_run_containers_and_refuses_everything_else(stack):
    done = stack.exec("dagster-daemon", "python", "-c", PROXY_PROBE, TEST_IMAGE)
    results = json.loads(done.stdout.strip().splitlines()[-1])
    run_like = results.pop("run-like container")
    refused = {name for name, outcome in results.items() if outcome.startswith("403 docker-proxy:")}
    assert refused == set(results), results
    assert "isolation" in results["privileged"] and "named volumes" in results["host root mounted"]
    assert "not allowed" in results["exec"] and "platform image" in results["another image"]
    # The allowed container ran (its command) and removed itself, like a run's.
    assert _gone(run_like), "the probe's run-like container was left behind"


def test_the_new_data_sensor_trains_in_a_run_container_and_the_api_serves_it(stack):
    _seed(stack, FIRST_DAY)
    [run_] = stack.wait_for_runs(
        _partition_runs("continuous_training", FIRST_DAY), timeout=RUN_TIMEOUT
    )
    assert run_["tags"].get("dagster/sensor_name") == "new_data_sensor"
    # Launched by the DockerRunLauncher in a container of its own, which is gone now.
    container = run_["tags"].get("docker/container_id")
    assert container, run_["tags"]
    assert _gone(container), "a finished run's container was left behind"
    stack.wait_healthy(["api"], timeout=300)
    served = _metadata(stack)
    assert served["partition"] == FIRST_DAY.isoformat()
    stack.first_model = served["model_version"]


def test_a_two_day_backfill_runs_each_day_in_its_own_container(stack):
    stack.exec(
        "dagster-daemon",
        "dagster",
        "job",
        "backfill",
        "-w",
        "workspace.yaml",
        "-j",
        "continuous_training",
        "--from",
        BACKFILL[0].isoformat(),
        "--to",
        BACKFILL[1].isoformat(),
        "--noprompt",
    )
    finished = stack.wait_for_runs(
        lambda r: (
            r["tags"].get("dagster/backfill")
            and r["tags"].get("dagster/partition") in {d.isoformat() for d in BACKFILL}
        ),
        count=2,
        timeout=RUN_TIMEOUT,
    )
    containers = {r["tags"].get("docker/container_id") for r in finished}
    assert len(containers) == 2 and None not in containers
    assert all(_gone(container) for container in containers)
    # Models of older days never displace the champion of a newer one.
    assert _metadata(stack)["partition"] == FIRST_DAY.isoformat()


def test_the_deploy_sensor_deploys_a_newer_champion_built_offline(stack, kaggle_sample):
    _seed(stack, NEW_DAY, days=HISTORY_DAYS + 1)
    stack.wait_for_runs(_partition_runs("continuous_training", NEW_DAY), timeout=RUN_TIMEOUT)
    champion = _champion(stack)
    [deploy] = stack.wait_for_runs(
        lambda r: (
            r["jobName"] == "deploy_model"
            and r["tags"].get("credit_platform/model_tag") == champion
        ),
        timeout=RUN_TIMEOUT,
    )
    assert deploy["tags"].get("dagster/sensor_name") == "deploy_sensor"
    metadata = _wait_served(stack, champion)
    assert metadata["partition"] == NEW_DAY.isoformat()

    payload = sample_payloads(load_sample(kaggle_sample, rows=50), 1)[0]
    request_id = f"docker-stack-{uuid.uuid4().hex[:12]}"
    response = _predict(stack, payload, request_id)
    assert response.status_code == 200, response.text
    [[customer, prediction, model]] = stack.sql(
        "SELECT customer_id, prediction, model_version FROM credit_predictions_api_log"
        f" WHERE request_id = '{request_id}'"
    )
    assert (customer, prediction, model) == (
        payload["customer_id"],
        response.json()["predict"],
        champion,
    )
    stack.champion = champion
    stack.first_request = request_id


def test_the_deploy_prunes_old_models_and_the_prune_job_runs_in_its_container(stack):
    """Retention with RETENTION_KEEP_LAST=1: the champion, the model it replaced in service
    and the newest stay; the two backfill models go."""
    stored = stack.stored_models()
    assert stored == {stack.champion, stack.first_model}, stored
    stack.launch("prune_model_store")
    stack.wait_for_runs(lambda r: r["jobName"] == "prune_model_store", timeout=RUN_TIMEOUT)
    assert stack.stored_models() == stored


def test_a_restarted_api_serves_the_champion_again(stack):
    stack.compose("restart", "api")
    stack.wait_healthy(["api"], timeout=300)
    assert _wait_served(stack, stack.champion)


def test_down_and_up_keeps_runs_models_champion_and_the_prediction_log(stack):
    runs_before = {r["runId"] for r in stack.runs()}
    stack.compose("down", "--timeout", "20")
    stack.timed("up_again", "up", "-d")
    stack.wait_healthy(
        ["mariadb", "mlflow", "dagster-user-code", "dagster-webserver", "dagster-daemon", "api"],
        timeout=400,
    )
    assert runs_before <= {r["runId"] for r in stack.runs()}
    assert _champion(stack) == stack.champion
    assert _wait_served(stack, stack.champion)
    assert _logged(stack, [stack.first_request]) == {stack.first_request: 1}


def _launch_and_wait_started(stack: ComposeStack, partition: date) -> tuple[dict, str]:
    """Launches the day's training run; returns it and its container once it runs."""
    earlier = {r["runId"] for r in stack.runs()}
    stack.launch_partition("continuous_training", partition.isoformat())
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        started = [
            r
            for r in stack.runs("continuous_training")
            if r["runId"] not in earlier
            and r["status"] == "STARTED"
            and r["tags"].get("dagster/partition") == partition.isoformat()
            and r["tags"].get("docker/container_id")
        ]
        if started:
            return started[0], started[0]["tags"]["docker/container_id"]
        time.sleep(2)
    raise AssertionError(f"the run of {partition} never started\n{stack.logs('dagster-daemon')}")


def test_a_killed_run_container_is_marked_failed_and_a_relaunch_succeeds(stack):
    victim, container = _launch_and_wait_started(stack, BACKFILL[0])
    time.sleep(5)  # mid-run: its steps are under way
    run(["docker", "kill", container])
    # Run monitoring notices the container is gone and fails the run.
    stack.wait_for_runs(lambda r: r["runId"] == victim["runId"], timeout=300, statuses=("FAILURE",))
    stack.launch_partition("continuous_training", BACKFILL[0].isoformat())
    stack.wait_for_runs(
        lambda r: (
            r["runId"] != victim["runId"]
            and r["tags"].get("dagster/partition") == BACKFILL[0].isoformat()
            and not r["tags"].get("dagster/backfill")
        ),
        timeout=RUN_TIMEOUT,
    )


def test_a_run_terminated_from_the_ui_stops_its_container_through_the_proxy(stack):
    """The webserver terminates (DockerRunLauncher.terminate stops the container): through
    the proxy too, since it has no socket."""
    victim, container = _launch_and_wait_started(stack, BACKFILL[1])
    stack.terminate(victim["runId"])
    stack.wait_for_runs(
        lambda r: r["runId"] == victim["runId"], timeout=300, statuses=("CANCELED",)
    )
    assert _gone(container), "a terminated run's container was left behind"


def test_model_monitoring_materializes_in_the_stack(stack):
    day = TODAY - timedelta(days=1)
    stack.launch_partition("monitor_predictions", day.isoformat())
    [run_] = stack.wait_for_runs(_partition_runs("monitor_predictions", day), timeout=RUN_TIMEOUT)
    assert "model_monitoring" in stack.materialized(run_["runId"])


class _Load:
    """Single-row predictions sent on a few threads until stopped; every answer and every
    failure recorded by request id."""

    def __init__(self, stack: ComposeStack, payloads: list[dict], threads: int = 4):
        self.stack, self.payloads = stack, payloads
        self.answered: dict[str, str] = {}
        self.failed: list[str] = []
        self.phase = "deploy"  # what is under way while a request is sent
        self.failed_in: dict[str, list[str]] = {}
        self.slowest: dict[str, float] = {"deploy": 0.0, "stop": 0.0, "after": 0.0}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._send, daemon=True) for _ in range(threads)]

    def _send(self) -> None:
        session = requests.Session()
        n = 0
        while not self.stop.is_set():
            payload = self.payloads[n % len(self.payloads)]
            n += 1
            request_id = f"replicas-{uuid.uuid4().hex}"
            phase = self.phase
            sent = time.monotonic()
            try:
                response = session.post(
                    f"{self.stack.url('API_PORT')}{routes.PREDICT}",
                    json={"data": payload},
                    headers={"X-Request-ID": request_id},
                    timeout=30,
                )
                took = time.monotonic() - sent
                self.slowest[phase] = max(self.slowest[phase], took)
            except requests.RequestException as error:
                self.failed.append(f"{request_id}: {error}")
                self.failed_in.setdefault(phase, []).append(request_id)
                continue
            if response.status_code == 200:
                self.answered[request_id] = response.json()["predict"]
            else:
                self.failed.append(f"{request_id}: {response.status_code} {response.text[:200]}")
                self.failed_in.setdefault(phase, []).append(request_id)

    def __enter__(self) -> _Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


def _replica_models(stack: ComposeStack) -> dict[str, str]:
    """What each api replica serves, asked inside its own container."""
    served = {}
    for row in stack.containers("api"):
        done = run(
            [
                "docker",
                "exec",
                row["ID"],
                "python",
                "-c",
                "import json, urllib.request; print(json.load(urllib.request.urlopen("
                "'http://127.0.0.1:3000/metadata', timeout=10))['model_version'])",
            ],
            check=False,
        )
        served[row["Name"]] = done.stdout.strip() or done.stderr.strip()[-200:]
    return served


def test_three_replicas_converge_on_a_deploy_under_load_and_survive_losing_one(
    stack, kaggle_sample
):
    stack.compose("up", "-d", "--scale", "api=3", "--no-recreate")
    stack.wait_healthy(["api"], timeout=400)
    assert len(stack.containers("api")) == 3
    payloads = sample_payloads(load_sample(kaggle_sample, rows=200), 50)
    with _Load(stack, payloads) as load:
        time.sleep(5)
        # An operator rolls the champion back (a deterministic change of champion, unlike a
        # new model, which may fail its quality check): the deploy sensor serves it.
        # (Runs from before, such as the deploys the sensor asked for while the stack was
        # down, may name the same model: only runs after the rollback count.)
        earlier = {r["runId"] for r in stack.runs()}
        stack.exec("dagster-user-code", "credit-platform", "rollback")
        champion = _champion(stack)
        assert champion != stack.champion
        stack.wait_for_runs(
            lambda r: (
                r["runId"] not in earlier
                and r["jobName"] == "deploy_model"
                and r["tags"].get("credit_platform/model_tag") == champion
            ),
            timeout=RUN_TIMEOUT,
        )
        # The deploy run ends once every live replica reports the new model.
        served = _replica_models(stack)
        assert set(served.values()) == {champion}, served
        # One replica goes away under load: it fails /readyz first and serves on until the
        # balancer has taken it out (CREDIT_API_DRAIN_SECONDS), then stops. No request is
        # lost, none is held until the replica is killed, none answered is lost from the log.
        load.phase = "stop"
        victim = stack.containers("api")[0]["Name"]
        run(["docker", "stop", "--time", "25", victim])
        answered_at_stop = len(load.answered)
        load.phase = "after"
        time.sleep(10)
    stopped = run(["docker", "logs", "--tail", "200", victim])
    assert "told to stop" in stopped.stdout + stopped.stderr, stopped.stderr[-3000:]
    assert load.failed_in == {}, load.failed[:10]
    print(f"slowest answer while the replica stopped: {load.slowest['stop']:.2f} s")
    assert load.slowest["stop"] < 20, load.slowest
    assert len(load.answered) > answered_at_stop + 50
    counts = _logged(stack, list(load.answered))
    missing = [rid for rid in load.answered if counts.get(rid) != 1]
    assert missing == [], f"{len(missing)} answered requests not logged exactly once"


def test_down_with_volumes_leaves_nothing_behind(stack):
    stack.compose("down", "-v", "--remove-orphans", "--timeout", "20", timeout=300)
    volumes = run(["docker", "volume", "ls", "-q"]).stdout.split()
    assert [v for v in volumes if v in NAMED_VOLUMES] == []
    runs_left = run(["docker", "ps", "-a", "-q", "--filter", "label=dagster/run_id"]).stdout.split()
    assert runs_left == []
