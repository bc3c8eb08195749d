"""The loaded code location: resources configured from environment variables only, jobs
shared by sensors and schedules as objects, owners and code references on every asset."""

import dataclasses
from pathlib import Path

import pytest
from dagster import (
    AllPartitionMapping,
    AssetKey,
    CodeReferencesMetadataValue,
    Definitions,
    EnvVar,
)

from credit_platform.core import settings
from credit_platform.defs.catalog import ASSET_OWNERS
from credit_platform.defs.challenger_sensor import challenger_sensor
from credit_platform.defs.definitions import build_resources, defs
from credit_platform.defs.jobs import (
    challenger_decision_job,
    continuous_training_job,
    deploy_job,
    model_monitoring_job,
)
from credit_platform.defs.monitoring_sensors import retrain_sensor, rollback_sensor
from credit_platform.defs.partitions import daily_partitions
from credit_platform.defs.schedules import daily_continuous_training, daily_model_monitoring
from credit_platform.defs.sensors import deploy_sensor, new_data_sensor

SETTINGS_RESOURCES = {
    "feature_store": {"url": settings.FEATURE_STORE_URL_ENV},
    "mlflow_tracking": {
        "tracking_uri": settings.MLFLOW_TRACKING_URI_ENV,
        "experiment_name": settings.MLFLOW_EXPERIMENT_ENV,
        "ui_url": settings.MLFLOW_UI_URL_ENV,
    },
    "prediction_service": {
        "api_url": settings.API_URL_ENV,
        "admin_token": settings.ADMIN_TOKEN_ENV,
    },
    "model_retention": {"keep_last": settings.RETENTION_KEEP_LAST_ENV},
}


def test_definitions_validate():
    Definitions.validate_loadable(defs)


def test_every_setting_of_a_resource_is_an_env_var():
    """The UI shows the variable, never a resolved URL or the admin token."""
    for key, expected in SETTINGS_RESOURCES.items():
        resource = defs.resources[key]
        given = {name: getattr(resource, name) for name in resource.model_fields_set}
        assert all(isinstance(value, EnvVar) for value in given.values()), (key, given)
        assert {name: value.env_var_name for name, value in given.items()} == expected
    # Every variable a resource names has its embedded default filled where a process starts.
    named = {name for fields in SETTINGS_RESOURCES.values() for name in fields.values()}
    assert named <= set(settings.embedded_defaults())


def test_fill_defaults_keeps_set_values_and_fills_the_rest(monkeypatch, tmp_path):
    for name in settings.embedded_defaults():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(settings.HOME_ENV, str(tmp_path))
    monkeypatch.setenv(settings.API_URL_ENV, "http://api.example:3000")
    filled = settings.fill_defaults()
    assert filled[settings.API_URL_ENV] == "http://api.example:3000"
    assert filled[settings.FEATURE_STORE_URL_ENV] == f"sqlite:///{tmp_path / 'feature_store.db'}"
    assert filled[settings.MLFLOW_UI_URL_ENV] == "http://127.0.0.1:5000"
    assert filled[settings.TRAINING_GRID_ENV] == settings.DEFAULT_TRAINING_GRID
    token = filled[settings.ADMIN_TOKEN_ENV]
    assert token == (tmp_path / "run" / "admin_token").read_text().strip()
    assert (tmp_path / "run" / "admin_token").stat().st_mode & 0o077 == 0
    assert settings.fill_defaults() == filled  # the same token on every start


def test_fill_defaults_refuses_an_unknown_grid(monkeypatch):
    monkeypatch.setenv(settings.TRAINING_GRID_ENV, "huge")
    with pytest.raises(ValueError, match="CREDIT_TRAINING_GRID must be one of seed, small"):
        settings.fill_defaults()


def test_fill_defaults_refuses_a_malformed_monitoring_threshold(monkeypatch):
    monkeypatch.setenv(settings.MONITORING_PSI_THRESHOLD_ENV, "high")
    with pytest.raises(ValueError, match="CREDIT_MONITORING_PSI_THRESHOLD must be a non-negative"):
        settings.fill_defaults()
    monkeypatch.setenv(settings.MONITORING_PSI_THRESHOLD_ENV, "0.3")
    monkeypatch.setenv(settings.RETRAIN_COOLDOWN_SECONDS_ENV, "0")
    with pytest.raises(ValueError, match="CREDIT_RETRAIN_COOLDOWN_SECONDS must be a positive"):
        settings.fill_defaults()


