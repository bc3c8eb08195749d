"""`credit-platform challenger`: run a second model beside the champion.

As a shadow it scores every request and answers none; as a canary it answers a share of
the customers.

Only a model whose blocking quality check passed, as recorded on its MLflow model version,
may be attached; the service itself refuses unknown tags, models that fail to load, and
shares outside [0, 0.5].
"""

from __future__ import annotations

import json

import click

from credit_platform.core import settings
from credit_platform.core.model_store import normalize_tag
from credit_platform.core.service_client import ServiceClient, ServiceError
from credit_platform.defs.resources.mlflow_tracking import (
    BENTO_TAG,
    PASSED,
    QUALITY_TAG,
    MlflowTrackingResource,
)


def checked_model_tag(tracking: MlflowTrackingResource, tag: str) -> str:
    """The full tag of a registered model version whose quality check passed; ValueError
    naming the tag and its verdict otherwise."""
    full = normalize_tag(tag)
    versions = [v for v in tracking.versions() if (v.tags or {}).get(BENTO_TAG) == full]
    if not versions:
        raise ValueError(f"{full} is not a registered version of {settings.MODEL_NAME}")
    verdict = (versions[0].tags or {}).get(QUALITY_TAG, "missing")
    if verdict != PASSED:
        raise ValueError(f"{full} did not pass its quality check ({QUALITY_TAG}={verdict!r})")
    return full


@click.group()
def challenger() -> None:
    """Attach or detach a shadow or canary model on the running prediction service."""


@challenger.command()
@click.option("--tag", required=True, help="Model tag, e.g. credit_score_classifier:<version>.")
@click.option("--role", type=click.Choice(["shadow", "canary"]), default="shadow")
@click.option("--share", type=float, default=0.05, help="Canary share of customers, 0 to 0.5.")
def attach(tag: str, role: str, share: float) -> None:
    """Attach a model that passed its check as the service's shadow or canary."""
    from credit_platform.cli.rollback import registry

    try:
        full = checked_model_tag(registry(), tag)
        answer = ServiceClient(settings.api_url()).set_challenger(
            settings.admin_token(), full, role, share
        )
    except (ValueError, ServiceError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(json.dumps(answer, indent=2))


@challenger.command()
def detach() -> None:
    """Detach the service's shadow or canary; the champion answers everything."""
    try:
        answer = ServiceClient(settings.api_url()).set_challenger(settings.admin_token(), None)
    except ServiceError as error:
        raise click.ClickException(str(error)) from error
    click.echo(json.dumps(answer, indent=2))
