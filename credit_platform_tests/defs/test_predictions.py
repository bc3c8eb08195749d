"""The credit_score_predictions asset: the model that served on the day (from the
deployed_bento history), catalog metadata, and failures that name the day or the tag."""

from datetime import UTC, date, datetime

import pytest
from dagster import AssetMaterialization, MetadataValue, instance_for_test, materialize
from sqlalchemy import select

from bench.sample_requests import load_sample
from credit_platform.core.batch_scoring import ModelChoice, ServedModelRecord
from credit_platform.core.db import init_schema
from credit_platform.core.reasons import REASON_CODES
from credit_platform.core.schema import credit_score_predictions as table
from credit_platform.defs.assets.deploy import DEPLOYED_BENTO_ASSET
from credit_platform.defs.assets.predictions import (
    choose_model,
    credit_score_predictions,
    deployments_until,
)
from credit_platform.defs.resources.feature_store import FeatureStoreResource
from credit_platform.defs.resources.mlflow_tracking import MlflowTrackingResource
from credit_platform.ingest.synthetic import seed_synthetic
from credit_platform_tests.model_fixtures import save_tiny_model

DAY_ONE, DAY_TWO, DAY_THREE = "2025-03-01", "2025-03-02", "2025-03-03"


@pytest.fixture(scope="module")
def tags(kaggle_sample):
    sample = load_sample(kaggle_sample, rows=600)
    return [
        save_tiny_model(sample, partition=f"2025-02-2{seed}", iterations=10, seed=seed)
        for seed in (1, 2)
    ]