def test_the_monitoring_policy_reads_its_thresholds_from_the_environment(monkeypatch):
    monkeypatch.setenv(settings.MONITORING_PSI_THRESHOLD_ENV, "0.35")
    monkeypatch.setenv(settings.ROLLBACK_MIN_LABELLED_ENV, "500")
    monkeypatch.setenv(settings.CHALLENGER_MARGIN_ENV, "0.04")
    settings.fill_defaults()
    resource = build_resources()["monitoring_policy"].process_config_and_initialize()
    policy = resource.policy
    assert policy.psi_threshold == 0.35 and policy.rollback_min_labelled == 500
    assert policy.challenger_margin == 0.04
    assert policy.challenger_min_labelled == settings.challenger_min_labelled()
    assert policy.retrain_cooldown_seconds == settings.retrain_cooldown_seconds()
    # One name per threshold: the parsed value is under its field's name.
    fields = set(type(resource).model_fields)
    assert {field.name for field in dataclasses.fields(policy)} == fields
    for name in fields:
        assert float(getattr(policy, name)) == float(getattr(resource, name)), name


def test_fill_defaults_refuses_a_malformed_fairness_setting(monkeypatch):
    for name, value, problem in (
        (settings.FAIRNESS_SEGMENTS_ENV, "age,income", "must list distinct features"),
        (settings.FAIRNESS_AGE_BANDS_ENV, "40,25", "must be increasing numbers"),
        (settings.FAIRNESS_MIN_RATE_RATIO_ENV, "1.5", "must be a number in"),
        (settings.FAIRNESS_MAX_ACCURACY_GAP_ENV, "-0.1", "must be a non-negative"),
        (settings.FAIRNESS_MIN_SEGMENT_ROWS_ENV, "0", "must be a positive integer"),
        (settings.FAIRNESS_MAX_P_VALUE_ENV, "0", "must be a number in"),
    ):
        monkeypatch.setenv(name, value)
        with pytest.raises(ValueError, match=f"{name} {problem}"):
            settings.fill_defaults()
        monkeypatch.delenv(name)


def test_the_fairness_policy_reads_its_segments_and_thresholds_from_the_environment(
    monkeypatch,
):
    monkeypatch.setenv(settings.FAIRNESS_SEGMENTS_ENV, "occupation, credit_mix")
    monkeypatch.setenv(settings.FAIRNESS_AGE_BANDS_ENV, "30,50")
    monkeypatch.setenv(settings.FAIRNESS_MIN_RATE_RATIO_ENV, "0.9")
    monkeypatch.setenv(settings.FAIRNESS_MIN_SEGMENT_ROWS_ENV, "80")
    settings.fill_defaults()
    policy = build_resources()["fairness_policy"].process_config_and_initialize().policy
    assert policy.segments == ("occupation", "credit_mix")
    assert policy.age_bands == (30.0, 50.0)
    assert policy.min_rate_ratio == 0.9 and policy.min_segment_rows == 80
    assert policy.max_accuracy_gap == settings.DEFAULT_FAIRNESS_MAX_ACCURACY_GAP
    assert policy.max_p_value == settings.DEFAULT_FAIRNESS_MAX_P_VALUE


def test_sensors_and_schedule_target_the_job_objects():
    assert new_data_sensor.job is continuous_training_job
    assert deploy_sensor.job is deploy_job
    assert daily_continuous_training.job is continuous_training_job
    assert retrain_sensor.job is continuous_training_job
    assert rollback_sensor.job is deploy_job
    assert daily_model_monitoring.job is model_monitoring_job
    assert challenger_sensor.job is challenger_decision_job
    jobs = (continuous_training_job, deploy_job, model_monitoring_job, challenger_decision_job)
    assert {job.name for job in jobs} <= {job.name for job in defs.resolve_all_job_defs()}
    monitoring = defs.resolve_assets_def("model_monitoring")
    assert monitoring.group_names_by_key[monitoring.key] == "monitoring"
    checks = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
    assert {
        "model_monitoring_drift",
        "model_monitoring_live_accuracy",
        "model_monitoring_fairness",
        "credit_score_model_fairness",
    } <= checks


