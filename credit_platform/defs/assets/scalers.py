"""`scalers`: one RobustScaler per numeric feature, fit on the train rows of the split only."""

import pandas as pd
from dagster import AssetExecutionContext, MetadataValue, Output, asset

from credit_platform.core.features import NUMERIC_FEATURES
from credit_platform.core.model_input import Scalers, fit_scalers
from credit_platform.core.training import markdown_table
from credit_platform.defs.assets.split import SPLIT_COLUMN, TRAIN
from credit_platform.defs.catalog import ASSET_OWNERS
from credit_platform.defs.partitions import daily_partitions


def train_rows(split: pd.DataFrame) -> pd.DataFrame:
    """The train side of a stored split; validation rows never reach a fit."""
    return split.loc[split[SPLIT_COLUMN] == TRAIN]


def scalers_markdown(scalers: Scalers) -> str:
    return markdown_table(
        ["feature", "center (median)", "scale (IQR)"],
        [
            (name, float(scalers[name].center_[0]), float(scalers[name].scale_[0]))
            for name in NUMERIC_FEATURES
        ],
    )


@asset(
    partitions_def=daily_partitions(),
    owners=ASSET_OWNERS,
    group_name="continuous_training",
    kinds={"scikitlearn"},
    description="RobustScaler per numeric feature, fit on the train split only (no leakage).",
)
def scalers(context: AssetExecutionContext, train_valid_split: pd.DataFrame) -> Output[Scalers]:
    train = train_rows(train_valid_split)
    try:
        fitted = fit_scalers(train)
    except ValueError as error:
        raise ValueError(f"partition {context.partition_key}: {error}") from error
    return Output(
        fitted,
        metadata={
            "scalers": MetadataValue.md(scalers_markdown(fitted)),
            "fit_rows": MetadataValue.int(len(train)),
        },
    )
