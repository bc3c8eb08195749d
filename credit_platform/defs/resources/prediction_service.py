"""The running prediction service as a Dagster resource (used by deploys and sensors)."""

from dagster import ConfigurableResource
from pydantic import Field

from credit_platform.core import settings
from credit_platform.core.service_client import ServiceClient


class PredictionServiceResource(ConfigurableResource):
    """Where the prediction API answers and how to administer it.

    `admin_token` must equal the service's CREDIT_API_ADMIN_TOKEN; `autostart` lets a
    deploy start the built Bento on this machine when no service answers, and restart a
    service it started there when the service code (the Bento) changed.
    """

    api_url: str = Field(default_factory=settings.api_url, description="Base URL of the API.")
    admin_token: str | None = Field(
        default_factory=settings.admin_token, description="Bearer token for /admin/reload."
    )
    timeout_seconds: float = Field(default=2.0, gt=0, description="Timeout of status calls.")
    autostart: bool = Field(
        default=True,
        description="Start the Bento locally when no service answers at api_url (restart a "
        "locally started one on new service code).",
    )
    start_timeout_seconds: float = Field(default=120.0, gt=0)
    replicas_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description="How long a deploy waits for every live replica to report the new model "
        "(they follow the record the reload writes) before it fails naming the others.",
    )

    def client(self) -> ServiceClient:
        return ServiceClient(self.api_url, timeout=self.timeout_seconds)
