"""The README's main command: everything from an empty home to a live prediction."""

import json
from datetime import date, timedelta

import click
import requests
from sqlalchemy import select

from credit_platform.core import routes, settings
from credit_platform.core.db import init_schema, redacted
from credit_platform.core.features import MODEL_FEATURES
from credit_platform.core.schema import credit_score_features_target
from credit_platform.core.service_client import ServiceClient


def sample_request(url: str, partition: str) -> dict:
    """One complete row of the trained partition, as a /predict body."""
    table = credit_score_features_target
    engine = init_schema(url)
    try:
        with engine.connect() as connection:
            query = (
                select(table.c.customer_id, *[table.c[name] for name in MODEL_FEATURES])
                .where(table.c.base_dt == date.fromisoformat(partition))
                .where(*[table.c[name].is_not(None) for name in MODEL_FEATURES])
                .order_by(table.c.id)
                .limit(1)
            )
            row = connection.execute(query).mappings().first()
    finally:
        engine.dispose()
    if row is None:
        raise RuntimeError(f"partition {partition} has no complete row to use as a sample")
    data = {key: (value.item() if hasattr(value, "item") else value) for key, value in row.items()}
    return {"data": data}


def run_demo(*, customers: int, days: int, end: date, grid: str) -> None:
    """Seed `days` synthetic days ending on `end` (the CLI's default: yesterday, UTC, the
    newest partition, so the UI's default partition views show it), then train and deploy
    the `end` partition."""
    from credit_platform.cli.pipeline_runs import run_deploy_partition, run_training_partitions
    from credit_platform.ingest.synthetic import seed_synthetic

    url = settings.feature_store_url()
    start = end - timedelta(days=days - 1)
    partition = end.isoformat()
    click.echo(f"1/4 feature store: {redacted(url)}")
    engine = init_schema(url)
    try:
        summary = seed_synthetic(
            engine, customers=customers, days=days, start=start, progress=False
        )
    finally:
        engine.dispose()
    click.echo(f"2/4 synthetic data loaded\n{summary.render()}")

    click.echo(f"3/4 continuous training for partition {partition}")
    if run_training_partitions([partition], grid=grid, echo=click.echo):
        raise RuntimeError(f"the training run for {partition} failed (see above)")

    click.echo(f"4/4 deployment to the prediction service at {settings.api_url()}")
    if not run_deploy_partition(partition, echo=click.echo):
        raise RuntimeError(f"deploying the model of {partition} failed (see above)")

    api_url = settings.api_url()
    body = sample_request(url, partition)
    response = requests.post(f"{api_url}{routes.PREDICT}", json=body, timeout=10)
    if response.status_code != 200:
        raise RuntimeError(
            f"the sample prediction failed: HTTP {response.status_code} {response.text}"
        )
    served = ServiceClient(api_url, timeout=5).reported_model()
    if served is None:
        raise RuntimeError(f"{api_url}{routes.METADATA} reports no model after the deploy")
    click.echo(
        f"\nsample prediction for {body['data']['customer_id']}: {response.json()}\n"
        f"\nDone. Where to look:\n"
        f"  Dagster UI:  .venv/bin/credit-platform ui         -> http://127.0.0.1:3001 "
        f"(assets of partition {partition})\n"
        f"  MLflow UI:   .venv/bin/credit-platform mlflow-ui  -> {settings.mlflow_ui_url()} "
        f"(experiment {settings.mlflow_experiment_name()})\n"
        f"  Model tag:   {served.tag} (BentoML store {settings.bentoml_home()})\n"
        f"  Bento:       {served.bento_tag} (the service's code; bentoml list)\n"
        f"  Prediction API (running in the background; stop: .venv/bin/credit-platform stop):\n"
        f"    curl -s -X POST {api_url}{routes.PREDICT} -H 'Content-Type: application/json' "
        f"-d '{json.dumps(body)}'\n"
        f"    curl -s {api_url}{routes.METADATA}"
    )
