"""`train_valid_split`: the partition's labelled rows, split once into train, valid and test.

Train fits the scalers and the model, valid drives early stopping and the choice among the
grid's trials, and test is scored once, for the chosen model, so the reported metrics come
from rows no decision has seen. Every later stage (scalers, model, check) reads this one
stored split, so a re-run of a downstream asset trains and scores on exactly the same rows.

The split is by customer: a window of a month holds many rows of one customer (a row a day
in the synthetic data, a row a month in Kaggle's), and their labels share a persistent
per-customer part. Rows of one customer on both sides would let the model recall the
customer instead of judging the features, and the test accuracy would promise more than
the model does on tomorrow's customers, which is what live monitoring holds it to.
"""

import hashlib
from datetime import date, timedelta

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
        description="Share of each label's customers for validation (early stopping, grid choice).",
    )
    test_fraction: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="Share of each label's customers held out to report the chosen model.",
    )
    min_test_rows: int = Field(
        default=30,
        ge=1,
        description="Fewest test rows a partition may have; fewer fail the run.",
    )
    seed: int = Field(default=42, description="Seed of the draw; same seed, same split.")
    out_of_time_days: int = Field(
        default=0,
        ge=0,
        description="0: customers split over the whole window. N > 0: test rows are the "
        "test customers' rows of the window's last N days and train/valid rows are the "
        "other customers' older rows (the rest is left out); a window with no row on one "
        "side of that cut falls back to the plain grouped split, saying so.",
    )


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


def grouped_split(
    rows: pd.DataFrame,
    valid_fraction: float,
    seed: int,
    test_fraction: float = 0.2,
    min_test_rows: int = 1,
    test_after: date | None = None,
) -> pd.DataFrame:
    """The rows with a `split` column ("train", "valid" or "test"); all rows of a customer
    are on one side, and each label's customers (a customer's label: its newest row's) are
    cut by the fractions. With `test_after`, test keeps only rows dated after it and train
    and valid only rows dated on or before it (out of time; the other rows are dropped).

    Deterministic for a given seed and set of rows, whatever order the rows come in.
    """
    _check_labels(rows)
    if valid_fraction + test_fraction >= 1:
        raise SplitError(
            f"valid_fraction {valid_fraction} + test_fraction {test_fraction} leave no train rows"
        )
    ordered = rows.sort_values(["id", "customer_id"], kind="stable").reset_index(drop=True)
    strata = customer_labels(ordered)
    counts = strata.value_counts().reindex(sorted(set(ordered[TARGET])), fill_value=0)
    scarce = {label: int(count) for label, count in counts.items() if count < 3}
    if scarce:
        detail = ", ".join(f"{label}: {count}" for label, count in scarce.items())
        raise SplitError(
            f"too few customers to stratify ({detail} by their newest label); each label "
            "needs at least 3 customers"
        )
    plan = {
        label: _side_counts(int(count), valid_fraction, test_fraction)
        for label, count in counts.items()
    }
    short = [label for label, (test, valid) in plan.items() if test + valid >= counts[label]]

    draw = customer_draws(strata.index, seed)
    side = pd.Series(TRAIN, index=strata.index, dtype="object")
    for label, customers in strata.groupby(strata, sort=True):
        label_test, label_valid = plan[label]
        ranked = draw.loc[customers.index].sort_values(kind="stable").index
        side.loc[ranked[:label_test]] = TEST
        side.loc[ranked[label_test : label_test + label_valid]] = VALID
    split = ordered.assign(**{SPLIT_COLUMN: ordered["customer_id"].map(side).to_numpy()})
    if test_after is not None:
        recent = pd.to_datetime(split["date"]).dt.date > test_after
        split = split.loc[recent == (split[SPLIT_COLUMN] == TEST)].reset_index(drop=True)

    sizes_by_side = split[SPLIT_COLUMN].value_counts()
    n_train, n_valid, n_test = (int(sizes_by_side.get(name, 0)) for name in SIDES)
    sizes = f"{n_train} train, {n_valid} valid and {n_test} test rows"
    whole = f"{len(rows)} rows of {len(strata)} customers"
    if n_test < min_test_rows:
        raise SplitError(
            f"{whole} with test_fraction={test_fraction} give {sizes}; the test split "
            f"needs at least {min_test_rows} rows to report a model"
        )
    untrained = set(split[TARGET]) - set(split.loc[split[SPLIT_COLUMN] == TRAIN, TARGET])
    if short or untrained:
        raise SplitError(
            f"{whole} give {sizes}; no train rows would be left for "
            f"{', '.join(sorted(set(short) | untrained))}"
        )
    return split


