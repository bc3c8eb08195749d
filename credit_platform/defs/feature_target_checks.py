"""Asset checks on `credit_score_features_target`: each reads the partition's rows in the store.

The decisions are pure functions of one profile of the partition (row count, label counts,
null counts per feature) that two aggregate queries read; one step reports all three.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    Config,
    MetadataValue,
    multi_asset_check,
)
from pydantic import Field
from sqlalchemy import Date, bindparam, case, func, select
from sqlalchemy.engine import Engine

from credit_platform.core.features import LABELS, MODEL_FEATURES, TARGET
from credit_platform.core.schema import credit_score_features_target
from credit_platform.defs.assets.feature_target import credit_score_features_target as asset
from credit_platform.defs.partitions import daily_partitions
from credit_platform.defs.resources.feature_store import FeatureStoreResource


@dataclass(frozen=True)
class PartitionProfile:
    """What the checks judge: the partition's rows, per label and per feature's nulls."""

    base_dt: date
    rows: int
    label_counts: dict[str, int]
    null_counts: dict[str, int]


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str


def profile_partition(engine: Engine, base_dt: date) -> PartitionProfile:
    """Counts of the base_dt rows, computed in the database (two aggregate queries)."""
    table = credit_score_features_target
    in_partition = table.c.base_dt == bindparam("base_dt", type_=Date)
    nulls = [
        func.sum(case((table.c[name].is_(None), 1), else_=0)).label(name) for name in MODEL_FEATURES
    ]
    with engine.connect() as connection:
        totals = (
            connection.execute(
                select(func.count().label("rows"), *nulls).where(in_partition),
                {"base_dt": base_dt},
            )
            .mappings()
            .one()
        )
        by_label = connection.execute(
            select(table.c[TARGET], func.count()).where(in_partition).group_by(table.c[TARGET]),
            {"base_dt": base_dt},
        ).all()
    return PartitionProfile(
        base_dt=base_dt,
        rows=int(totals["rows"]),
        label_counts={str(label): int(count) for label, count in by_label},
        null_counts={name: int(totals[name] or 0) for name in MODEL_FEATURES},
    )


def judge_rows(profile: PartitionProfile) -> Verdict:
    if profile.rows == 0:
        return Verdict(False, f"no rows with base_dt {profile.base_dt}")
    return Verdict(True, f"{profile.rows} rows with base_dt {profile.base_dt}")


def label_shares(profile: PartitionProfile) -> dict[str, float]:
    total = sum(profile.label_counts.values())
    return {
        label: (profile.label_counts.get(label, 0) / total if total else 0.0)
        for label in (*LABELS, *sorted(set(profile.label_counts) - set(LABELS)))
    }


def judge_label_mix(profile: PartitionProfile, max_share: float) -> Verdict:
    """Every label present, nothing else, and no label above max_share of the rows."""
    missing = [label for label in LABELS if profile.label_counts.get(label, 0) == 0]
    unknown = sorted(set(profile.label_counts) - set(LABELS))
    shares = label_shares(profile)
    problems = []
    if missing:
        problems.append(f"no {', '.join(missing)} rows")
    if unknown:
        problems.append(f"labels outside {', '.join(LABELS)}: {', '.join(unknown)}")
    dominant = [f"{label} {share:.1%}" for label, share in shares.items() if share > max_share]
    if dominant:
        problems.append(f"above the {max_share:.0%} share bound: {', '.join(dominant)}")
    mix = ", ".join(f"{label} {share:.1%}" for label, share in shares.items())
    if problems:
        return Verdict(False, "; ".join(problems) + f" (mix: {mix})")
    return Verdict(True, f"mix {mix}, each at most {max_share:.0%}")


def null_rates(profile: PartitionProfile) -> dict[str, float]:
    if profile.rows == 0:
        return {name: 0.0 for name in profile.null_counts}
    return {name: count / profile.rows for name, count in profile.null_counts.items()}


def judge_null_rates(profile: PartitionProfile, max_null_rate: float) -> Verdict:
    """No feature column more often null than max_null_rate."""
    if profile.rows == 0:
        return Verdict(False, f"no rows with base_dt {profile.base_dt} to measure")
    rates = null_rates(profile)
    above = {name: rate for name, rate in rates.items() if rate > max_null_rate}
    if above:
        listed = ", ".join(f"{name} {rate:.1%}" for name, rate in sorted(above.items()))
        return Verdict(False, f"null rate above {max_null_rate:.0%}: {listed}")
    worst = max(rates, key=rates.get)
    return Verdict(
        True,
        f"every feature at most {max_null_rate:.0%} null (highest {worst} {rates[worst]:.1%})",
    )


class FeatureTargetCheckConfig(Config):
    max_share: float = Field(
        default=0.8, gt=0, le=1, description="Largest share of the rows any one label may have."
    )
    max_null_rate: float = Field(
        default=0.5, ge=0, le=1, description="Largest share of nulls any feature column may have."
    )


def _spec(name: str, *, blocking: bool, description: str) -> AssetCheckSpec:
    return AssetCheckSpec(
        name,
        asset=asset,
        blocking=blocking,
        partitions_def=daily_partitions(),
        description=description,
    )


HAS_ROWS = "feature_target_has_rows"
LABEL_MIX = "feature_target_label_mix"
NULL_RATES = "feature_target_null_rates"
FEATURE_TARGET_CHECK_SPECS = (
    _spec(
        HAS_ROWS,
        blocking=True,
        description="The partition has rows (a later retention run may have removed them).",
    ),
    _spec(
        LABEL_MIX,
        blocking=True,
        description="Good, Standard and Poor are all present and no label exceeds max_share.",
    ),
    _spec(
        NULL_RATES,
        blocking=False,
        description="No feature column is null in more than max_null_rate of the rows.",
    ),
)


@multi_asset_check(
    specs=FEATURE_TARGET_CHECK_SPECS,
    name="feature_target_checks",
    description="Rows, label mix and null rates of the partition, from one profile query "
    "(one step for all three, so a run pays for one more process, not three).",
)
def feature_target_checks(
    context: AssetCheckExecutionContext,
    config: FeatureTargetCheckConfig,
    feature_store: FeatureStoreResource,
) -> Iterator[AssetCheckResult]:
    base_dt = date.fromisoformat(context.partition_key)
    with feature_store.engine() as engine:
        profile = profile_partition(engine, base_dt)
    yield _result(
        HAS_ROWS,
        judge_rows(profile),
        AssetCheckSeverity.ERROR,
        {"rows": MetadataValue.int(profile.rows), "base_dt": str(profile.base_dt)},
    )
    yield _result(
        LABEL_MIX,
        judge_label_mix(profile, config.max_share),
        AssetCheckSeverity.ERROR,
        {
            **{
                f"share_{label.lower()}": MetadataValue.float(share)
                for label, share in label_shares(profile).items()
            },
            **{
                f"rows_{label.lower()}": MetadataValue.int(profile.label_counts.get(label, 0))
                for label in LABELS
            },
            "max_share": MetadataValue.float(config.max_share),
        },
    )
    rates = null_rates(profile)
    table = "\n".join(
        ["| feature | null rate |", "| --- | ---: |"]
        + [f"| {name} | {rate:.1%} |" for name, rate in sorted(rates.items(), key=lambda i: -i[1])]
    )
    yield _result(
        NULL_RATES,
        judge_null_rates(profile, config.max_null_rate),
        AssetCheckSeverity.WARN,
        {
            "null_rates": MetadataValue.md(table),
            "max_observed_null_rate": MetadataValue.float(max(rates.values(), default=0.0)),
            "max_null_rate": MetadataValue.float(config.max_null_rate),
            "rows": MetadataValue.int(profile.rows),
        },
    )


def _result(
    name: str, verdict: Verdict, severity: AssetCheckSeverity, metadata: dict
) -> AssetCheckResult:
    return AssetCheckResult(
        check_name=name,
        passed=verdict.passed,
        severity=severity,
        description=verdict.reason,
        metadata={**metadata, "reason": verdict.reason},
    )
