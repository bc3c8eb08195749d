"""`model_monitoring`: how the served models did on one day, and its two checks.

For day D it reads the prediction log's rows of D in chunks, judges each prediction by the
customer's first label dated in [D, D + horizon] (see `core.monitoring`), compares the
requests' features with each model's drift reference (PSI; the distributions of its training
rows, stored with the model when it was trained), and writes one report per
(model version, role) to `credit_model_monitoring`, replacing the day. The checks read that
report back; neither blocks anything (monitoring must report even when it is bad news).
"""

import contextlib
from datetime import date, timedelta
from typing import Any

import pandas as pd
from dagster import (
    AllPartitionMapping,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetDep,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from credit_platform.core import settings
from credit_platform.core.db import create_tables
from credit_platform.core.model_store import DRIFT_REFERENCE_KEY, ModelNotFound, model_metadata
from credit_platform.core.monitoring import (
    ALL_VERSIONS,
    DRIFT_SKIPPED,
    FEATURE_PSI,
    LABELLED,
    LATENCY_PERCENTILES,
    LIVE_ACCURACY,
    LIVE_ECE,
    LIVE_MACRO_F1,
    MAX_FEATURE_PSI,
    PREDICTION_MIX_PSI,
    REQUESTS,
    SEGMENT_ACCURACY,
    SEGMENT_FLAGGED,
    SEGMENT_GOOD_RATE,
    SEGMENT_LABELLED,
    SEGMENT_SEPARATOR,
    TEST_ACCURACY,
    DayMonitor,
    DriftSkipped,
    ModelReference,
    first_labels,
    held_out_prediction_mix,
    latency_metric,
    profile_from_document,
    reference_profile,
)
from credit_platform.core.monitoring_store import (
    read_day,
    read_days,
    read_first_labels,
    read_log_chunks,
    read_training_rows,
    replace_day,
)
from credit_platform.core.monitoring_view import (
    SERVED_ROLE,
    VIEW_DAYS,
    VIEW_HEADERS,
    html_report,
    model_changes,
    overview_chart,
    role_totals,
    version_days,
    view_rows,
)
from credit_platform.core.schema import (
    MODEL_ROLES,
    MONITORING_ALL_ROLES,
    credit_model_monitoring,
    credit_predictions_api_log,
    credit_score,
)
from credit_platform.core.training import markdown_table
from credit_platform.defs.assets.deploy import DEPLOYED_BENTO_ASSET
from credit_platform.defs.catalog import ASSET_OWNERS, qualified_table_name, table_schema
from credit_platform.defs.partitions import daily_partitions
from credit_platform.defs.resources.fairness_policy import FairnessPolicyResource
from credit_platform.defs.resources.feature_store import FeatureStoreResource
from credit_platform.defs.resources.monitoring_policy import MonitoringPolicyResource

MODEL_MONITORING_ASSET = "model_monitoring"
DRIFT_CHECK = "model_monitoring_drift"
LIVE_ACCURACY_CHECK = "model_monitoring_live_accuracy"
FAIRNESS_CHECK = "model_monitoring_fairness"
# The checks judge the model of SERVED_ROLE, the one serving the traffic: shadow and canary
# models are reported, for a later comparison of challengers, but fail nothing.
TOP_DRIFTING = 10
# Check metadata naming the model versions that failed (the retrain sensor reads it).
FAILED_VERSIONS = "failed_model_versions"
# How a model's drift reference was obtained (the start of its `drift_reference` note).
PINNED_REFERENCE = "stored with the model at training"
REREAD_REFERENCE = "re-read from the source tables"
# Slack in comparisons, so 0.60 - 0.05 is not "below" 0.55.
_EPSILON = 1e-9


def model_reference(engine, tag: str) -> ModelReference | DriftSkipped:
    """What drift compares model `tag`'s requests with, or why that cannot be known: the
    reference stored with the model when it was trained; for a model saved before
    references were stored, its training partition re-read from the source tables (whose
    PSI can change as rows arrive; `source` says so)."""
    try:
        metadata = model_metadata(tag)
    except ModelNotFound:
        return DriftSkipped(f"{tag} is no longer in the BentoML model store")
    except Exception as error:  # a malformed tag in the log, a broken store entry
        return DriftSkipped(f"{tag} cannot be read from the BentoML store: {error}")
    partition = metadata.get("partition")
    accuracy = (metadata.get("metrics") or {}).get("test_accuracy")
    test_accuracy = float(accuracy) if isinstance(accuracy, int | float) else None
    stored = metadata.get(DRIFT_REFERENCE_KEY)
    if stored is not None:
        try:
            profile = profile_from_document(stored)
        except ValueError as error:
            return DriftSkipped(f"{tag}'s stored drift reference cannot be read: {error}")
        return ModelReference(
            profile=profile,
            test_accuracy=test_accuracy,
            partition=None if partition is None else str(partition),
            source=f"{PINNED_REFERENCE}: {profile.rows} training rows of partition {partition}",
        )
    try:
        partition_day = date.fromisoformat(str(partition))
    except ValueError:
        return DriftSkipped(f"{tag} names no training partition (metadata: {partition!r})")
    training = read_training_rows(engine, partition_day)
    if training.empty:
        return DriftSkipped(
            f"{tag} was trained on partition {partition}, whose labelled rows are no longer "
            "in the feature store"
        )
    return ModelReference(
        profile=reference_profile(training, held_out_prediction_mix(metadata)),
        test_accuracy=test_accuracy,
        partition=str(partition),
        source=(
            f"{REREAD_REFERENCE}: the model was saved without a drift reference, so partition "
            f"{partition}'s labelled rows were read from the source tables ({len(training)} "
            "rows); its PSI can change as rows for that window arrive"
        ),
    )


def reference_sources_markdown(references: dict[str, ModelReference | DriftSkipped]) -> str:
    """Which reference each model version's drift was measured against."""
    rows = [
        (version, reference.source)
        for version, reference in sorted(references.items())
        if isinstance(reference, ModelReference)
    ]
    return markdown_table(("model version", "drift reference"), rows)


def _value(report: pd.DataFrame, version: str, role: str, metric: str, feature: str = ""):
    rows = report[
        (report["model_version"] == version)
        & (report["role"] == role)
        & (report["metric"] == metric)
        & (report["feature"] == feature)
    ]
    if rows.empty or pd.isna(rows["value"].iloc[0]):
        return None
    return float(rows["value"].iloc[0])


def _groups(report: pd.DataFrame, *, roles: tuple[str, ...] | None = None) -> list[tuple[str, str]]:
    """(version, role) pairs of the report, busiest first; `roles` filters them."""
    requests = report[(report["metric"] == REQUESTS) & (report["model_version"] != ALL_VERSIONS)]
    if roles is not None:
        requests = requests[requests["role"].isin(roles)]
    requests = requests.sort_values("value", ascending=False, kind="stable")
    return list(zip(requests["model_version"], requests["role"], strict=True))


def _fmt(value: float | None, digits: int = 4) -> str:
    return "not yet known" if value is None else f"{value:.{digits}f}"


def summary_markdown(report: pd.DataFrame) -> str:
    rows = []
    for version, role in _groups(report):
        labelled = _value(report, version, role, LABELLED) or 0
        skipped = _value(report, version, role, DRIFT_SKIPPED)
        rows.append(
            (
                version,
                role,
                int(_value(report, version, role, REQUESTS) or 0),
                int(labelled),
                _fmt(_value(report, version, role, LIVE_ACCURACY)),
                _fmt(_value(report, version, role, LIVE_MACRO_F1)),
                _fmt(_value(report, version, role, TEST_ACCURACY)),
                "skipped" if skipped else _fmt(_value(report, version, role, MAX_FEATURE_PSI)),
                "skipped" if skipped else _fmt(_value(report, version, role, PREDICTION_MIX_PSI)),
            )
        )
    headers = (
        "model version",
        "role",
        "requests",
        "labelled",
        "live accuracy",
        "live macro F1",
        "test accuracy",
        "max feature PSI",
        "prediction mix PSI",
    )
    return markdown_table(headers, rows)


def top_drift_markdown(report: pd.DataFrame, threshold: float) -> str:
    drift = report[
        (report["metric"] == FEATURE_PSI)
        & (report["role"] != MONITORING_ALL_ROLES)
        & report["value"].notna()
    ].sort_values("value", ascending=False, kind="stable")
    rows = [
        (row.feature, row.model_version, row.role, float(row.value), row.value > threshold)
        for row in drift.head(TOP_DRIFTING).itertuples()
    ]
    return markdown_table(("feature", "model version", "role", "PSI", "above threshold"), rows)


def live_ece(report: pd.DataFrame, role: str) -> float | None:
    """The role's live ECE over its model versions, weighted by their labelled predictions
    (None when none of them has one)."""
    weighted, total = 0.0, 0
    for version, group_role in _groups(report, roles=(role,)):
        ece = _value(report, version, group_role, LIVE_ECE)
        labelled = int(_value(report, version, group_role, LABELLED) or 0)
        if ece is not None and labelled:
            weighted += ece * labelled
            total += labelled
    return weighted / total if total else None


def segment_rows(report: pd.DataFrame, version: str, role: str) -> list[tuple]:
    """(feature, segment, labelled, accuracy, rate of Good, flagged) of a group's segments."""
    rows = report[
        (report["model_version"] == version)
        & (report["role"] == role)
        & (report["metric"] == SEGMENT_LABELLED)
    ]
    table = []
    for name in rows["feature"]:
        feature, _, segment = str(name).partition(SEGMENT_SEPARATOR)
        flagged = _value(report, version, role, SEGMENT_FLAGGED, name)
        table.append(
            (
                feature,
                segment,
                int(_value(report, version, role, SEGMENT_LABELLED, name) or 0),
                _fmt(_value(report, version, role, SEGMENT_ACCURACY, name), 3),
                _fmt(_value(report, version, role, SEGMENT_GOOD_RATE, name), 3),
                "not judged (few labels)" if flagged is None else ("yes" if flagged else "no"),
            )
        )
    return table


def live_segments_markdown(report: pd.DataFrame, versions: list[str]) -> str:
    rows = [
        (version, *row)
        for version in versions
        for row in segment_rows(report, version, SERVED_ROLE)
    ]
    headers = ("model version", "feature", "segment", "labelled", "accuracy", "rate of Good")
    return markdown_table((*headers, "flagged"), rows)


def monitoring_metadata(
    report: pd.DataFrame, day: date, skipped: dict[str, str], threshold: float
) -> dict[str, Any]:
    """Float values under names stable across days, so the UI plots them over partitions:
    per role over every version that answered in it (on a hot-swap day the model swapped
    out counts too; `<role>_model_versions` is then 2), markdown tables for the details."""
    metadata: dict[str, Any] = {}
    for percentile in LATENCY_PERCENTILES:
        value = _value(report, ALL_VERSIONS, MONITORING_ALL_ROLES, latency_metric(percentile))
        if value is not None:
            metadata[latency_metric(percentile)] = MetadataValue.float(value)
    total = _value(report, ALL_VERSIONS, MONITORING_ALL_ROLES, REQUESTS) or 0
    metadata["requests"] = MetadataValue.int(int(total))
    day_view = version_days(report)
    for role in MODEL_ROLES:
        if not (day_view["role"] == role).any():
            continue
        totals = role_totals(day_view, role)
        metadata[f"{role}_model_version"] = str(totals["model_version"])
        metadata[f"{role}_model_versions"] = MetadataValue.int(int(totals["versions"] or 0))
        for metric in (REQUESTS, LABELLED):
            metadata[f"{role}_{metric}"] = MetadataValue.int(int(totals[metric] or 0))
        for metric in (LIVE_ACCURACY, LIVE_MACRO_F1, MAX_FEATURE_PSI, PREDICTION_MIX_PSI):
            value = totals[metric]
            metadata[f"{role}_{metric}"] = (
                MetadataValue.float(float(value)) if value is not None else MetadataValue.null()
            )
        ece = live_ece(report, role)
        metadata[f"{role}_{LIVE_ECE}"] = (
            MetadataValue.float(ece) if ece is not None else MetadataValue.null()
        )
    metadata["summary"] = MetadataValue.md(summary_markdown(report))
    served = [version for version, _ in _groups(report, roles=(SERVED_ROLE,))]
    if served:
        metadata["live_segments"] = MetadataValue.md(live_segments_markdown(report, served))
    metadata["top_drifting_features"] = MetadataValue.md(top_drift_markdown(report, threshold))
    if skipped:
        metadata["drift_skipped"] = MetadataValue.md(
            markdown_table(("model version", "why drift was not measured"), skipped.items())
        )
    metadata["dagster/row_count"] = MetadataValue.int(len(report))
    metadata["day"] = day.isoformat()
    return metadata


@asset(
    name=MODEL_MONITORING_ASSET,
    partitions_def=daily_partitions(),
    owners=ASSET_OWNERS,
    group_name="monitoring",
    kinds={"sql"},
    description=(
        "For day D: live accuracy and macro F1 of the logged predictions (each judged by the "
        "customer's first label dated in [D, D + horizon]), feature and prediction-mix drift "
        "(PSI) against the reference stored with each model at training, request volume and "
        "latency; per model version and role, written to credit_model_monitoring (the day "
        "replaced). A failed check makes retrain_sensor request continuous_training: the "
        "loop train -> deploy -> log -> monitor -> retrain."
    ),
    metadata={
        "dagster/table_name": credit_model_monitoring.name,
        "dagster/column_schema": table_schema(credit_model_monitoring),
    },
    # Lineage only (all three are read from the database and the instance): the log the
    # served models wrote, the labels that judge it, and the deployments, of any partition,
    # whose models answered.
    deps=[
        credit_predictions_api_log.name,
        credit_score.name,
        AssetDep(DEPLOYED_BENTO_ASSET, partition_mapping=AllPartitionMapping()),
    ],
)
def model_monitoring(
    context: AssetExecutionContext,
    feature_store: FeatureStoreResource,
    monitoring_policy: MonitoringPolicyResource,
    fairness_policy: FairnessPolicyResource,
) -> MaterializeResult:
    day = date.fromisoformat(context.partition_key)
    thresholds = monitoring_policy.policy
    horizon = thresholds.label_horizon_days
    policy = fairness_policy.policy
    with feature_store.engine() as engine:
        create_tables(engine)  # a store initialised before monitoring existed lacks the table
        labels = first_labels(read_first_labels(engine, day, horizon), day, horizon)
        monitor = DayMonitor(day, labels, lambda tag: model_reference(engine, tag), policy)
        with contextlib.closing(read_log_chunks(engine, day)) as chunks:
            for chunk in chunks:  # a failure stops the read-ahead at once
                monitor.add_chunk(chunk)
        rows = monitor.rows()
        replace_day(engine, day, rows)
        window = read_days(engine, day - timedelta(days=VIEW_DAYS - 1), day)
        table_name = qualified_table_name(feature_store.url, credit_model_monitoring)
    skipped = {
        version: reason.reason
        for version, reason in monitor.references.items()
        if isinstance(reason, DriftSkipped)
    }
    for version, reason in skipped.items():
        context.log.warning("drift of %s on %s not measured: %s", version, day, reason)
    report = pd.DataFrame(
        rows, columns=["day", "model_version", "role", "metric", "feature", "value"]
    )
    metadata = monitoring_metadata(report, day, skipped, thresholds.psi_threshold)
    metadata.update(monitored_days_report(window, day, thresholds.psi_threshold))
    metadata["dagster/table_name"] = table_name
    if any(isinstance(reference, ModelReference) for reference in monitor.references.values()):
        metadata["drift_reference"] = MetadataValue.md(
            reference_sources_markdown(monitor.references)
        )
    metadata["labels_in_window"] = MetadataValue.int(len(labels))
    metadata["label_horizon_days"] = MetadataValue.int(horizon)
    if not rows:
        note = f"no predictions were logged on {day}: the report of the day is empty"
        context.log.info(note)
        metadata["status"] = note
    else:
        metadata["status"] = f"{int(metadata['requests'].value)} predictions of {day} monitored"
    return MaterializeResult(metadata=metadata)


def monitored_days_report(window: pd.DataFrame, day: date, threshold: float) -> dict[str, Any]:
    """The view of the monitored days up to `day` (at most VIEW_DAYS back): a table row per
    day, model version and role with the model changes marked, and a chart of those days
    only, written with an HTML report under the platform home and linked by path."""
    view = version_days(window)
    if view.empty:
        return {}
    changes = model_changes(view)
    days = sorted(view["day"].unique())
    title = (
        f"model_monitoring: {len(days)} monitored day(s), {days[0]} to {days[-1]} "
        f"(window of {VIEW_DAYS} days ending {day})"
    )
    rows = view_rows(view, changes)
    notes = [change.text for change in changes] or ["no model change in these days"]
    metadata: dict[str, Any] = {
        # versions without the model name: the UI's metadata column is narrow
        "monitored_days": MetadataValue.md(
            f"{title}\n\n" + markdown_table(VIEW_HEADERS, view_rows(view, changes, short=True))
        ),
        "model_changes": "; ".join(notes),
    }
    chart = overview_chart(view, changes, threshold, title)
    folder = settings.monitoring_reports_dir()
    chart_path, report_path = folder / f"{day}.png", folder / f"{day}.html"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        chart_path.write_bytes(chart)
        report_path.write_text(html_report(title, chart, rows, notes))
    except OSError as error:  # the day's figures are stored already: report, do not fail
        metadata["report_not_written"] = f"{folder}: {error}"
        return metadata
    metadata["report"] = MetadataValue.path(str(report_path))
    metadata["chart"] = MetadataValue.path(str(chart_path))
    return metadata


def _served_groups(report: pd.DataFrame) -> list[str]:
    return [version for version, _ in _groups(report, roles=(SERVED_ROLE,))]


@asset_check(
    asset=model_monitoring,
    partitions_def=daily_partitions(),
    description="WARN when a feature or the prediction mix of the served (champion) model's "
    "requests drifted beyond the PSI threshold from its training rows (the reference stored "
    "with the model).",
)
def model_monitoring_drift(
    context: AssetCheckExecutionContext,
    feature_store: FeatureStoreResource,
    monitoring_policy: MonitoringPolicyResource,
) -> AssetCheckResult:
    day = date.fromisoformat(context.partition_key)
    threshold = monitoring_policy.policy.psi_threshold
    with feature_store.engine() as engine:
        report = read_day(engine, day)
    versions = _served_groups(report)
    drifted: list[tuple[str, str, float]] = []
    notes = []
    for version in versions:
        if _value(report, version, SERVED_ROLE, DRIFT_SKIPPED):
            notes.append(f"{version}: drift not measured (model not usable as a reference)")
            continue
        psis = report[
            (report["model_version"] == version)
            & (report["role"] == SERVED_ROLE)
            & (report["metric"] == FEATURE_PSI)
            & report["value"].notna()
        ]
        drifted += [
            (version, row.feature, float(row.value))
            for row in psis.itertuples()
            if row.value > threshold + _EPSILON
        ]
        mix = _value(report, version, SERVED_ROLE, PREDICTION_MIX_PSI)
        if mix is not None and mix > threshold + _EPSILON:
            drifted.append((version, "(prediction mix)", mix))
    drifted.sort(key=lambda item: -item[2])
    if not versions:
        description = f"no predictions of the served model were logged on {day}"
    elif drifted:
        description = f"{len(drifted)} PSI value(s) above {threshold}: " + ", ".join(
            f"{feature} {value:.3f} ({version})" for version, feature, value in drifted[:8]
        )
    else:
        description = f"no PSI above {threshold} for {', '.join(versions)}"
    if notes:
        description += "; " + "; ".join(notes)
    return AssetCheckResult(
        passed=not drifted,
        severity=AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "psi_threshold": MetadataValue.float(threshold),
            "model_versions": ", ".join(versions) or "none",
            "drifted": MetadataValue.md(
                markdown_table(("model version", "feature", "PSI"), drifted)
            ),
            "max_psi": MetadataValue.float(max((v for _, _, v in drifted), default=0.0)),
            FAILED_VERSIONS: ", ".join(dict.fromkeys(version for version, _, _ in drifted)),
        },
    )


