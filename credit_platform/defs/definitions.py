"""The Dagster code location: assets, checks, jobs, schedules, sensors and resources.

Resources read their settings from the environment through `EnvVar` when a variable is
set (so the UI shows where a value comes from and never prints a password), and fall
back to the embedded defaults of `settings.py` otherwise.
"""

import os

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    Definitions,
    EnvVar,
    FilesystemIOManager,
    build_schedule_from_partitioned_job,
    define_asset_job,
)

from credit_platform.core import settings
from credit_platform.defs.assets.deploy import deployed_bento
from credit_platform.defs.assets.feature_target import credit_score_features_target
from credit_platform.defs.assets.model import credit_score_model
from credit_platform.defs.assets.scalers import scalers
from credit_platform.defs.assets.split import train_valid_split
from credit_platform.defs.checks import credit_score_model_quality
from credit_platform.defs.io_managers import PARQUET_IO_MANAGER_KEY, PartitionedParquetIOManager
from credit_platform.defs.partitions import daily_partitions
from credit_platform.defs.resources.feature_store import FeatureStoreResource
from credit_platform.defs.resources.mlflow_tracking import MlflowTrackingResource
from credit_platform.defs.resources.prediction_service import PredictionServiceResource
from credit_platform.defs.sensors import (
    CONTINUOUS_TRAINING_JOB,
    DEPLOY_JOB,
    deploy_sensor,
    new_data_sensor,
)

CONTINUOUS_TRAINING_ASSETS = (
    credit_score_features_target,
    train_valid_split,
    scalers,
    credit_score_model,
)


def _from_env(name: str, default: str) -> str | EnvVar:
    """EnvVar when the variable is set (resolved at run time), else the embedded default."""
    return EnvVar(name) if os.environ.get(name) else default


def build_resources() -> dict:
    storage = settings.platform_home() / "storage"
    return {
        "feature_store": FeatureStoreResource(
            url=_from_env(settings.FEATURE_STORE_URL_ENV, settings.default_feature_store_url())
        ),
        "mlflow_tracking": MlflowTrackingResource(
            tracking_uri=_from_env(
                settings.MLFLOW_TRACKING_URI_ENV, settings.default_mlflow_tracking_uri()
            ),
            experiment_name=_from_env(settings.MLFLOW_EXPERIMENT_ENV, settings.DEFAULT_EXPERIMENT),
        ),
        "prediction_service": PredictionServiceResource(
            api_url=_from_env(settings.API_URL_ENV, settings.api_url()),
            admin_token=(EnvVar(settings.ADMIN_TOKEN_ENV) if settings.admin_token() else None),
        ),
        PARQUET_IO_MANAGER_KEY: PartitionedParquetIOManager(base_dir=str(storage)),
        "io_manager": FilesystemIOManager(base_dir=str(storage / "objects")),
    }


def continuous_training_job():
    """Feature table → split → scalers → model (+ its blocking check), one partition a run."""
    return define_asset_job(
        CONTINUOUS_TRAINING_JOB,
        selection=AssetSelection.assets(*CONTINUOUS_TRAINING_ASSETS),
        partitions_def=daily_partitions(),
        description="Continuous training for one base day: build, split, scale, tune, check.",
    )


def deploy_job():
    """Builds and serves the Bento of one partition's model (requested by deploy_sensor)."""
    return define_asset_job(
        DEPLOY_JOB,
        selection=AssetSelection.assets(deployed_bento),
        partitions_def=daily_partitions(),
        description="Deploy one partition's checked model to the prediction service.",
    )


def build_definitions() -> Definitions:
    training_job = continuous_training_job()
    daily_training = build_schedule_from_partitioned_job(
        training_job,
        hour_of_day=2,
        name="daily_continuous_training",
        default_status=DefaultScheduleStatus.STOPPED,
        description="Trains on yesterday's partition every night (the new-data sensor is the "
        "usual trigger; turn this on to train on a clock instead).",
    )
    return Definitions(
        assets=[*CONTINUOUS_TRAINING_ASSETS, deployed_bento],
        asset_checks=[credit_score_model_quality],
        jobs=[training_job, deploy_job()],
        schedules=[daily_training],
        sensors=[new_data_sensor, deploy_sensor],
        resources=build_resources(),
    )


defs = build_definitions()