def _check_labels(rows: pd.DataFrame) -> None:
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


def customer_labels(rows: pd.DataFrame) -> pd.Series:
    """customer_id -> the label of the customer's newest row (by date, then id), sorted by
    customer: the stratum a customer is drawn in, its latest state being what it is now."""
    newest = rows.sort_values(["customer_id", "date", "id"], kind="stable")
    last = newest.drop_duplicates("customer_id", keep="last")
    return pd.Series(last[TARGET].to_numpy(), index=last["customer_id"].to_numpy())


def out_of_time_cutoff(dates: pd.Series, days: int) -> date | None:
    """The last day train and valid rows may have when test takes the window's last `days`
    days; None when `days` is 0 or no row lies on one side of that cut."""
    if days <= 0 or dates.empty:
        return None
    known = pd.to_datetime(dates).dt.date
    cutoff = max(known) - timedelta(days=days)
    if not (known <= cutoff).any():
        return None
    return cutoff


def _side_counts(customers: int, valid_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Test and valid customers for one label: its share of each, at least one each."""
    return (
        max(1, round(test_fraction * customers)),
        max(1, round(valid_fraction * customers)),
    )


def customer_draws(customers: pd.Index, seed: int) -> pd.Series:
    """A seeded pseudo-random number in [0, 1) per customer, fixed by its id alone.

    Each label's customers go to test, valid and train in the order of these draws, so a
    customer keeps its side in the overlapping windows of neighbouring partitions (only
    customers near a label's cut, or whose newest label changed, can move): a model of one
    day has hardly trained on the next day's test customers, and the champion can fairly be
    scored on a candidate's test rows.
    """
    values = [
        int.from_bytes(
            hashlib.blake2b(f"{seed}|{customer}".encode(), digest_size=8).digest(), "big"
        )
        / 2**64
        for customer in customers
    ]
    return pd.Series(values, index=customers, dtype="float64")


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
        "The partition's credit_score_features_target rows with a seeded train/valid/test "
        "`split` column, grouped by customer (no customer on two sides) and stratified by "
        "each customer's newest label; stored as Parquet, one file per partition."
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
    cutoff = out_of_time_cutoff(rows["date"], config.out_of_time_days)
    if cutoff is not None:
        method = f"grouped by customer, out of time: test rows dated after {cutoff}"
    elif config.out_of_time_days:
        method = (
            f"grouped by customer (out_of_time_days={config.out_of_time_days} asked, but the "
            f"window's rows span too few days for a cut: no out-of-time test)"
        )
        context.log.warning("%s: %s", base_dt, method)
    else:
        method = "grouped by customer"
    try:
        split = grouped_split(
            rows,
            config.valid_fraction,
            config.seed,
            test_fraction=config.test_fraction,
            min_test_rows=config.min_test_rows,
            test_after=cutoff,
        )
    except SplitError as error:
        raise Failure(
            description=f"cannot split {table} for base_dt {base_dt.isoformat()}: {error}",
            metadata={"partition": base_dt.isoformat(), "table": table, "rows": len(rows)},
        ) from error

    sizes = {side: int((split[SPLIT_COLUMN] == side).sum()) for side in SIDES}
    customers = {side: side_rows(split, side)["customer_id"].nunique() for side in SIDES}
    context.log.info(
        "split %s rows of %s (%s): %s train, %s valid, %s test",
        len(rows),
        base_dt,
        method,
        sizes[TRAIN],
        sizes[VALID],
        sizes[TEST],
    )
    preview = split.head(5)
    return Output(
        split,
        metadata={
            **{f"rows_{side}": MetadataValue.int(count) for side, count in sizes.items()},
            **{f"customers_{side}": MetadataValue.int(n) for side, n in customers.items()},
            "rows_left_out": MetadataValue.int(len(rows) - len(split)),
            "split_method": method,
            "label_distribution": MetadataValue.md(label_distribution_markdown(split)),
            "preview": MetadataValue.md(
                markdown_table(list(preview.columns), preview.itertuples(index=False))
            ),
            "valid_fraction": config.valid_fraction,
            "test_fraction": config.test_fraction,
            "seed": config.seed,
            "out_of_time_days": config.out_of_time_days,
            "table": table,
        },
    )
