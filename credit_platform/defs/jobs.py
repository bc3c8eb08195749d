"""The platform's six jobs.

Continuous training of one day, deploying one day's model, carrying out a challenger
verdict, batch scoring of one day, monitoring one day of the prediction log, and pruning
the BentoML store.

Sensors, schedules, the definitions and the CLI import these objects (never their names).
"""

from dagster import AssetSelection, Backoff, RetryPolicy, define_asset_job, job

from credit_platform.defs.assets.challenger import challenger_decision
from credit_platform.defs.assets.deploy import deployed_bento
from credit_platform.defs.assets.feature_target import credit_score_features_target
from credit_platform.defs.assets.model import credit_score_model
from credit_platform.defs.assets.monitoring import model_monitoring
from credit_platform.defs.assets.predictions import credit_score_predictions
from credit_platform.defs.assets.scalers import scalers
from credit_platform.defs.assets.split import train_valid_split
from credit_platform.defs.prune import prune_bentoml_store

CONTINUOUS_TRAINING_ASSETS = (
    credit_score_features_target,
    train_valid_split,
    scalers,
    credit_score_model,
)

continuous_training_job = define_asset_job(
    "continuous_training",
    selection=AssetSelection.assets(*CONTINUOUS_TRAINING_ASSETS),
    description="Continuous training for one base day: build, check, split, scale, tune, check.",
)

# A failed deploy (a service that did not start or follow in time, an unreachable MLflow or
# feature store) is retried by Dagster inside its run, after 5 s and then 10 s; a refusal no
# retry can change (`Failure(allow_retries=False)`, e.g. a model whose check did not pass)
# fails at once. The job's policy, not the asset's: `materialize` in tests stays single-shot.
DEPLOY_ATTEMPTS = 3
DEPLOY_RETRY_POLICY = RetryPolicy(
    max_retries=DEPLOY_ATTEMPTS - 1, delay=5, backoff=Backoff.EXPONENTIAL
)

deploy_job = define_asset_job(
    "deploy_model",
    selection=AssetSelection.assets(deployed_bento),
    description="Deploy one partition's checked model to the prediction service "
    f"({DEPLOY_ATTEMPTS} attempts, backoff 5 s then 10 s).",
    op_retry_policy=DEPLOY_RETRY_POLICY,
)

challenger_decision_job = define_asset_job(
    "decide_challenger",
    selection=AssetSelection.assets(challenger_decision),
    description="Carry out the challenger sensor's verdict: promote or detach the challenger.",
)

batch_scoring_job = define_asset_job(
    "batch_scoring",
    selection=AssetSelection.assets(credit_score_predictions),
    description="Score every customer with features on one day with the model served that day.",
)

model_monitoring_job = define_asset_job(
    "monitor_predictions",
    selection=AssetSelection.assets(model_monitoring),
    description="Monitor one day of the prediction log: live accuracy, drift, volume, latency.",
)


@job(
    name="prune_model_store",
    description="Apply retention to the BentoML store now (the deploy applies it after each "
    "success): delete the models and Bentos neither in use nor among the newest kept.",
)
def prune_model_store_job() -> None:
    prune_bentoml_store()
