"""Retention in a real BentoML store: a deploy deletes exactly the models and Bentos the
rule does not keep, the service it deployed goes on answering, a model that cannot be
deleted is reported without failing the deploy, and the `prune_model_store` job does the
same on demand (dry run, service down)."""

import logging
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import bentoml
import pytest
import requests
from bentoml.exceptions import NotFound
from dagster import AssetKey, instance_for_test, materialize

from bench.sample_requests import load_sample, valid_request_payloads
from credit_platform.core import routes
from credit_platform.core.bento import bento_tag, build_bento
from credit_platform.core.model_store import load_model_bundle
from credit_platform.core.retention import (
    CHAMPION,
    CURRENT_CODE,
    PREVIOUS_CHAMPION,
    ROLLBACK_TARGET,
    RUNNING_BENTO,
    newest_reason,
    served_reason,
    stored_bentos,
    stored_models,
)
from credit_platform.core.service_client import ReportedModel
from credit_platform.core.settings import MODEL_NAME
from credit_platform.defs.assets.deploy import deployed_bento
from credit_platform.defs.jobs import CONTINUOUS_TRAINING_ASSETS, prune_model_store_job
from credit_platform.defs.resources.mlflow_tracking import (
    PRUNED_TAG,
    MlflowTrackingResource,
    eligible,
)
from credit_platform.defs.resources.model_retention import ModelRetentionResource
from credit_platform.defs.resources.prediction_service import PredictionServiceResource
from credit_platform.defs.retention import previous_served, retain_after_deploy
from credit_platform_tests.core.test_bento import copy_service_code
from credit_platform_tests.core.test_retention import undeletable
from credit_platform_tests.model_fixtures import save_tiny_model
from credit_platform_tests.training_fixtures import deploy_platform, tiny_grid, train_and_check

pytestmark = pytest.mark.slow

TOKEN = "retention-test-token"
KEEP_LAST = 2
ORPHAN_DAY, PREVIOUS_DAY, CHAMPION_DAY = "2025-02-02", "2025-02-03", "2025-02-04"


def _trained(resources, instance, partition: str) -> str:
    result = train_and_check(resources, instance, partition, tiny_grid(), 0.3)
    assert result.success
    return result.output_for_node("credit_score_model")["bento_tag"]


def _deploy(resources, instance, partition: str, keep_last: str):
    return materialize(
        [*CONTINUOUS_TRAINING_ASSETS, deployed_bento],
        selection=[deployed_bento],
        partition_key=partition,
        resources={**resources, "model_retention": ModelRetentionResource(keep_last=keep_last)},
        instance=instance,
    )


def _built_variant(root: Path, name: str) -> str:
    """A Bento of the service code with one comment changed: another version."""
    copy = copy_service_code(root / name)
    schemas = copy / "api" / "schemas.py"
    schemas.write_text(f"{schemas.read_text()}\n# variant {name}\n")
    return build_bento(copy)


@pytest.fixture(scope="module")
def scene(tmp_path_factory, kaggle_sample):
    """Models saved in this order (oldest first): `orphan` (trained, passed, then outranked),
    `old1`, `previous` (trained and deployed first), `shadow` (attached to the service),
    `old3` (made undeletable), `champion` (trained, deployed second), `new1`, `new2`; three
    Bentos built after the one the service runs. Then the champion's deploy with keep
    last 2."""
    tmp = tmp_path_factory.mktemp("retention")
    sample = load_sample(kaggle_sample, rows=1500)
    tags: dict[str, str] = {}
    with deploy_platform(tmp, TOKEN) as (resources, port), instance_for_test() as instance:
        tags["orphan"] = _trained(resources, instance, ORPHAN_DAY)
        tags["old1"] = save_tiny_model(sample, partition="2025-01-20", iterations=5, seed=1)
        tags["previous"] = _trained(resources, instance, PREVIOUS_DAY)
        first = _deploy(resources, instance, PREVIOUS_DAY, keep_last="0")
        tags["shadow"] = save_tiny_model(sample, partition="2025-01-21", iterations=5, seed=2)
        tags["old3"] = save_tiny_model(sample, partition="2025-01-22", iterations=5, seed=3)
        resources["prediction_service"].client().set_challenger(TOKEN, tags["shadow"], "shadow")
        tags["champion"] = _trained(resources, instance, CHAMPION_DAY)
        tags["new1"] = save_tiny_model(sample, partition="2025-01-23", iterations=5, seed=4)
        tags["new2"] = save_tiny_model(sample, partition="2025-01-24", iterations=5, seed=5)
        running = bento_tag()
        bentos = {name: _built_variant(tmp, name) for name in ("v1", "v2", "v3")}
        models_before = {item.tag for item in stored_models()}
        bentos_before = {item.tag for item in stored_bentos(running.split(":")[0])}
        with undeletable(Path(bentoml.models.get(tags["old3"]).path)) as blocked:
            second = _deploy(resources, instance, CHAMPION_DAY, keep_last=str(KEEP_LAST))
        yield {
            "tags": tags,
            "first": first.asset_materializations_for_node("deployed_bento")[0].metadata,
            "second": second.asset_materializations_for_node("deployed_bento")[0].metadata,
            "running": running,
            "bentos": bentos,
            "models_before": models_before,
            "bentos_before": bentos_before,
            "blocked": blocked,
            "resources": resources,
            "instance": instance,
            "port": port,
            "payloads": valid_request_payloads(sample, 3),
        }