@asset_check(
    asset=model_monitoring,
    partitions_def=daily_partitions(),
    description="ERROR when, with at least the minimum of labelled predictions, the served "
    "(champion) model's live accuracy is below its test accuracy by more than the tolerance.",
)
def model_monitoring_live_accuracy(
    context: AssetCheckExecutionContext,
    feature_store: FeatureStoreResource,
    monitoring_policy: MonitoringPolicyResource,
) -> AssetCheckResult:
    day = date.fromisoformat(context.partition_key)
    thresholds = monitoring_policy.policy
    tolerance, minimum = thresholds.accuracy_tolerance, thresholds.min_labelled
    with feature_store.engine() as engine:
        report = read_day(engine, day)
    versions = _served_groups(report)
    failures, notes, failed = [], [], []
    rows = []
    for version in versions:
        labelled = int(_value(report, version, SERVED_ROLE, LABELLED) or 0)
        live = _value(report, version, SERVED_ROLE, LIVE_ACCURACY)
        test = _value(report, version, SERVED_ROLE, TEST_ACCURACY)
        rows.append((version, labelled, _fmt(live), _fmt(test)))
        if labelled < minimum or live is None:
            notes.append(f"{version}: {labelled} labelled, fewer than {minimum}: not judged yet")
        elif test is None:
            notes.append(f"{version}: its test accuracy is unknown (not in the model store)")
        elif live + tolerance + _EPSILON < test:
            failed.append(version)
            failures.append(
                f"{version}: live accuracy {live:.4f} on {labelled} labelled predictions is "
                f"below its test accuracy {test:.4f} by more than {tolerance}"
            )
        else:
            notes.append(f"{version}: live accuracy {live:.4f} within {tolerance} of {test:.4f}")
    if not versions:
        notes.append(f"no predictions of the served model were logged on {day}")
    return AssetCheckResult(
        passed=not failures,
        severity=AssetCheckSeverity.ERROR,
        description="; ".join(failures + notes),
        metadata={
            "tolerance": MetadataValue.float(tolerance),
            "min_labelled": MetadataValue.int(minimum),
            "model_versions": ", ".join(versions) or "none",
            FAILED_VERSIONS: ", ".join(failed),
            "live_accuracy": MetadataValue.md(
                markdown_table(("model version", "labelled", "live", "test"), rows)
            ),
        },
    )


