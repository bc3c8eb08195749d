"""`train_valid_split`: the partition's labelled rows, split once into train, valid and test.

Train fits the scalers and the model, valid drives early stopping and the choice among the
grid's trials, and test is scored once, for the chosen model, so the reported metrics come
from rows no decision has seen. Every later stage (scalers, model, check) reads this one
stored split, so a re-run of a downstream asset trains and scores on exactly the same rows.
"""

import hashlib
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
TEST = "test"
SIDES = (TRAIN, VALID, TEST)


class SplitError(ValueError):
    """The rows cannot be split as asked (too few rows or labels to stratify)."""


class SplitConfig(Config):
    valid_fraction: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="Share of each label's rows for validation (early stopping, grid choice).",
    )
    test_fraction: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="Share of each label's rows held out to report the chosen model.",
    )
    min_test_rows: int = Field(
        default=30,
        ge=1,
        description="Fewest test rows a partition may have; fewer fail the run.",
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


def stratified_split(
    rows: pd.DataFrame,
    valid_fraction: float,
    seed: int,
    test_fraction: float = 0.2,
    min_test_rows: int = 1,
) -> pd.DataFrame:
    """The rows with a `split` column ("train", "valid" or "test"), stratified by the label.

    Deterministic for a given seed and set of rows, whatever order the rows come in.
    """
    labels = rows[TARGET]
    unknown = sorted(set(labels.dropna().astype(str)) - set(LABELS))
    if unknown or labels.isna().any():
        raise SplitError(
            f"{TARGET} must be one of {', '.join(LABELS)}; found "
            f"{', '.join(unknown) or 'missing labels'}"
        )
    if valid_fraction + test_fraction >= 1:
        raise SplitError(
            f"valid_fraction {valid_fraction} + test_fraction {test_fraction} leave no train rows"
        )
    counts = labels.value_counts()
    if len(counts) < 2:
        raise SplitError(
            f"a classifier needs at least two labels, found only {', '.join(counts.index)} "
            f"({len(rows)} rows)"
        )
    scarce = {label: int(count) for label, count in counts.items() if count < 3}
    if scarce:
        detail = ", ".join(f"{label}: {count}" for label, count in scarce.items())
        raise SplitError(f"too few rows to stratify ({detail}); each label needs at least 3")
    plan = {
        label: _side_counts(int(count), valid_fraction, test_fraction)
        for label, count in counts.items()
    }
    n_test = sum(test for test, _ in plan.values())
    n_valid = sum(valid for _, valid in plan.values())
    n_train = len(rows) - n_valid - n_test
    sizes = f"{n_train} train, {n_valid} valid and {n_test} test rows"
    if n_test < min_test_rows:
        raise SplitError(
            f"{len(rows)} rows with test_fraction={test_fraction} give {sizes}; the test split "
            f"needs at least {min_test_rows} rows to report a model"
        )
    short = [label for label, (test, valid) in plan.items() if test + valid >= counts[label]]
    if short:
        raise SplitError(
            f"{len(rows)} rows give {sizes}; no train rows would be left for "
            f"{', '.join(sorted(short))}"
        )

    ordered = rows.sort_values(["id", "customer_id"], kind="stable").reset_index(drop=True)
    draw = row_draws(ordered, seed)
    split = pd.Series(TRAIN, index=ordered.index, dtype="object")
    for label, label_rows in ordered.groupby(TARGET, sort=True):
        label_test, label_valid = plan[label]
        ranked = draw.loc[label_rows.index].sort_values(kind="stable").index
        split.loc[ranked[:label_test]] = TEST
        split.loc[ranked[label_test : label_test + label_valid]] = VALID
    return ordered.assign(**{SPLIT_COLUMN: split})


def _side_counts(rows: int, valid_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Test and valid rows for one label: its share of each, at least one row each."""
    return max(1, round(test_fraction * rows)), max(1, round(valid_fraction * rows))


def row_draws(rows: pd.DataFrame, seed: int) -> pd.Series:
    """A seeded pseudo-random number in [0, 1) per row, fixed by the row's id and customer.

    Each label's rows go to test, valid and train in the order of these draws, so a row keeps
    its side in the overlapping windows of neighbouring partitions (only rows near a label's
    cut can move): a model of one day has hardly trained on the next day's test rows, and the
    champion can fairly be scored on a candidate's test rows.
    """
    values = [
        int.from_bytes(
            hashlib.blake2b(f"{seed}|{row_id}|{customer}".encode(), digest_size=8).digest(),
            "big",
        )
        / 2**64
        for row_id, customer in zip(rows["id"], rows["customer_id"], strict=True)
    ]
    return pd.Series(values, index=rows.index, dtype="float64")


def side_rows(split: pd.DataFrame, side: str) -> pd.DataFrame:
    """The rows of one side ("train", "valid" or "test") of a stored split."""
    return split.loc[split[SPLIT_COLUMN] == side]


def label_distribution_markdown(split: pd.DataFrame) -> str:
    rows = []
    for label in LABELS:
        row: list[object] = [label]
        for side in SIDES:
            side_labels = split.loc[split[SPLIT_COLUMN] == side, TARGET]
            count = int((side_labels == label).sum())
            share = count / len(side_labels) if len(side_labels) else 0.0
            row += [count, f"{share:.1%}"]
        rows.append(row)
    headers = ["label"] + [f"{side} {what}" for side in SIDES for what in ("rows", "share")]
    return markdown_table(headers, rows)


@asset(
    partitions_def=daily_partitions(),
    owners=ASSET_OWNERS,
    deps=[FEATURE_TARGET_KEY],
    io_manager_key=PARQUET_IO_MANAGER_KEY,
    group_name="continuous_training",
    kinds={"pandas", "parquet"},
    description=(
        "The partition's credit_score_features_target rows with a seeded, stratified "
        "train/valid/test `split` column; stored as Parquet, one file per partition."
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
        split = stratified_split(
            rows,
            config.valid_fraction,
            config.seed,
            test_fraction=config.test_fraction,
            min_test_rows=config.min_test_rows,
        )
    except SplitError as error:
        raise Failure(
            description=f"cannot split {table} for base_dt {base_dt.isoformat()}: {error}",
            metadata={"partition": base_dt.isoformat(), "table": table, "rows": len(rows)},
        ) from error

    sizes = {side: int((split[SPLIT_COLUMN] == side).sum()) for side in SIDES}
    context.log.info(
        "split %s rows of %s: %s train, %s valid, %s test",
        len(split),
        base_dt,
        sizes[TRAIN],
        sizes[VALID],
        sizes[TEST],
    )
    preview = split.head(5)
    return Output(
        split,
        metadata={
            **{f"rows_{side}": MetadataValue.int(count) for side, count in sizes.items()},
            "label_distribution": MetadataValue.md(label_distribution_markdown(split)),
            "preview": MetadataValue.md(
                markdown_table(list(preview.columns), preview.itertuples(index=False))
            ),
            "valid_fraction": config.valid_fraction,
            "test_fraction": config.test_fraction,
            "seed": config.seed,
            "table": table,
        },
    )
