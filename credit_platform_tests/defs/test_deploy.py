"""Continuous deployment: the deployed_bento asset against real service processes running
the built Bento (started, hot-swapped under load, restarted on new code), and both sensors
evaluated with Dagster's sensor contexts."""

import json
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import requests
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterRun,
    DagsterRunStatus,
    Definitions,
    build_sensor_context,
    instance_for_test,
    materialize,
)

from bench.sample_requests import load_sample, valid_request_payloads
from credit_platform.core import routes
from credit_platform.core.bento import bento_tag, build_bento, serve_bento_command
from credit_platform.core.db import init_schema
from credit_platform.core.local_service import log_file, pid_file, start_service, stop_service
from credit_platform.core.processes import descendants
from credit_platform.core.service_client import ReportedModel, ServiceClient, ServiceError
from credit_platform.core.service_process import ServiceProcess, free_port
from credit_platform.core.settings import ADMIN_TOKEN_ENV, MODEL_NAME
from credit_platform.defs.assets.deploy import (
    HOT_SWAP,
    MLFLOW_VERSION_RUN_TAG,
    MODEL_TAG_RUN_TAG,
    OUTDATED_BENTO,
    RESTART,
    START,
    deployed_bento,
    rollout,
)
from credit_platform.defs.jobs import (
    CONTINUOUS_TRAINING_ASSETS,
    DEPLOY_ATTEMPTS,
    DEPLOY_RETRY_POLICY,
    deploy_job,
)
from credit_platform.defs.resources.feature_store import FeatureStoreResource
from credit_platform.defs.resources.prediction_service import PredictionServiceResource
from credit_platform.defs.sensors import (
    DEPLOY_KEY_TAG,
    deploy_sensor,
    new_data_sensor,
)
from credit_platform.ingest.synthetic import seed_synthetic
from credit_platform_tests.core.test_bento import copy_service_code
from credit_platform_tests.harness import LoadGenerator
from credit_platform_tests.training_fixtures import (
    deploy_platform,
    tiny_grid,
    train_and_check,
    training_resources,
)

TOKEN = "deploy-6447e5b9f6e40475a1dcf1e4"
FIRST, SECOND, REJECTED = "2025-02-03", "2025-02-04", "2025-02-05"


@pytest.fixture(scope="module")
def platform(tmp_path_factory, kaggle_sample):
    """Three trained partitions (the third fails its check), resources pointing at a free
    port where no service runs yet; any service started is stopped at the end."""
    tags = {}
    with (
        deploy_platform(tmp_path_factory.mktemp("deploy"), TOKEN) as (resources, port),
        instance_for_test() as instance,
    ):
        for partition, min_accuracy in ((FIRST, 0.3), (SECOND, 0.3), (REJECTED, 0.999)):
            result = train_and_check(resources, instance, partition, tiny_grid(), min_accuracy)
            tags[partition] = result.output_for_node("credit_score_model")["bento_tag"]
        payloads = valid_request_payloads(load_sample(kaggle_sample, rows=300), 40)
        yield {
            "resources": resources,
            "port": port,
            "tags": tags,
            "instance": instance,
            "payloads": payloads,
        }


def assert_runs_bento(port: int, tag: str) -> int:
    """The background service on `port` is `bentoml serve <tag>`, and its workers run the
    service from that Bento's copy of the code (BentoML's working directory for it); returns
    the server's pid."""
    import bentoml

    pid = int(pid_file(port).read_text())
    command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert [b"bentoml", b"serve", tag.encode()] == command[2:5], command
    source = Path(bentoml.bentos.get(tag).path, "src").resolve()
    workers = descendants(pid)
    assert workers
    assert {Path(f"/proc/{worker}/cwd").resolve() for worker in workers} == {source}
    return pid