def _exists(tag: str) -> bool:
    try:
        bentoml.models.get(tag)
    except NotFound:
        return False
    return True


def test_the_deploy_deletes_exactly_what_the_rule_does_not_keep(scene):
    tags, metadata = scene["tags"], scene["second"]
    assert scene["first"]["retention_deleted"].value == {"models": [], "bentos": []}

    kept = metadata["retention_kept"].value["models"]
    assert kept[tags["champion"]] == [CHAMPION, served_reason("champion")]
    assert kept[tags["previous"]] == [PREVIOUS_CHAMPION, ROLLBACK_TARGET]
    assert kept[tags["shadow"]] == [served_reason("shadow")]
    assert kept[tags["new2"]] == kept[tags["new1"]] == [newest_reason(KEEP_LAST)]
    assert set(kept) == {tags[name] for name in ("champion", "previous", "shadow", "new1", "new2")}

    # Everything else went, this module's `orphan` and `old1` and any older test's models,
    # except `old3`, which could not be deleted and is reported.
    deleted = metadata["retention_deleted"].value["models"]
    mine = set(tags.values())
    assert set(deleted) & mine == {tags["orphan"], tags["old1"]} | (
        set() if scene["blocked"] else {tags["old3"]}
    )
    assert set(deleted) == scene["models_before"] - set(kept) - (
        {tags["old3"]} if scene["blocked"] else set()
    )
    remaining = {item.tag for item in stored_models()}
    assert remaining == set(kept) | ({tags["old3"]} if scene["blocked"] else set())
    assert not _exists(tags["orphan"]) and not _exists(tags["old1"])


def test_a_model_that_cannot_be_deleted_is_reported_and_the_deploy_succeeds(scene):
    if not scene["blocked"]:
        pytest.skip("this file system cannot make a file undeletable for root")
    failed = scene["second"]["retention_failed"].value
    assert list(failed) == [scene["tags"]["old3"]]
    assert failed[scene["tags"]["old3"]].startswith("PermissionError")
    assert load_model_bundle(scene["tags"]["old3"]).partition == "2025-01-22"  # untouched
    assert scene["second"]["model_tag"].value == scene["tags"]["champion"]  # it succeeded