def test_every_asset_has_owners_and_a_code_reference():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        spec = graph.get(key)
        assert list(spec.owners) == ASSET_OWNERS, key
        references = spec.metadata["dagster/code_references"]
        assert isinstance(references, CodeReferencesMetadataValue)
        if spec.is_materializable:
            (reference,) = references.code_references
            assert reference.file_path.startswith(str(settings.REPO_ROOT / "credit_platform"))
        else:  # an external table: the code that writes it, and the table's definition
            writer, definition = references.code_references
            assert definition.file_path == str(
                settings.REPO_ROOT / "credit_platform/core/schema.py"
            )
            lines = Path(definition.file_path).read_text().splitlines()
            assert lines[definition.line_number - 1].startswith(f"{key.path[-1]} = Table(")
            assert Path(writer.file_path).is_file() and writer.line_number > 1
    table = graph.get(AssetKey("credit_score_features_target")).metadata
    assert table["dagster/table_name"] == "credit_score_features_target"


def _parents(graph, name: str) -> set[str]:
    return {key.to_user_string() for key in graph.get(AssetKey(name)).parent_keys}


def test_the_lineage_shows_the_loop_from_training_to_monitoring():
    """train -> deploy -> log -> monitor (-> the challenger decision), with the tables the
    platform does not write as external assets no job materializes."""
    graph = defs.resolve_asset_graph()
    external = {"credit_score", "credit_score_features", "credit_predictions_api_log"}
    assert {key.to_user_string() for key in graph.external_asset_keys} == external
    assert _parents(graph, "credit_score_features_target") == {
        "credit_score",
        "credit_score_features",
    }
    assert _parents(graph, "credit_predictions_api_log") == {"deployed_bento"}
    assert _parents(graph, "model_monitoring") == {
        "credit_predictions_api_log",
        "credit_score",
        "deployed_bento",
    }
    assert _parents(graph, "credit_score_predictions") == {
        "credit_score_model",
        "credit_score_features",
    }
    assert _parents(graph, "challenger_decision") == {"model_monitoring"}
    upstream = graph.upstream_key_iterator(AssetKey("model_monitoring"))
    assert AssetKey("credit_score_features_target") in set(upstream)
    # The model that served day D may come from any earlier partition: all of them upstream.
    for child, parent in (
        ("model_monitoring", "deployed_bento"),
        ("credit_score_predictions", "credit_score_model"),
        ("credit_predictions_api_log", "deployed_bento"),
        ("challenger_decision", "model_monitoring"),
    ):
        mapping = graph.get_partition_mapping(AssetKey(child), AssetKey(parent))
        assert isinstance(mapping, AllPartitionMapping), (child, parent, mapping)
    assert graph.get(AssetKey("model_monitoring")).partitions_def == daily_partitions()
    # The retrain sensor closes the loop: monitoring's checks -> continuous training.
    assert retrain_sensor.job is continuous_training_job


def test_no_job_materializes_an_external_table():
    for job in defs.resolve_all_job_defs():
        executable = {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
        assert not executable & {
            "credit_score",
            "credit_score_features",
            "credit_predictions_api_log",
        }, job.name
    selected = {
        job.name: {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
        for job in defs.resolve_all_job_defs()
    }
    assert selected["monitor_predictions"] == {"model_monitoring"}
    assert selected["batch_scoring"] == {"credit_score_predictions"}
    assert selected["decide_challenger"] == {"challenger_decision"}
    assert selected["continuous_training"] == {
        "credit_score_features_target",
        "train_valid_split",
        "scalers",
        "credit_score_model",
    }


def test_every_column_of_every_table_asset_is_described():
    graph = defs.resolve_asset_graph()
    tables = 0
    for key in graph.get_all_asset_keys():
        schema = graph.get(key).metadata.get("dagster/column_schema")
        if schema is None:
            continue
        tables += 1
        missing = [column.name for column in schema.columns if not column.description]
        assert not missing, (key, missing)
    assert tables == 6  # three built tables (features target, predictions, monitoring), three read