@pytest.fixture
def resources(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = init_schema(url)
    seed_synthetic(engine, customers=30, days=2, start=date(2025, 3, 1), seed=4, progress=False)
    engine.dispose()
    return {
        "feature_store": FeatureStoreResource(url=url),
        "mlflow_tracking": MlflowTrackingResource(
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
            experiment_name="predictions_tests",
            artifact_location=(tmp_path / "mlartifacts").as_uri(),
        ),
    }


def _deployed(instance, tag: str, served_at: datetime, partition: str = "2025-02-28") -> None:
    instance.report_runless_asset_event(
        AssetMaterialization(
            DEPLOYED_BENTO_ASSET,
            partition=partition,
            metadata={"model_tag": tag, "served_at": MetadataValue.timestamp(served_at)},
        )
    )


def _score(resources, instance, day: str, config: dict | None = None):
    return materialize(
        [credit_score_predictions],
        partition_key=day,
        resources=resources,
        instance=instance,
        raise_on_error=False,
        run_config={"ops": {"credit_score_predictions": {"config": config or {}}}},
    )


def _versions(resources, day: str) -> set[str]:
    engine = init_schema(resources["feature_store"].url)
    try:
        with engine.connect() as connection:
            return set(
                connection.scalars(
                    select(table.c.model_version).where(table.c.score_dt == date.fromisoformat(day))
                )
            )
    finally:
        engine.dispose()


def test_each_day_is_scored_by_the_model_that_served_it(resources, tags):
    first, second = tags
    with instance_for_test() as instance:
        _deployed(instance, first, datetime(2025, 2, 28, 10, tzinfo=UTC))
        _deployed(instance, second, datetime(2025, 3, 2, 15, tzinfo=UTC))
        _deployed(instance, "credit_score_classifier:later", datetime(2025, 3, 3, tzinfo=UTC))
        assert [record.model_tag for record in deployments_until(instance, date(2025, 3, 1))] == [
            "credit_score_classifier:later",
            second,
            first,
        ]
        results = {day: _score(resources, instance, day) for day in (DAY_ONE, DAY_TWO)}
        assert all(result.success for result in results.values())
        assert _versions(resources, DAY_ONE) == {first}
        assert _versions(resources, DAY_TWO) == {second}  # deployed during that day
        metadata = (
            results[DAY_TWO].asset_materializations_for_node("credit_score_predictions")[0].metadata
        )
        assert metadata["dagster/row_count"].value == 30
        assert metadata["dagster/table_name"].value == "credit_score_predictions"
        columns = [column.name for column in metadata["dagster/column_schema"].schema.columns]
        assert columns[:3] == ["score_dt", "customer_id", "prediction"]
        assert metadata["model_tag"].value == second
        assert metadata["model_source"].value.startswith("deployment: served since 2025-03-02")
        shares = [metadata[f"share_{label}"].value for label in ("good", "standard", "poor")]
        assert sum(shares) == pytest.approx(1.0)
        assert "| prediction | rows | share |" in metadata["prediction_mix"].value


def test_the_run_config_may_name_the_model(resources, tags):
    first, second = tags
    with instance_for_test() as instance:
        _deployed(instance, first, datetime(2025, 2, 28, tzinfo=UTC))
        result = _score(resources, instance, DAY_ONE, {"model_tag": second})
        assert result.success
        assert _versions(resources, DAY_ONE) == {second}


def test_reason_codes_are_opt_in_run_config(resources, tags):
    first, _ = tags

    def reasons_of(day: str) -> list[tuple]:
        engine = init_schema(resources["feature_store"].url)
        try:
            with engine.connect() as connection:
                return list(
                    connection.execute(
                        select(table.c.reason_1, table.c.reason_2, table.c.reason_3).where(
                            table.c.score_dt == date.fromisoformat(day)
                        )
                    )
                )
        finally:
            engine.dispose()

    with instance_for_test() as instance:
        _deployed(instance, first, datetime(2025, 2, 28, tzinfo=UTC))
        plain = _score(resources, instance, DAY_ONE)
        assert plain.success
        metadata = plain.asset_materializations_for_node("credit_score_predictions")[0].metadata
        assert metadata["reason_codes"].value is False
        assert set(reasons_of(DAY_ONE)) == {(None, None, None)}
        explained = _score(resources, instance, DAY_ONE, {"reason_codes": True})
        assert explained.success
        metadata = explained.asset_materializations_for_node("credit_score_predictions")[0].metadata
        assert metadata["reason_codes"].value is True
        codes = reasons_of(DAY_ONE)
        assert len(codes) == 30
        for row in codes:
            assert all(code in REASON_CODES for code in row) and len(set(row)) == 3


def test_the_champion_scores_a_day_before_any_deployment():
    day = date(2025, 3, 1)
    later = [ServedModelRecord("credit_score_classifier:b", datetime(2025, 3, 5, tzinfo=UTC))]
    assert choose_model(day, None, later, "credit_score_classifier:champ") == ModelChoice(
        "credit_score_classifier:champ", "champion"
    )


def test_no_deployment_and_no_champion_fails_naming_the_day(resources):
    with instance_for_test() as instance:
        result = _score(resources, instance, DAY_ONE)
    assert not result.success
    assert "no model to score 2025-03-01" in str(
        result.failure_data_for_node("credit_score_predictions").user_failure_data.description
    )


def test_a_deployed_model_that_no_longer_exists_fails_naming_its_tag(resources):
    gone = "credit_score_classifier:deletedlongago"
    with instance_for_test() as instance:
        _deployed(instance, gone, datetime(2025, 2, 28, tzinfo=UTC))
        result = _score(resources, instance, DAY_ONE)
    assert not result.success
    description = result.failure_data_for_node(
        "credit_score_predictions"
    ).user_failure_data.description
    assert gone in description and "2025-03-01" in description
    assert not _versions(resources, DAY_ONE)


def test_a_day_without_features_fails_naming_the_day(resources, tags):
    with instance_for_test() as instance:
        result = _score(resources, instance, DAY_THREE, {"model_tag": tags[0]})
    assert not result.success
    description = result.failure_data_for_node(
        "credit_score_predictions"
    ).user_failure_data.description
    assert "credit_score_features are dated 2025-03-03" in description