@asset_check(
    asset=model_monitoring,
    partitions_def=daily_partitions(),
    description="WARN when a segment of the served (champion) model's labelled predictions "
    "(age bands, occupation: CREDIT_FAIRNESS_SEGMENTS), with at least "
    "CREDIT_FAIRNESS_MIN_SEGMENT_ROWS of them, has a rate of Good below four fifths of the "
    "best segment's or an accuracy more than the gap below the whole's.",
)
def model_monitoring_fairness(
    context: AssetCheckExecutionContext,
    feature_store: FeatureStoreResource,
    fairness_policy: FairnessPolicyResource,
) -> AssetCheckResult:
    day = date.fromisoformat(context.partition_key)
    policy = fairness_policy.policy
    with feature_store.engine() as engine:
        report = read_day(engine, day)
    versions = _served_groups(report)
    flagged, judged, table = [], 0, []
    for version in versions:
        for row in segment_rows(report, version, SERVED_ROLE):
            table.append((version, *row))
            if row[-1] == "yes":
                flagged.append(f"{row[0]} {row[1]} of {version}")
            if row[-1] != "not judged (few labels)":
                judged += 1
    if not versions:
        description = f"no predictions of the served model were logged on {day}"
    elif flagged:
        description = (
            f"{len(flagged)} segment(s) break the four-fifths rule (ratio "
            f"{policy.min_rate_ratio:g}) or the accuracy gap ({policy.max_accuracy_gap:g}): "
            + ", ".join(flagged)
        )
    elif not judged:
        description = (
            f"no segment has {policy.min_segment_rows} labelled predictions yet: nothing judged"
        )
    else:
        description = f"{judged} segment(s) judged, none flagged"
    headers = ("model version", "feature", "segment", "labelled", "accuracy", "rate of Good")
    return AssetCheckResult(
        passed=not flagged,
        severity=AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "model_versions": ", ".join(versions) or "none",
            "segments": MetadataValue.md(markdown_table((*headers, "flagged"), table)),
            "flagged_segments": MetadataValue.int(len(flagged)),
            "judged_segments": MetadataValue.int(judged),
            "policy": MetadataValue.json(policy.document()),
        },
    )


MONITORING_CHECKS = (
    model_monitoring_drift,
    model_monitoring_live_accuracy,
    model_monitoring_fairness,
)
