"""`train_valid_split`: the partition's labelled rows, split once into train and valid.

Every later stage (scalers, model, check) reads this one stored split, so a re-run of a
downstream asset trains and scores on exactly the same rows.
"""

import math
from datetime import date

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetKey,
    Config,
    Failure,
    MetadataValue,
    Output,
    asset,
)
from pydantic import Field
from sklearn.model_selection import train_test_split
from sqlalchemy import Date, bindparam, select
from sqlalchemy.engine import Engine

from credit_platform.core.features import (
    CATEGORICAL_FEATURES,
    LABELS,
    NUMERIC_FEATURES,
    TARGET,
    TEXT_FEATURES,
)
from credit_platform.core.schema import credit_score_features_target
from credit_platform.core.training import markdown_table
from credit_platform.defs.catalog import ASSET_OWNERS
from credit_platform.defs.io_managers import PARQUET_IO_MANAGER_KEY
from credit_platform.defs.partitions import daily_partitions
from credit_platform.defs.resources.feature_store import FeatureStoreResource

FEATURE_TARGET_KEY = AssetKey("credit_score_features_target")
SPLIT_COLUMN = "split"
TRAIN = "train"
VALID = "valid"


class SplitError(ValueError):
    """The rows cannot be split as asked (too few rows or labels to stratify)."""


class SplitConfig(Config):
    valid_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="Share of each label's rows held out for validation."
    )
    seed: int = Field(default=42, description="Seed of the shuffle; same seed, same split.")


def read_partition_rows(engine: Engine, base_dt: date) -> pd.DataFrame:
    """Every row of the feature-target table for base_dt, in a stable order, typed for pandas."""
    table = credit_score_features_target
    statement = (
        select(table)
        .where(table.c.base_dt == bindparam("base_dt", type_=Date))
        .order_by(table.c.id, table.c.customer_id)
    )
    with engine.connect() as connection:
        result = connection.execute(statement, {"base_dt": base_dt})
        frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    return typed_rows(frame)


def typed_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers as float64 (NULL -> NaN), categories and texts as objects (NULL -> None)."""
    out = frame.copy()
    for name in NUMERIC_FEATURES:
        out[name] = pd.to_numeric(out[name], errors="coerce").astype("float64")
    for name in (*CATEGORICAL_FEATURES, *TEXT_FEATURES, TARGET, "id", "customer_id"):
        out[name] = out[name].astype("object").where(out[name].notna(), None)
    return out


def stratified_split(rows: pd.DataFrame, valid_fraction: float, seed: int) -> pd.DataFrame:
    """The rows with a `split` column ("train"/"valid"), stratified by the label.

    Deterministic for a given seed and set of rows, whatever order the rows come in.
    """
    labels = rows[TARGET]
    unknown = sorted(set(labels.dropna().astype(str)) - set(LABELS))
    if unknown or labels.isna().any():
        raise SplitError(
            f"{TARGET} must be one of {', '.join(LABELS)}; found "
            f"{', '.join(unknown) or 'missing labels'}"
        )
    counts = labels.value_counts()
    if len(counts) < 2:
        raise SplitError(
            f"a classifier needs at least two labels, found only {', '.join(counts.index)} "
            f"({len(rows)} rows)"
        )
    scarce = {label: int(count) for label, count in counts.items() if count < 2}
    if scarce:
        detail = ", ".join(f"{label}: {count} row" for label, count in scarce.items())
        raise SplitError(f"too few rows to stratify ({detail}); each label needs at least 2")
    n_valid = math.ceil(valid_fraction * len(rows))
    n_train = len(rows) - n_valid
    if n_valid < len(counts) or n_train < len(counts):
        raise SplitError(
            f"{len(rows)} rows with valid_fraction={valid_fraction} give {n_train} train and "
            f"{n_valid} valid rows; each side needs at least one row per label ({len(counts)})"
        )

    ordered = rows.sort_values(["id", "customer_id"], kind="stable").reset_index(drop=True)
    train_index, _ = train_test_split(
        ordered.index,
        test_size=n_valid,
        stratify=ordered[TARGET],
        random_state=seed,
    )
    split = pd.Series(VALID, index=ordered.index, dtype="object")
    split.loc[train_index] = TRAIN
    return ordered.assign(**{SPLIT_COLUMN: split})


def label_distribution_markdown(split: pd.DataFrame) -> str:
    rows = []
    for label in LABELS:
        row: list[object] = [label]
        for side in (TRAIN, VALID):
            side_labels = split.loc[split[SPLIT_COLUMN] == side, TARGET]
            count = int((side_labels == label).sum())
            share = count / len(side_labels) if len(side_labels) else 0.0
            row += [count, f"{share:.1%}"]
        rows.append(row)
    return markdown_table(["label", "train rows", "train share", "valid rows", "valid share"], rows)


@asset(
    partitions_def=daily_partitions(),
    owners=ASSET_OWNERS,
    deps=[FEATURE_TARGET_KEY],
    io_manager_key=PARQUET_IO_MANAGER_KEY,
    group_name="continuous_training",
    kinds={"pandas", "parquet"},
    description=(
        "The partition's credit_score_features_target rows with a seeded, stratified "
        "train/valid `split` column; stored as Parquet, one file per partition."
    ),
)
def train_valid_split(
    context: AssetExecutionContext, config: SplitConfig, feature_store: FeatureStoreResource
) -> Output[pd.DataFrame]:
    base_dt = date.fromisoformat(context.partition_key)
    table = credit_score_features_target.name
    with feature_store.engine() as engine:
        rows = read_partition_rows(engine, base_dt)
    if rows.empty:
        raise Failure(
            description=(
                f"no rows in {table} for base_dt {base_dt.isoformat()}; materialize "
                f"{FEATURE_TARGET_KEY.to_user_string()} for that day first"
            ),
            metadata={"partition": base_dt.isoformat(), "table": table},
        )
    try:
        split = stratified_split(rows, config.valid_fraction, config.seed)
    except SplitError as error:
        raise Failure(
            description=f"cannot split {table} for base_dt {base_dt.isoformat()}: {error}",
            metadata={"partition": base_dt.isoformat(), "table": table, "rows": len(rows)},
        ) from error

    train_rows = int((split[SPLIT_COLUMN] == TRAIN).sum())
    valid_rows = int((split[SPLIT_COLUMN] == VALID).sum())
    context.log.info(
        "split %s rows of %s: %s train, %s valid", len(split), base_dt, train_rows, valid_rows
    )
    preview = split.head(5)
    return Output(
        split,
        metadata={
            "rows_train": MetadataValue.int(train_rows),
            "rows_valid": MetadataValue.int(valid_rows),
            "label_distribution": MetadataValue.md(label_distribution_markdown(split)),
            "preview": MetadataValue.md(
                markdown_table(list(preview.columns), preview.itertuples(index=False))
            ),
            "valid_fraction": config.valid_fraction,
            "seed": config.seed,
            "table": table,
        },
    )
