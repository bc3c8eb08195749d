"""The Dagster code location: assets, checks, jobs, schedules, sensors and resources.

Loading it fills the unset platform variables with their embedded defaults
(`settings.fill_defaults`), so every resource takes its values through `EnvVar`: the UI
shows which variable each value comes from and never prints a password.
"""

from dagster import Definitions, EnvVar, FilesystemIOManager, with_source_code_references

from credit_platform.core import settings
from credit_platform.defs.assets.challenger import challenger_decision
from credit_platform.defs.assets.deploy import deployed_bento
from credit_platform.defs.assets.monitoring import MONITORING_CHECKS, model_monitoring
from credit_platform.defs.assets.predictions import credit_score_predictions
from credit_platform.defs.assets.sources import SOURCE_ASSETS
from credit_platform.defs.challenger_sensor import challenger_sensor
from credit_platform.defs.checks import credit_score_model_fairness, credit_score_model_quality
from credit_platform.defs.feature_target_checks import feature_target_checks
from credit_platform.defs.io_managers import PARQUET_IO_MANAGER_KEY, PartitionedParquetIOManager
from credit_platform.defs.jobs import (
    CONTINUOUS_TRAINING_ASSETS,
    batch_scoring_job,
    challenger_decision_job,
    continuous_training_job,
    deploy_job,
    model_monitoring_job,
    prune_model_store_job,
)
from credit_platform.defs.monitoring_sensors import retrain_sensor, rollback_sensor
from credit_platform.defs.resources.fairness_policy import FairnessPolicyResource
from credit_platform.defs.resources.feature_store import FeatureStoreResource
from credit_platform.defs.resources.mlflow_tracking import MlflowTrackingResource
from credit_platform.defs.resources.model_retention import ModelRetentionResource
from credit_platform.defs.resources.monitoring_policy import MonitoringPolicyResource
from credit_platform.defs.resources.prediction_service import PredictionServiceResource
from credit_platform.defs.schedules import daily_continuous_training, daily_model_monitoring
from credit_platform.defs.sensors import deploy_sensor, new_data_sensor


def build_resources() -> dict:
    """The resources of the code location, each setting an `EnvVar` of a variable that
    `settings.fill_defaults()` has set."""
    storage = settings.platform_home() / "storage"
    return {
        "feature_store": FeatureStoreResource(url=EnvVar(settings.FEATURE_STORE_URL_ENV)),
        "mlflow_tracking": MlflowTrackingResource(
            tracking_uri=EnvVar(settings.MLFLOW_TRACKING_URI_ENV),
            experiment_name=EnvVar(settings.MLFLOW_EXPERIMENT_ENV),
            ui_url=EnvVar(settings.MLFLOW_UI_URL_ENV),
        ),
        "prediction_service": PredictionServiceResource(
            api_url=EnvVar(settings.API_URL_ENV),
            admin_token=EnvVar(settings.ADMIN_TOKEN_ENV),
        ),
        "monitoring_policy": MonitoringPolicyResource(
            psi_threshold=EnvVar(settings.MONITORING_PSI_THRESHOLD_ENV),
            accuracy_tolerance=EnvVar(settings.MONITORING_ACCURACY_TOLERANCE_ENV),
            min_labelled=EnvVar(settings.MONITORING_MIN_LABELLED_ENV),
            label_horizon_days=EnvVar(settings.MONITORING_LABEL_HORIZON_DAYS_ENV),
            retrain_cooldown_seconds=EnvVar(settings.RETRAIN_COOLDOWN_SECONDS_ENV),
            rollback_tolerance=EnvVar(settings.ROLLBACK_TOLERANCE_ENV),
            rollback_min_labelled=EnvVar(settings.ROLLBACK_MIN_LABELLED_ENV),
            challenger_margin=EnvVar(settings.CHALLENGER_MARGIN_ENV),
            challenger_min_labelled=EnvVar(settings.CHALLENGER_MIN_LABELLED_ENV),
        ),
        "model_retention": ModelRetentionResource(
            keep_last=EnvVar(settings.RETENTION_KEEP_LAST_ENV)
        ),
        "fairness_policy": FairnessPolicyResource(
            segments=EnvVar(settings.FAIRNESS_SEGMENTS_ENV),
            age_bands=EnvVar(settings.FAIRNESS_AGE_BANDS_ENV),
            min_rate_ratio=EnvVar(settings.FAIRNESS_MIN_RATE_RATIO_ENV),
            max_accuracy_gap=EnvVar(settings.FAIRNESS_MAX_ACCURACY_GAP_ENV),
            min_segment_rows=EnvVar(settings.FAIRNESS_MIN_SEGMENT_ROWS_ENV),
            max_p_value=EnvVar(settings.FAIRNESS_MAX_P_VALUE_ENV),
        ),
        PARQUET_IO_MANAGER_KEY: PartitionedParquetIOManager(base_dir=str(storage)),
        "io_manager": FilesystemIOManager(base_dir=str(storage / "objects")),
    }


def build_definitions() -> Definitions:
    settings.fill_defaults()
    assets = with_source_code_references(
        [
            *CONTINUOUS_TRAINING_ASSETS,
            deployed_bento,
            credit_score_predictions,
            model_monitoring,
            challenger_decision,
        ]
    )
    # The external tables carry their own code references (to the code that writes them).
    assets = [*assets, *SOURCE_ASSETS]
    return Definitions(
        assets=assets,
        asset_checks=[
            feature_target_checks,
            credit_score_model_quality,
            credit_score_model_fairness,
            *MONITORING_CHECKS,
        ],
        jobs=[
            continuous_training_job,
            deploy_job,
            batch_scoring_job,
            model_monitoring_job,
            challenger_decision_job,
            prune_model_store_job,
        ],
        schedules=[daily_continuous_training, daily_model_monitoring],
        sensors=[
            new_data_sensor,
            deploy_sensor,
            retrain_sensor,
            rollback_sensor,
            challenger_sensor,
        ],
        resources=build_resources(),
    )


defs = build_definitions()
