"""The whole continuous-training graph, as Dagster runs it: one partition, then three."""

from datetime import date

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    Definitions,
    UrlMetadataValue,
    instance_for_test,
    materialize,
)
from sqlalchemy import select

from credit_platform.core import settings
from credit_platform.core.db import init_schema
from credit_platform.core.model_store import load_model_bundle
from credit_platform.core.schema import credit_score_features_target
from credit_platform.defs.checks import credit_score_model_quality
from credit_platform.defs.definitions import defs
from credit_platform.defs.jobs import CONTINUOUS_TRAINING_ASSETS, continuous_training_job
from credit_platform.ingest.synthetic import seed_synthetic
from credit_platform_tests.training_fixtures import tiny_grid, training_resources

START = date(2025, 1, 1)


def test_definitions_load_with_job_schedule_and_check():
    Definitions.validate_loadable(defs)
    job = defs.resolve_job_def(continuous_training_job.name)
    assert job.partitions_def is not None
    assert {key.to_user_string() for key in job.asset_layer.executable_asset_keys} >= {
        "credit_score_features_target",
        "train_valid_split",
        "scalers",
        "credit_score_model",
    }
    schedule = defs.resolve_schedule_def("daily_continuous_training")
    assert schedule.job_name == continuous_training_job.name
    checks = defs.resolve_asset_graph().asset_check_keys
    assert any(key.asset_key == AssetKey("credit_score_model") for key in checks)


@pytest.fixture
def seeded_store(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = init_schema(url)
    seed_synthetic(engine, customers=60, days=40, start=START, seed=3, progress=False)
    engine.dispose()
    return url


def _run(partition: str, resources: dict, instance: DagsterInstance):
    return materialize(
        [*CONTINUOUS_TRAINING_ASSETS, credit_score_model_quality],
        partition_key=partition,
        resources=resources,
        instance=instance,
        run_config={"ops": {"credit_score_model": {"config": tiny_grid()}}},
    )


def test_whole_graph_for_one_partition(tmp_path, seeded_store):
    resources = training_resources(tmp_path, seeded_store)
    with instance_for_test() as instance:
        result = _run("2025-02-05", resources, instance)
        assert result.success
        table = result.asset_materializations_for_node("credit_score_features_target")[0]
        # 60 customers x 36 days of labels in [2025-01-05, 2025-02-05] minus dropped rows.
        assert 0.9 * 60 * 32 <= table.metadata["dagster/row_count"].value <= 60 * 32
        model = result.output_for_node("credit_score_model")
        # The best trial's run, as a link into the MLflow UI (not a tracking-store path).
        link = result.asset_materializations_for_node("credit_score_model")[0].metadata
        experiment = resources["mlflow_tracking"].experiment_id()
        assert isinstance(link["mlflow_run"], UrlMetadataValue)
        assert link["mlflow_run"].url == (
            f"{settings.mlflow_ui_url()}/#/experiments/{experiment}/runs/{model['mlflow_run_id']}"
        )
        checks = result.get_asset_check_evaluations()
        assert [evaluation.passed for evaluation in checks] == [True]

    bundle = load_model_bundle(model["bento_tag"])
    assert bundle.partition == "2025-02-05"
    assert bundle.metadata["metrics"]["test_accuracy"] == pytest.approx(
        model["metrics"]["test_accuracy"]
    )
    # The labels depend on the features: on its untouched test rows the model beats always
    # answering the majority class.
    assert model["metrics"]["test_accuracy"] > 0.6


def test_whole_graph_for_three_partitions(tmp_path, seeded_store):
    resources = training_resources(tmp_path, seeded_store)
    partitions = ["2025-02-03", "2025-02-04", "2025-02-05"]
    with instance_for_test() as instance:
        tags = []
        for partition in partitions:
            result = _run(partition, resources, instance)
            assert result.success
            tags.append(result.output_for_node("credit_score_model")["bento_tag"])
        materialized = instance.get_materialized_partitions(AssetKey("credit_score_model"))
        assert materialized == set(partitions)

    assert len(set(tags)) == 3
    assert [load_model_bundle(tag).partition for tag in tags] == partitions
    # Each day passed against the previous day's model; the newest day's model is champion.
    assert resources["mlflow_tracking"].champion().tags["bento_tag"] == tags[-1]
    engine = init_schema(seeded_store)
    with engine.connect() as connection:
        days = connection.execute(select(credit_score_features_target.c.base_dt).distinct())
        assert {day.isoformat() for (day,) in days} == set(partitions)
    engine.dispose()
