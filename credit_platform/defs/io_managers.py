"""IO managers that store asset outputs in formats people can open without Dagster."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
from dagster import (
    ConfigurableIOManagerFactory,
    InputContext,
    MetadataValue,
    OutputContext,
    UPathIOManager,
)
from pydantic import Field

from credit_platform.core import settings

if TYPE_CHECKING:
    from upath import UPath

PARQUET_IO_MANAGER_KEY = "parquet_io_manager"


def default_storage_dir() -> str:
    return str(settings.platform_home() / "storage")


class _PandasParquetUPathIOManager(UPathIOManager):
    """One Parquet file per asset and partition: `<base>/<asset>/<partition>.parquet`."""

    extension = ".parquet"

    def dump_to_path(self, context: OutputContext, obj: pd.DataFrame, path: UPath) -> None:
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(
                f"{context.asset_key.to_user_string()} must return a pandas DataFrame to be "
                f"stored as Parquet, got {type(obj).__name__}"
            )
        # Write next to the target first so a crash never leaves half a file in its place.
        partial = path.with_name(path.name + ".partial")
        with partial.open("wb") as file:
            obj.to_parquet(file, index=False)
        partial.rename(path)

    def load_from_path(self, context: InputContext, path: UPath) -> pd.DataFrame:
        if not path.exists():
            raise FileNotFoundError(
                f"no stored Parquet file for {context.asset_key.to_user_string()} at {path}; "
                "materialize that partition first"
            )
        with path.open("rb") as file:
            return pd.read_parquet(file)

    def get_metadata(self, context: OutputContext, obj: pd.DataFrame) -> dict[str, MetadataValue]:
        return {"stored_rows": MetadataValue.int(len(obj))}


class PartitionedParquetIOManager(ConfigurableIOManagerFactory):
    """Stores DataFrame assets as Parquet, one file per partition, so a split can be read back
    with `pandas.read_parquet` for inspection.

    A multi-partition (single-run backfill) output cannot be written to one per-partition
    file; Dagster then fails the step with a message saying so, so keep per-partition runs.
    """

    base_dir: str = Field(
        default_factory=default_storage_dir,
        description="Folder (or fsspec URL) holding <asset>/<partition>.parquet files.",
    )

    def create_io_manager(self, context) -> _PandasParquetUPathIOManager:
        from upath import UPath

        return _PandasParquetUPathIOManager(base_path=UPath(self.base_dir))
