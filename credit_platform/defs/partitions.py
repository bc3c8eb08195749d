"""The one daily partitioning every partitioned asset and asset check shares."""

from __future__ import annotations

from dagster import DailyPartitionsDefinition

from credit_platform.core import settings


def daily_partitions() -> DailyPartitionsDefinition:
    """Daily partitions from CREDIT_PARTITIONS_START (default 2025-01-01), one per base_dt."""
    return DailyPartitionsDefinition(start_date=settings.partitions_start())