def wait_until(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _deploy(platform, partition, service: PredictionServiceResource | None = None, tags=None):
    resources = platform["resources"]
    if service is not None:
        resources = {**resources, "prediction_service": service}
    return materialize(
        [*CONTINUOUS_TRAINING_ASSETS, deployed_bento],
        selection=[deployed_bento],
        partition_key=partition,
        resources=resources,
        instance=platform["instance"],
        raise_on_error=False,
        tags=tags,
    )


def _tick(platform, cursor=None):
    context = build_sensor_context(
        instance=platform["instance"], cursor=cursor, resources=platform["resources"]
    )
    return deploy_sensor(context)


def _record_failed_deploy(platform, request) -> None:
    """What the daemon leaves when the run it launched for `request` fails."""
    platform["instance"].add_run(
        DagsterRun(
            job_name=deploy_job.name,
            run_id=str(uuid.uuid4()),
            status=DagsterRunStatus.FAILURE,
            tags={**request.tags, "dagster/run_key": request.run_key},
        )
    )


def _service_log_tail(port: int, lines: int = 40) -> str:
    """The end of the background service's log, for a failure message."""
    path = log_file(port)
    return "\n".join(path.read_text().splitlines()[-lines:]) if path.exists() else ""


def _served_tag(platform) -> str | None:
    served = platform["resources"]["prediction_service"].client().reported_model()
    return served.tag if served else None


def test_deploy_flow_start_reload_skip_and_refuse(platform):
    tags = platform["tags"]

    # 1. Service down: the sensor asks to deploy the champion, once per outage.
    down = _tick(platform)
    assert [request.partition_key for request in down.run_requests] == [SECOND]
    key = down.run_requests[0].run_key
    assert key.startswith(f"deploy:{tags[SECOND]}:outage:")
    again = _tick(platform, cursor=down.cursor)
    assert [request.run_key for request in again.run_requests] == [key]

    # 2. deployed_bento builds the Bento and starts a service running it, with the first model.
    first = _deploy(platform, FIRST)
    assert first.success
    metadata = first.asset_materializations_for_node("deployed_bento")[0].metadata
    built = bento_tag()
    assert metadata["how"].value == "start"
    assert metadata["model_tag"].value == tags[FIRST]
    assert metadata["partition"].value == FIRST
    assert metadata["bento_tag"].value == built == metadata["built_bento_tag"].value
    assert "action_needed" not in metadata
    assert _served_tag(platform) == tags[FIRST]
    served = ServiceClient(f"http://127.0.0.1:{platform['port']}").reported_model()
    assert served.creation_time.tzinfo is not None
    assert served.bento_tag == built
    answer = requests.post(
        f"http://127.0.0.1:{platform['port']}{routes.METADATA}", timeout=5
    ).json()
    assert answer["partition"] == FIRST
    pid = assert_runs_bento(platform["port"], built)

    # 3. The service serves another model than the champion: one deploy request keyed by its tag.
    newer = _tick(platform, cursor=again.cursor)
    assert [(r.run_key, r.partition_key) for r in newer.run_requests] == [
        (f"deploy:{tags[SECOND]}", SECOND)
    ]
    assert json.loads(newer.cursor) == {}
    assert newer.run_requests[0].tags[DEPLOY_KEY_TAG] == f"deploy:{tags[SECOND]}"

    # 3b. While its run is queued or running, the same key (Dagster launches a key once);
    # once that run failed (after Dagster's own retries inside it), the sensor requests
    # nothing more for the model and says why it waits.
    request = newer.run_requests[0]
    assert [r.run_key for r in _tick(platform, cursor=newer.cursor).run_requests] == [
        request.run_key
    ]
    _record_failed_deploy(platform, request)
    for _ in range(3):
        given_up = _tick(platform, cursor=newer.cursor)
        assert given_up.run_requests == []
        message = given_up.skip_reason.skip_message
        assert f"failed after {DEPLOY_ATTEMPTS} attempts" in message
        assert f"{DEPLOY_KEY_TAG}=deploy:{tags[SECOND]}" in message

    # 4. Deploying it, code unchanged, hot-swaps the model into the running Bento under load:
    # the same process, the same Bento, no failed request.
    load = LoadGenerator(
        f"http://127.0.0.1:{platform['port']}", platform["payloads"], threads=2, max_seconds=120
    ).start()
    try:
        wait_until(lambda: load.count() >= 50)
        second = _deploy(platform, SECOND)
        answered_before = load.count()
        wait_until(lambda: load.count() >= answered_before + 50)
    finally:
        outcomes = load.stop()
    assert second.success
    failures = [outcome for outcome in outcomes if outcome.status != 200]
    assert not failures, (failures[:3], load.resent, _service_log_tail(platform["port"]))
    # A resend (same X-Request-ID) is what a client does on a closed keep-alive connection;
    # a swap that broke connections would show as many, not as a rare one.
    assert len(load.resent) <= max(2, len(outcomes) // 100), load.resent
    metadata = second.asset_materializations_for_node("deployed_bento")[0].metadata
    assert metadata["how"].value == "hot swap"
    assert metadata["previous_model_tag"].value == tags[FIRST]
    assert metadata["bento_tag"].value == built == metadata["previous_bento_tag"].value
    assert _served_tag(platform) == tags[SECOND]
    assert assert_runs_bento(platform["port"], built) == pid

    # 5. Nothing newer: repeated ticks request nothing.
    for _ in range(3):
        idle = _tick(platform, cursor=newer.cursor)
        assert idle.run_requests == []
        assert "already served" in idle.skip_reason.skip_message

    # 6. A model whose blocking check failed is never deployed; the old one keeps serving.
    refused = _deploy(platform, REJECTED)
    assert not refused.success
    error = str(refused.failure_data_for_node("deployed_bento").error)
    assert tags[REJECTED] in error and "'failed'" in error
    assert _served_tag(platform) == tags[SECOND]
    materialized = platform["instance"].get_materialized_partitions(AssetKey("deployed_bento"))
    assert REJECTED not in materialized

    # 7. A run the deploy sensor tagged with a model deploys that model, not the partition's
    # latest: after a rollback the champion may be an older version of its partition.
    client = platform["resources"]["mlflow_tracking"].client()
    (first_version,) = [
        version.version
        for version in client.search_model_versions(f"name='{MODEL_NAME}'")
        if version.tags.get("bento_tag") == tags[FIRST]
    ]
    named = _deploy(
        platform,
        SECOND,
        tags={MODEL_TAG_RUN_TAG: tags[FIRST], MLFLOW_VERSION_RUN_TAG: str(first_version)},
    )
    assert named.success
    assert _served_tag(platform) == tags[FIRST]


def changed_service_code(target: Path) -> Path:
    """A copy of the service code with a change that /metadata shows (a field the checkout's
    code does not have), as a build context."""
    copy = copy_service_code(target)
    schemas = copy / "api" / "schemas.py"
    field = "    bento_tag: str | None = None\n"
    assert field in schemas.read_text()
    schemas.write_text(schemas.read_text().replace(field, f'{field}    code_change: str = "on"\n'))
    return copy


def _local_service(port: int) -> PredictionServiceResource:
    return PredictionServiceResource(
        api_url=f"http://127.0.0.1:{port}", admin_token=TOKEN, timeout_seconds=2.0
    )


def test_new_service_code_restarts_the_background_service_on_the_new_bento(platform, tmp_path):
    old_bento = build_bento(changed_service_code(tmp_path / "code"))
    assert old_bento != bento_tag()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        old_pid = start_service(url, old_bento, platform["tags"][FIRST])
        assert ServiceClient(url).reported_model().bento_tag == old_bento
        assert requests.get(f"{url}{routes.METADATA}", timeout=5).json()["code_change"] == "on"
        assert_runs_bento(port, old_bento)

        result = _deploy(platform, SECOND, _local_service(port))
        assert result.success
        metadata = result.asset_materializations_for_node("deployed_bento")[0].metadata
        assert metadata["how"].value == "restart"
        assert metadata["previous_bento_tag"].value == old_bento
        assert metadata["bento_tag"].value == bento_tag()
        assert "action_needed" not in metadata
        served = ServiceClient(url).reported_model()
        assert (served.tag, served.bento_tag) == (platform["tags"][SECOND], bento_tag())
        assert assert_runs_bento(port, bento_tag()) != old_pid
        assert "code_change" not in requests.get(f"{url}{routes.METADATA}", timeout=5).json()
        assert not Path(f"/proc/{old_pid}").exists()
    finally:
        stop_service(port)


def test_a_service_started_elsewhere_gets_the_model_and_the_deploy_says_to_restart_it(
    platform, tmp_path
):
    """The stack's case: the api container runs an older Bento; the deploy hot-swaps the
    model into it and says the container must be recreated."""
    old_bento = build_bento(changed_service_code(tmp_path / "code"))
    port = free_port()
    process = ServiceProcess(
        env={"CREDIT_API_MODEL_TAG": platform["tags"][FIRST], ADMIN_TOKEN_ENV: TOKEN},
        output=tmp_path / "service.log",
        port=port,
        command=serve_bento_command(old_bento, "127.0.0.1", port),
    )
    try:
        process.wait_ready()
        result = _deploy(platform, SECOND, _local_service(port))
        assert result.success
        metadata = result.asset_materializations_for_node("deployed_bento")[0].metadata
        assert metadata["how"].value == "hot swap (old Bento)"
        assert metadata["bento_tag"].value == old_bento
        assert metadata["built_bento_tag"].value == bento_tag()
        assert "--force-recreate api" in metadata["action_needed"].value
        assert process.process.poll() is None
        served = ServiceClient(process.url).reported_model()
        assert (served.tag, served.bento_tag) == (platform["tags"][SECOND], old_bento)
        assert (
            requests.get(f"{process.url}{routes.METADATA}", timeout=5).json()["code_change"] == "on"
        )
    finally:
        process.stop()


def test_rollout_hot_swaps_only_into_the_built_bento():
    def running(bento: str | None) -> ReportedModel:
        return ReportedModel("credit_score_classifier:a", datetime.now(UTC), None, {}, bento)

    new, old = "credit_score_service:new", "credit_score_service:old"
    assert rollout(None, new, can_start=True, can_restart=False) == START
    with pytest.raises(ServiceError, match="autostart is off"):
        rollout(None, new, can_start=False, can_restart=False)
    assert rollout(running(new), new, can_start=True, can_restart=True) == HOT_SWAP
    assert rollout(running(new), new, can_start=False, can_restart=False) == HOT_SWAP
    for stale in (old, None):  # an older Bento, or a service run from source
        assert rollout(running(stale), new, can_start=True, can_restart=True) == RESTART
        assert rollout(running(stale), new, can_start=True, can_restart=False) == OUTDATED_BENTO


def test_deploy_sensor_skips_without_a_champion(tmp_path, sqlite_url):
    resources = training_resources(tmp_path, sqlite_url)
    resources["prediction_service"] = PredictionServiceResource(
        api_url=f"http://127.0.0.1:{free_port()}"
    )
    with instance_for_test() as instance:
        result = deploy_sensor(build_sensor_context(instance=instance, resources=resources))
    assert "no model has passed" in result.skip_message


def _new_data_tick(url: str, cursor=None, trained=()):
    with instance_for_test() as instance:
        for partition in trained:
            instance.report_runless_asset_event(
                AssetMaterialization(asset_key="credit_score_model", partition=partition)
            )
        context = build_sensor_context(
            instance=instance,
            cursor=cursor,
            resources={"feature_store": FeatureStoreResource(url=url)},
        )
        return new_data_sensor(context)


def test_new_data_sensor_requests_each_new_day_once(sqlite_url):
    engine = init_schema(sqlite_url)
    assert "no labels yet" in _new_data_tick(sqlite_url).skip_message

    seed_synthetic(engine, customers=5, days=10, start=date(2025, 3, 1), seed=1, progress=False)
    first = _new_data_tick(sqlite_url)
    assert [(r.partition_key, r.run_key) for r in first.run_requests] == [
        ("2025-03-10", "ct:2025-03-10")
    ]
    assert first.cursor == "2025-03-10"
    # Same data, next tick: nothing to do.
    assert "no labels after 2025-03-10" in _new_data_tick(sqlite_url, first.cursor).skip_message

    # Two more days arrive: exactly those two partitions.
    seed_synthetic(engine, customers=5, days=12, start=date(2025, 3, 1), seed=1, progress=False)
    engine.dispose()
    later = _new_data_tick(sqlite_url, first.cursor)
    assert [r.partition_key for r in later.run_requests] == ["2025-03-11", "2025-03-12"]
    assert later.cursor == "2025-03-12"


def test_new_data_sensor_first_tick_skips_an_already_trained_day(sqlite_url):
    engine = init_schema(sqlite_url)
    seed_synthetic(engine, customers=3, days=4, start=date(2025, 3, 1), seed=1, progress=False)
    engine.dispose()
    result = _new_data_tick(sqlite_url, trained=["2025-03-04"])
    assert result.run_requests == []
    assert "already trained" in result.skip_reason.skip_message
    assert result.cursor == "2025-03-04"


def test_new_data_sensor_caps_a_bulk_load(sqlite_url):
    engine = init_schema(sqlite_url)
    seed_synthetic(engine, customers=3, days=40, start=date(2025, 3, 1), seed=1, progress=False)
    engine.dispose()
    result = _new_data_tick(sqlite_url, cursor="2025-02-28")
    assert [r.partition_key for r in result.run_requests] == [
        f"2025-04-{day:02d}" for day in range(3, 10)
    ]


def test_new_data_sensor_skips_when_the_store_is_down():
    result = _new_data_tick(f"mysql+pymysql://root:pw@127.0.0.1:{free_port()}/mlops")
    assert "feature store unavailable" in result.skip_message


# --- Dagster's retries of a failed deploy (deploy_model's RetryPolicy) ----------------------

# Failures the flaky service resource still has to give before it behaves.
_FLAKY = {"left": 0}


class FlakyPredictionService(PredictionServiceResource):
    """The platform's service resource whose client fails while `_FLAKY["left"]` > 0, as a
    service that is restarting or unreachable for a moment does."""

    def client(self) -> ServiceClient:
        if _FLAKY["left"] > 0:
            _FLAKY["left"] -= 1
            raise ServiceError(f"{self.api_url} is restarting (a failure this test makes)")
        return super().client()


def _run_deploy_job(platform, partition: str, failures: int):
    """`deploy_model` itself (the job the sensors launch, with its retry policy), in
    process, with a service resource that fails `failures` times first."""
    real = platform["resources"]["prediction_service"]
    flaky = FlakyPredictionService(
        api_url=real.api_url, admin_token=real.admin_token, timeout_seconds=real.timeout_seconds
    )
    job = Definitions(
        assets=[*CONTINUOUS_TRAINING_ASSETS, deployed_bento],
        jobs=[deploy_job],
        resources={**platform["resources"], "prediction_service": flaky},
    ).resolve_job_def(deploy_job.name)
    _FLAKY["left"] = failures
    started = time.monotonic()
    result = job.execute_in_process(
        partition_key=partition, instance=platform["instance"], raise_on_error=False
    )
    retries = [
        event for event in result.all_events if event.event_type_value == "STEP_UP_FOR_RETRY"
    ]
    return result, len(retries), time.monotonic() - started


def test_dagster_retries_a_failed_deploy_inside_its_run(platform):
    assert deploy_job.op_retry_policy == DEPLOY_RETRY_POLICY
    assert DEPLOY_RETRY_POLICY.max_retries == DEPLOY_ATTEMPTS - 1

    # One transient failure: the second attempt, 5 s later, deploys; one run, one success.
    result, retries, seconds = _run_deploy_job(platform, SECOND, failures=1)
    assert result.success and retries == 1
    assert seconds >= DEPLOY_RETRY_POLICY.delay
    assert _served_tag(platform) == platform["tags"][SECOND]

    # Failing every attempt: three attempts (5 s, then 10 s apart), then the run fails.
    result, retries, seconds = _run_deploy_job(platform, FIRST, failures=99)
    assert not result.success and retries == DEPLOY_ATTEMPTS - 1
    assert seconds >= 15
    assert "is restarting" in str(result.failure_data_for_node("deployed_bento").error)
    assert _served_tag(platform) == platform["tags"][SECOND]  # unchanged

    # A refusal no retry can change (the model's check failed) fails at the first attempt.
    result, retries, seconds = _run_deploy_job(platform, REJECTED, failures=0)
    assert not result.success and retries == 0
    assert "'failed'" in str(result.failure_data_for_node("deployed_bento").error)
    assert seconds < DEPLOY_RETRY_POLICY.delay
