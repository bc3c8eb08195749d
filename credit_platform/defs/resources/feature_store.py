"""The feature store as a Dagster resource."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dagster import ConfigurableResource
from pydantic import Field
from sqlalchemy.engine import Engine

from credit_platform.core import settings
from credit_platform.core.db import check_reachable, make_engine, redacted


class FeatureStoreResource(ConfigurableResource):
    """Connection settings for the feature store (SQLite file or MariaDB).

    The URL comes from FEATURE_STORE_URL when set (see `definitions.py`), otherwise it
    is a SQLite file under the platform home, so nothing needs a server.
    """

    url: str = Field(
        default_factory=settings.feature_store_url,
        description="SQLAlchemy URL, e.g. mysql+pymysql://user:password@host:3306/mlops",
    )

    @property
    def display_url(self) -> str:
        return redacted(self.url)

    @contextmanager
    def engine(self) -> Iterator[Engine]:
        """A checked engine, disposed afterwards so runs leave no pooled connections."""
        engine = make_engine(self.url)
        try:
            check_reachable(engine)
            yield engine
        finally:
            engine.dispose()