def test_the_deployed_model_still_loads_and_the_service_answers(scene):
    tags, port = scene["tags"], scene["port"]
    assert load_model_bundle(tags["champion"]).partition == CHAMPION_DAY
    for payload in scene["payloads"]:
        answer = requests.post(
            f"http://127.0.0.1:{port}{routes.PREDICT}", json={"data": payload}, timeout=10
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["predict"] in {"Good", "Standard", "Poor"}
    served = requests.get(f"http://127.0.0.1:{port}{routes.METADATA}", timeout=10).json()
    assert served["model_version"] == tags["champion"]
    assert served["challenger"]["model_version"] == tags["shadow"]


def test_the_deleted_models_registered_versions_are_kept_but_never_elected(scene):
    tags, tracking = scene["tags"], scene["resources"]["mlflow_tracking"]
    (orphan,) = tracking.versions_of_model(tags["orphan"])
    assert orphan.tags[PRUNED_TAG] and not eligible(orphan)
    for name in ("previous", "champion"):
        (version,) = tracking.versions_of_model(tags[name])
        assert PRUNED_TAG not in version.tags and eligible(version)
    assert tracking.champion().tags["bento_tag"] == tags["champion"]
    # Rolled back twice, the champion falls back to `previous`, never to the deleted orphan.
    retired, elected = tracking.roll_back()
    assert elected.tags["bento_tag"] == tags["previous"]
    with pytest.raises(LookupError, match="only passing model"):
        tracking.roll_back()
    tracking.client().delete_model_version_tag(MODEL_NAME, str(retired.version), "rolled_back")
    assert tracking.elect_champion().tags["bento_tag"] == tags["champion"]


def test_bentos_are_pruned_while_the_running_one_stays(scene):
    running, bentos = scene["running"], scene["bentos"]
    metadata = scene["second"]
    kept = metadata["retention_kept"].value["bentos"]
    assert kept == {
        bentos["v3"]: [newest_reason(KEEP_LAST)],
        bentos["v2"]: [newest_reason(KEEP_LAST)],
        running: [RUNNING_BENTO, CURRENT_CODE],  # no deploy has replaced a Bento yet
    }
    deleted = metadata["retention_deleted"].value["bentos"]
    assert bentos["v1"] in deleted
    assert set(deleted) == scene["bentos_before"] - set(kept)
    assert {item.tag for item in stored_bentos(running.split(":")[0])} == set(kept)
    assert bentoml.bentos.get(running).path  # the service's own Bento is still there


def _prune(scene, keep_last: str, *, dry_run: bool, service=None):
    resources = {
        **scene["resources"],
        "model_retention": ModelRetentionResource(keep_last=keep_last),
    }
    if service is not None:
        resources["prediction_service"] = service
    return prune_model_store_job.execute_in_process(
        run_config={"ops": {"prune_bentoml_store": {"config": {"dry_run": dry_run}}}},
        resources=resources,
        instance=scene["instance"],
        raise_on_error=False,
    )


def test_the_prune_job_reports_then_deletes_and_refuses_without_the_service(
    scene, unanswered_api_url
):
    tags = scene["tags"]
    down = _prune(
        scene,
        "1",
        dry_run=False,
        service=PredictionServiceResource(api_url=unanswered_api_url, timeout_seconds=1.0),
    )
    assert not down.success
    assert "does not answer /metadata" in str(down.failure_data_for_node("prune_bentoml_store"))
    assert _exists(tags["new1"])

    dry = _prune(scene, "1", dry_run=True)
    assert dry.success
    report = dry.output_for_node("prune_bentoml_store")
    assert tags["new1"] in report["would_delete"] and report["deleted_models"] == []
    assert _exists(tags["new1"])

    real = _prune(scene, "1", dry_run=False)
    assert real.success
    report = real.output_for_node("prune_bentoml_store")
    left_over = {tags["old3"]} if scene["blocked"] else set()  # deletable now
    assert set(report["deleted_models"]) == {tags["new1"]} | left_over
    assert report["kept_models"][tags["previous"]] == [PREVIOUS_CHAMPION, ROLLBACK_TARGET]
    assert report["deleted_bentos"] == [scene["bentos"]["v2"]]
    assert {item.tag for item in stored_models()} == {
        tags[name] for name in ("champion", "previous", "shadow", "new2")
    }
    answer = requests.post(
        f"http://127.0.0.1:{scene['port']}{routes.PREDICT}",
        json={"data": scene["payloads"][0]},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("broken", ["keep_last", "mlflow"])
def test_retention_that_cannot_run_is_reported_and_deletes_nothing(tmp_path, broken):
    """After a deploy, retention never raises: a malformed count or an unusable registry is
    reported as `retention_error` and the store is left as it was."""
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")  # a registry beneath a file cannot be opened
    registry = not_a_folder if broken == "mlflow" else tmp_path
    tracking = MlflowTrackingResource(tracking_uri=f"sqlite:///{registry / 'mlflow.db'}")
    # keep last 0 where the count is fine: a test must never prune the session's store
    retention = ModelRetentionResource(keep_last="many" if broken == "keep_last" else "0")
    served = ReportedModel(
        tag=f"{MODEL_NAME}:served", creation_time=datetime.now(UTC), partition=None, metrics={}
    )
    before = {item.tag for item in stored_models()}
    with instance_for_test() as instance:
        deploy = SimpleNamespace(  # what retention reads of the deploy asset's context
            log=logging.getLogger(__name__), instance=instance, asset_key=AssetKey("deployed_bento")
        )
        metadata = retain_after_deploy(deploy, tracking, retention, served, None)
    assert set(metadata) == {"retention_error"}
    expected = {"keep_last": "CREDIT_RETENTION_KEEP_LAST must be", "mlflow": "FileExistsError"}
    assert expected[broken] in metadata["retention_error"]
    assert {item.tag for item in stored_models()} == before


def test_the_previous_model_is_the_newest_replaced_one_that_is_not_serving():
    def reported(tag: str, bento: str | None) -> ReportedModel:
        return ReportedModel(f"{MODEL_NAME}:{tag}", datetime.now(UTC), None, {}, bento_tag=bento)

    served = reported("new", "svc:b")
    history = [(f"{MODEL_NAME}:new", "svc:b"), (None, None), (f"{MODEL_NAME}:older", "svc:a")]
    # a hot swap replaced `old` in the same Bento: the Bento before comes from the history
    assert previous_served(served, reported("old", "svc:b"), history) == (
        f"{MODEL_NAME}:old",
        "svc:a",
    )
    # a start after an outage, the same model again: both from the history
    assert previous_served(served, None, history) == (f"{MODEL_NAME}:older", "svc:a")
    assert previous_served(served, served, history) == (f"{MODEL_NAME}:older", "svc:a")
    assert previous_served(served, None, []) == (None, None)
