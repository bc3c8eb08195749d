"""`credit_score_model_fairness` on the continuous-training assets: a model trained on a
biased label rule for one age band draws a warning naming the band, with the table in the
check's metadata and in the training's MLflow run; the same data without the rule passes."""

from __future__ import annotations

from datetime import date

import mlflow
from dagster import AssetCheckSeverity, DagsterInstance, materialize

from credit_platform.core.db import init_schema
from credit_platform.defs.assets.model import credit_score_model
from credit_platform.defs.assets.scalers import scalers
from credit_platform.defs.assets.split import train_valid_split
from credit_platform.defs.checks import FAIRNESS_ARTIFACT, FAIRNESS_TAG, credit_score_model_fairness
from credit_platform.defs.resources.fairness_policy import FairnessPolicyResource
from credit_platform_tests.training_fixtures import (
    age_banded_partition,
    insert_partition,
    tiny_grid,
    training_resources,
)

PARTITION = "2025-01-31"


def _train_and_judge(tmp_path, biased: bool):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = init_schema(url)
    frame = age_banded_partition(
        date.fromisoformat(PARTITION), 2400, 21, biased_band=(18, 25) if biased else None
    )
    insert_partition(engine, frame)
    engine.dispose()
    resources = training_resources(tmp_path, url)
    # the defaults, as the code location reads them from CREDIT_FAIRNESS_*
    resources["fairness_policy"] = FairnessPolicyResource()
    result = materialize(
        [train_valid_split, scalers, credit_score_model, credit_score_model_fairness],
        partition_key=PARTITION,
        resources=resources,
        instance=DagsterInstance.ephemeral(),
        run_config={"ops": {"credit_score_model": {"config": tiny_grid(iterations=120)}}},
    )
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation, result.output_for_node("credit_score_model"), resources


def test_the_fairness_check_warns_on_a_biased_label_rule_for_one_age_band(tmp_path):
    evaluation, summary, resources = _train_and_judge(tmp_path, biased=True)

    assert not evaluation.passed
    assert evaluation.severity == AssetCheckSeverity.WARN
    assert evaluation.description.startswith("age under 25 (")
    assert "four-fifths rule" in evaluation.description
    metadata = evaluation.metadata
    assert metadata["flagged_segments"].value == 1
    assert metadata["flagged"].value == [
        {"feature": "age", "segment": "under 25", "flags": ["four_fifths"]}
    ]
    assert metadata["min_good_rate_ratio"].value < 0.2
    assert "| age | under 25 |" in metadata["segments"].value
    assert "| occupation |" in metadata["segments"].value
    # the table and the verdict are in the training's MLflow parent run and on the version
    tracking = resources["mlflow_tracking"]
    client = tracking.client()
    parent = client.get_run(summary["mlflow_parent_run_id"])
    document = mlflow.artifacts.load_dict(f"{parent.info.artifact_uri}/{FAIRNESS_ARTIFACT}.json")
    assert document["verdict"] == "warned" and parent.data.tags[FAIRNESS_TAG] == "warned"
    (under,) = [
        row
        for row in document["segments"]
        if (row["feature"], row["segment"]) == ("age", "under 25")
    ]
    assert under["flags"] == ["four_fifths"] and under["good_rate"] < 0.05
    version = client.get_model_version(
        summary["mlflow_model_name"], summary["mlflow_model_version"]
    )
    assert version.tags[FAIRNESS_TAG] == "warned"
    assert metadata["mlflow_artifact"].value == tracking.artifact_url(
        parent.info.run_id, f"{FAIRNESS_ARTIFACT}.md"
    )


def test_the_fairness_check_is_quiet_without_the_biased_rule(tmp_path):
    evaluation, summary, resources = _train_and_judge(tmp_path, biased=False)

    assert evaluation.passed, evaluation.description
    assert evaluation.description.startswith("no segment breaks")
    assert evaluation.metadata["flagged_segments"].value == 0
    client = resources["mlflow_tracking"].client()
    parent = client.get_run(summary["mlflow_parent_run_id"])
    assert parent.data.tags[FAIRNESS_TAG] == "passed"
    document = mlflow.artifacts.load_dict(f"{parent.info.artifact_uri}/{FAIRNESS_ARTIFACT}.json")
    ages = [row for row in document["segments"] if row["feature"] == "age"]
    assert [row["segment"] for row in ages] == ["under 25", "25-40", "40-60", "60 and over"]
    assert all(row["judged"] for row in ages)
    assert min(row["good_rate_ratio"] for row in ages) > 0.8
