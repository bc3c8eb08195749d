"""The retention of the BentoML store as a Dagster resource.

It says how many models and Bentos are kept besides those in use; the deploy and the
`prune_model_store` job read the same value.

The field takes CREDIT_RETENTION_KEEP_LAST through `EnvVar` (name and default in
`core.settings`); it is text because `EnvVar` fills text fields, parsed when read.
"""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from credit_platform.core import settings


class ModelRetentionResource(ConfigurableResource):
    """Retention of the BentoML store (README, Retention)."""

    keep_last: str = Field(
        default_factory=lambda: str(settings.retention_keep_last()),
        description="Newest models and Bentos kept besides those in use; 0 keeps everything.",
    )

    @property
    def count(self) -> int:
        return settings.parse_non_negative_int(settings.RETENTION_KEEP_LAST_ENV, self.keep_last)
