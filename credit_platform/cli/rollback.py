"""`credit-platform rollback`: retire the MLflow champion and elect the previous one.

Only the registry alias moves; the deploy sensor sees that the service no longer serves the
champion and deploys it, like any other change of champion.
"""

from __future__ import annotations

import click

from credit_platform.core import settings
from credit_platform.defs.resources.mlflow_tracking import (
    BENTO_TAG,
    PARTITION_TAG,
    MlflowTrackingResource,
)


def registry() -> MlflowTrackingResource:
    """The MLflow registry the platform's settings name (CREDIT_MLFLOW_TRACKING_URI etc.)."""
    return MlflowTrackingResource(
        tracking_uri=settings.mlflow_tracking_uri(),
        experiment_name=settings.mlflow_experiment_name(),
    )


def roll_back_champion(tracking: MlflowTrackingResource) -> str:
    """Retire the champion and elect the previous one; a line saying what moved.

    Raises LookupError when there is no champion or nothing to fall back to."""
    retired, elected = tracking.roll_back(settings.MODEL_NAME)
    old, new = retired.tags or {}, elected.tags or {}
    return (
        f"champion {settings.MODEL_NAME} version {retired.version} ({old.get(BENTO_TAG)}, "
        f"partition {old.get(PARTITION_TAG)}) is rolled back; the champion is now version "
        f"{elected.version} ({new.get(BENTO_TAG)}, partition {new.get(PARTITION_TAG)}). The "
        "deploy sensor serves it on its next tick."
    )


@click.command()
def rollback() -> None:
    """Roll the MLflow champion back to the previous passing model (the deploy sensor then
    serves it)."""
    try:
        click.echo(roll_back_champion(registry()))
    except LookupError as error:
        raise click.ClickException(str(error)) from error
