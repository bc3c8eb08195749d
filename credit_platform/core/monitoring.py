"""Model monitoring as pure computation: the label join, PSI, live metrics, one day's report.

No database and no Dagster here: `monitoring_store` reads the rows, `model_monitoring` (in
defs) runs it. The log is read in chunks; every chunk only adds to counts (bin counts per
feature, category counts, a confusion matrix, the latencies), so a day of a million rows
needs memory for the counts, not for the rows.

The label join: a prediction logged on day D for customer c is judged by c's *first* label
dated within [D, D + horizon days] (`first_labels`). Labels are dated by the day they
describe; a label dated before the prediction describes an older state and never judges it;
a customer without a label in the window leaves the prediction unlabelled (not yet known).

Live calibration: the labelled predictions' confidences (the probability of the answered
class, as the log holds it) are tallied in the bins of `core.calibration`, so the day's ECE
is computed from counts the way training reports it on the test rows. Live segments: with a
fairness policy, the labelled predictions are tallied per segment of customers as confusion
matrices (`core.fairness`), reported as accuracy, recall per class and rate of Good.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import orjson
import pandas as pd

from credit_platform.core.calibration import CALIBRATION_BINS
from credit_platform.core.fairness import (
    FairnessPolicy,
    SegmentKey,
    merge_confusions,
    segment_confusions,
    segment_table,
)
from credit_platform.core.features import (
    CATEGORICAL_FEATURES,
    LABELS,
    MODEL_FEATURES,
    NUMERIC_FEATURES,
    TARGET,
    TEXT_FEATURES,
)
from credit_platform.core.schema import MONITORING_ALL_ROLES

NUMERIC_BINS = 10
MISSING = "(missing)"
# Shares of empty bins are floored at this before the log in PSI (else one empty bin
# makes it infinite).
PSI_FLOOR = 1e-4
LATENCY_PERCENTILES = (50, 95, 99)
# A model version reported over all of the day's log rows (day totals).
ALL_VERSIONS = "all"

# Metric names of `credit_model_monitoring`.
REQUESTS = "requests"
LABELLED = "labelled"
LIVE_ACCURACY = "live_accuracy"
LIVE_MACRO_F1 = "live_macro_f1"
PREDICTION_SHARE = "prediction_share"
PREDICTION_MIX_PSI = "prediction_mix_psi"
FEATURE_PSI = "psi"
MAX_FEATURE_PSI = "max_psi"
TEST_ACCURACY = "model_test_accuracy"
DRIFT_SKIPPED = "drift_skipped"
UNREADABLE_FEATURES = "unreadable_features"
LIVE_ECE = "live_ece"
# per segment (feature "<segment feature>=<segment>"): labelled predictions, accuracy,
# rate of Good, recall of each class, and 1 when the fairness rules flag it (0 when they
# judged it and found nothing, NULL when it has too few labels to judge)
SEGMENT_LABELLED = "segment_labelled"
SEGMENT_ACCURACY = "segment_accuracy"
SEGMENT_GOOD_RATE = "segment_good_rate"
SEGMENT_FLAGGED = "segment_flagged"
SEGMENT_SEPARATOR = "="


def segment_recall_metric(label: str) -> str:
    return f"segment_recall_{label}"


def segment_feature_name(feature: str, segment: str) -> str:
    """The report's `feature` of a segment, such as "age=under 25"."""
    return f"{feature}{SEGMENT_SEPARATOR}{segment}"[:128]


def latency_metric(percentile: int) -> str:
    return f"latency_p{percentile}_ms"


# --- the label join ------------------------------------------------------------------------


def label_window(day: date, horizon_days: int) -> tuple[date, date]:
    """The label dates that can judge a prediction of `day`: [day, day + horizon]."""
    return day, day + timedelta(days=horizon_days)


def first_labels(labels: pd.DataFrame, day: date, horizon_days: int) -> pd.Series:
    """customer_id -> the label that judges that customer's predictions of `day`: the
    customer's earliest label dated within the window (ties on a date: the first row)."""
    first, last = label_window(day, horizon_days)
    dates = pd.to_datetime(labels["date"]).dt.date
    inside = labels[(dates >= first) & (dates <= last)].assign(_date=dates)
    inside = inside[inside[TARGET].isin(LABELS)]
    inside = inside.sort_values("_date", kind="stable").drop_duplicates("customer_id")
    return pd.Series(inside[TARGET].to_numpy(), index=inside["customer_id"].to_numpy())


# --- PSI -------------------------------------------------------------------------------------


def psi(expected: Mapping[Any, float], actual: Mapping[Any, float]) -> float | None:
    """Population stability index of `actual` counts against `expected` counts over the union
    of their bins: sum over bins of (a - e) * ln(a / e) on shares floored at PSI_FLOOR.
    None when either side has no count at all (nothing to compare)."""
    keys = list(dict.fromkeys([*expected, *actual]))
    e = np.array([float(expected.get(key, 0)) for key in keys])
    a = np.array([float(actual.get(key, 0)) for key in keys])
    if e.sum() <= 0 or a.sum() <= 0:
        return None
    e = np.maximum(e / e.sum(), PSI_FLOOR)
    a = np.maximum(a / a.sum(), PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def quantile_edges(values: np.ndarray, bins: int = NUMERIC_BINS) -> np.ndarray:
    """Interior cut points at the reference's quantiles (duplicates merged, so a feature
    with few distinct values gets fewer bins); empty when no value is known."""
    known = values[np.isfinite(values)]
    if known.size == 0:
        return np.array([], dtype=float)
    # observed values as edges (no interpolation): a count feature's bins fall between counts
    cuts = np.quantile(known, np.linspace(0, 1, bins + 1)[1:-1], method="inverted_cdf")
    return np.unique(cuts)


def numeric_bin_counts(values: np.ndarray, edges: np.ndarray) -> dict[Any, int]:
    """Counts per quantile bin (bin i: edges[i-1] < v <= edges[i]), and of missing values."""
    known = np.isfinite(values)
    bins = np.searchsorted(edges, values[known], side="left")
    counts = np.bincount(bins, minlength=len(edges) + 1)
    result: dict[Any, int] = {int(index): int(count) for index, count in enumerate(counts)}
    result[MISSING] = int((~known).sum())
    return result


def loan_types(listing: Any) -> list[str]:
    """The loan types of a type_of_loan text ("Auto Loan, and Payday Loan")."""
    if not isinstance(listing, str) or not listing.strip():
        return []
    parts = (part.strip() for part in listing.split(","))
    return [part[4:].strip() if part.startswith("and ") else part for part in parts if part]


def category_counts(name: str, values: Iterable[Any]) -> dict[Any, int]:
    """Counts of each category of feature `name` (None counted as MISSING); type_of_loan
    counts each loan type a row lists (a row listing none counts as MISSING). Distinct
    values are counted first, so a day's rows cost one pass."""
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype="object")
    try:
        distinct = series.value_counts(dropna=False)
    except TypeError:  # an unhashable value (a list, an object) where a category belongs
        distinct = series.map(lambda v: v if v is None or isinstance(v, str) else str(v))
        distinct = distinct.value_counts(dropna=False)
    result: dict[Any, int] = {}
    for value, count in distinct.items():
        if value is None or (isinstance(value, float) and np.isnan(value)):
            keys = [MISSING]
        elif name == "type_of_loan":
            keys = loan_types(value) or [MISSING]
        else:
            keys = [str(value)]
        for key in keys:
            result[key] = result.get(key, 0) + int(count)
    return result


def _add(into: dict[Any, int], counts: Mapping[Any, int]) -> None:
    for key, count in counts.items():
        into[key] = into.get(key, 0) + count


# --- live quality --------------------------------------------------------------------------


def quality_from_confusion(confusion: np.ndarray) -> tuple[int, float | None, float | None]:
    """(labelled, accuracy, macro F1) of a LABELS x LABELS confusion matrix (rows: truth,
    columns: prediction). Macro F1 over the three labels, 0 for a label with no true or
    predicted row, as training reports it; accuracy and F1 None when nothing is labelled."""
    labelled = int(confusion.sum())
    if labelled == 0:
        return 0, None, None
    hits = np.diag(confusion).astype(float)
    accuracy = float(hits.sum() / labelled)
    denominators = confusion.sum(axis=0) + confusion.sum(axis=1)
    f1 = np.divide(2 * hits, denominators, out=np.zeros_like(hits), where=denominators > 0)
    return labelled, accuracy, float(f1.mean())


# --- the reference: what the served model was trained on --------------------------------


@dataclass(frozen=True)
class ReferenceProfile:
    """What a model was trained on, as drift needs it: bin edges and counts per numeric
    feature, category counts, and the prediction mix it gave on its test rows."""

    rows: int
    edges: dict[str, np.ndarray]
    counts: dict[str, dict[Any, int]]
    prediction_mix: dict[str, float]


def reference_profile(
    frame: pd.DataFrame, prediction_mix: Mapping[str, float] | None = None
) -> ReferenceProfile:
    """The profile of the training rows; the prediction mix defaults to their label mix."""
    edges, counts = {}, {}
    for name in NUMERIC_FEATURES:
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)
        edges[name] = quantile_edges(values)
        counts[name] = numeric_bin_counts(values, edges[name])
    for name in (*CATEGORICAL_FEATURES, *TEXT_FEATURES):
        counts[name] = category_counts(name, frame[name])
    if prediction_mix is None and TARGET in frame:
        prediction_mix = frame[TARGET].value_counts().to_dict()
    return ReferenceProfile(
        rows=len(frame),
        edges=edges,
        counts=counts,
        prediction_mix={str(k): float(v) for k, v in (prediction_mix or {}).items()},
    )


# Version of the stored form of a ReferenceProfile (`profile_document`).
PROFILE_FORMAT = 1


def profile_document(profile: ReferenceProfile) -> dict[str, Any]:
    """The profile as plain JSON types, to be stored with the model it describes (MLflow
    artifact, BentoML metadata): bin keys become text, edges lists of floats."""
    numeric, categories = _profiled(profile)
    return {
        "format": PROFILE_FORMAT,
        "rows": int(profile.rows),
        # The features profiled (those declared when the model was trained); a reference
        # without this list holds the features of its sections.
        "features": [*numeric, *categories],
        "numeric": {
            name: {
                "edges": [float(edge) for edge in profile.edges[name]],
                "counts": {str(key): int(count) for key, count in profile.counts[name].items()},
            }
            for name in numeric
        },
        "categories": {
            name: {str(key): int(count) for key, count in profile.counts[name].items()}
            for name in categories
        },
        "prediction_mix": {str(k): float(v) for k, v in profile.prediction_mix.items()},
    }


def _profiled(profile: ReferenceProfile) -> tuple[list[str], list[str]]:
    """The declared numeric and the other features a profile holds, in model order: a
    model's reference covers the features of its training, not those declared since."""
    numeric = [name for name in NUMERIC_FEATURES if name in profile.edges]
    others = [name for name in (*CATEGORICAL_FEATURES, *TEXT_FEATURES) if name in profile.counts]
    return numeric, others


def profile_from_document(document: Mapping[str, Any]) -> ReferenceProfile:
    """The profile a `profile_document` holds; ValueError naming what is wrong otherwise
    (another format, a listed feature missing, a count that is no number). Features
    declared after the reference was stored are not in it, and need not be; one no longer
    declared is left out."""
    if not isinstance(document, Mapping) or document.get("format") != PROFILE_FORMAT:
        found = document.get("format") if isinstance(document, Mapping) else type(document)
        raise ValueError(f"not a drift reference of format {PROFILE_FORMAT} (found {found!r})")
    try:
        listed = document.get("features")
        if listed is None:
            listed = [*document["numeric"], *document["categories"]]
        listed = set(listed)
        edges, counts = {}, {}
        for name in NUMERIC_FEATURES:
            if name not in listed:
                continue
            stored = document["numeric"][name]
            edges[name] = np.asarray([float(edge) for edge in stored["edges"]], dtype=float)
            counts[name] = {
                key if key == MISSING else int(key): int(count)
                for key, count in stored["counts"].items()
            }
        for name in (*CATEGORICAL_FEATURES, *TEXT_FEATURES):
            if name not in listed:
                continue
            counts[name] = {
                str(key): int(count) for key, count in document["categories"][name].items()
            }
        mix = {str(key): float(value) for key, value in document["prediction_mix"].items()}
        return ReferenceProfile(
            rows=int(document["rows"]), edges=edges, counts=counts, prediction_mix=mix
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"malformed drift reference: {error!r}") from error


def confusion_prediction_mix(confusion: Any) -> dict[str, float] | None:
    """How often each label was predicted in a confusion document ({"labels", "rows"}:
    the column sums), or None when it is not one."""
    if not isinstance(confusion, Mapping) or "labels" not in confusion or "rows" not in confusion:
        return None
    try:
        columns = np.asarray(confusion["rows"], dtype=float).sum(axis=0)
    except (TypeError, ValueError):  # ragged or non-numeric rows
        return None
    labels = list(confusion["labels"])
    if columns.ndim != 1 or len(columns) != len(labels):
        return None
    return {str(label): float(count) for label, count in zip(labels, columns, strict=True)}


def held_out_prediction_mix(model_metadata: Mapping[str, Any]) -> dict[str, float] | None:
    """How often the model predicted each label on its test rows (the confusion matrix's
    column sums), or None when the model was saved without a confusion matrix."""
    return confusion_prediction_mix(
        (model_metadata.get("metrics") or {}).get("test_confusion_matrix")
    )


# --- one day's report, accumulated chunk by chunk ------------------------------------------


# A decoded log chunk, as `DayMonitor.add_chunk` takes it: the log's columns, one column
# per model feature (numbers as float64) and whether the row's features were readable.
LOG_FIELDS = ("customer_id", "prediction", "confidence", "elapsed_ms", "model_version", "role")
UNREADABLE = "features_unreadable"
DECODED_LOG_COLUMNS = (*LOG_FIELDS, *MODEL_FEATURES, UNREADABLE)


def features_frame(values: Iterable[Any]) -> tuple[pd.DataFrame, np.ndarray]:
    """The log's features as one column per model feature (numbers as float64, a value that
    is no number made missing), and which rows held no readable JSON object (counted; their
    features are missing). `values` are the column's JSON texts or decoded objects."""
    records: list[dict[str, Any]] = []
    unreadable: list[bool] = []
    for value in values:
        if isinstance(value, dict):
            record = value
        elif not isinstance(value, str | bytes):
            record = None
        else:
            try:
                record = orjson.loads(value)
            except orjson.JSONDecodeError:
                record = None
        readable = isinstance(record, dict)
        unreadable.append(not readable)
        records.append(record if readable else {})
    frame = pd.DataFrame(records, columns=list(MODEL_FEATURES), index=range(len(records)))
    for name in MODEL_FEATURES:
        if name in NUMERIC_FEATURES:
            frame[name] = _floats(frame[name])
        else:  # objects, a missing value as None (a column of nothing but nulls included)
            column = frame[name].astype(object)
            frame[name] = column.where(column.notna(), None)
    return frame, np.array(unreadable, dtype=bool)


def decode_log_chunk(raw: pd.DataFrame) -> pd.DataFrame:
    """Log rows with a `features` column (JSON texts or decoded objects) as a decoded
    chunk (`DECODED_LOG_COLUMNS`)."""
    raw = raw.reset_index(drop=True)
    if "confidence" not in raw.columns:  # rows read without it have no live calibration
        raw = raw.assign(confidence=np.nan)
    features, unreadable = features_frame(raw["features"])
    decoded = pd.concat([raw[list(LOG_FIELDS)], features], axis=1)
    decoded[UNREADABLE] = unreadable
    return decoded[list(DECODED_LOG_COLUMNS)]


def _floats(column: pd.Series) -> pd.Series:
    """A column as float64: missing, non-finite and non-numeric values (a text, a list, a
    boolean) become NaN."""
    if column.dtype.kind in "fi":
        return column.astype("float64")
    numeric = column.map(lambda value: value if type(value) in (int, float) else np.nan)
    return numeric.astype("float64")


@dataclass
class GroupTally:
    """Running counts of one (model version, role) group."""

    requests: int = 0
    unreadable: int = 0
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((3, 3), dtype=np.int64))
    predictions: dict[str, int] = field(default_factory=dict)
    latencies: list[np.ndarray] = field(default_factory=list)
    feature_counts: dict[str, dict[Any, int]] = field(default_factory=dict)
    # labelled predictions per confidence bin: rows, summed confidence, rows answered right
    calibration: np.ndarray = field(default_factory=lambda: np.zeros((3, CALIBRATION_BINS)))
    segments: dict[SegmentKey, np.ndarray] = field(default_factory=dict)

    def merge(self, other: GroupTally) -> None:
        self.requests += other.requests
        self.unreadable += other.unreadable
        self.confusion += other.confusion
        self.calibration += other.calibration
        merge_confusions(self.segments, other.segments)
        _add(self.predictions, other.predictions)
        self.latencies.extend(other.latencies)
        for name, counts in other.feature_counts.items():
            _add(self.feature_counts.setdefault(name, {}), counts)


@dataclass(frozen=True)
class DriftSkipped:
    """Why a model version's drift could not be measured (e.g. no longer in the store)."""

    reason: str


@dataclass(frozen=True)
class ModelReference:
    """A served model as monitoring needs it: its training profile and test accuracy, and
    where that profile came from (`source`: stored with the model, or re-read)."""

    profile: ReferenceProfile
    test_accuracy: float | None
    partition: str | None
    source: str = ""


_LABEL_INDEX = {label: index for index, label in enumerate(LABELS)}


class DayMonitor:
    """Accumulates one day's log chunks into per-(version, role) tallies."""

    def __init__(
        self,
        day: date,
        labels: pd.Series,
        reference_for: Callable[[str], ModelReference | DriftSkipped],
        policy: FairnessPolicy | None = None,
    ) -> None:
        self.day = day
        self.policy = policy
        self.labels = labels
        self.reference_for = reference_for
        # each model version's reference, looked up once, when its first row is seen
        self.references: dict[str, ModelReference | DriftSkipped] = {}
        self.tallies: dict[tuple[str, str], GroupTally] = {}

    def reference(self, version: str) -> ModelReference | DriftSkipped:
        if version not in self.references:
            self.references[version] = self.reference_for(version)
        return self.references[version]

    def add_chunk(self, chunk: pd.DataFrame) -> None:
        """Add a decoded log chunk (`DECODED_LOG_COLUMNS`, see `decode_log_chunk`)."""
        if chunk.empty:
            return
        chunk = chunk.reset_index(drop=True)
        features = chunk[list(MODEL_FEATURES)]
        unreadable = chunk[UNREADABLE].to_numpy(dtype=bool)
        truth = chunk["customer_id"].map(self.labels)
        truth_index = truth.map(_LABEL_INDEX)
        predicted_index = chunk["prediction"].map(_LABEL_INDEX)
        confidence = pd.to_numeric(chunk["confidence"], errors="coerce").to_numpy(dtype=float)
        elapsed = pd.to_numeric(chunk["elapsed_ms"], errors="coerce").to_numpy(dtype=float)
        version_codes, versions = pd.factorize(chunk["model_version"].fillna("(none)"))
        role_codes, roles = pd.factorize(chunk["role"].fillna("(none)"))
        group_codes = version_codes * len(roles) + role_codes
        for code in np.unique(group_codes):
            version, role = versions[code // len(roles)], roles[code % len(roles)]
            positions = np.flatnonzero(group_codes == code)
            tally = GroupTally(requests=len(positions))
            tally.unreadable = int(unreadable[positions].sum())
            known = truth_index.iloc[positions].notna() & predicted_index.iloc[positions].notna()
            pairs = np.stack(
                [
                    truth_index.iloc[positions][known].to_numpy(dtype=int),
                    predicted_index.iloc[positions][known].to_numpy(dtype=int),
                ]
            )
            np.add.at(tally.confusion, (pairs[0], pairs[1]), 1)
            labelled = positions[known.to_numpy()]
            tally.calibration = calibration_counts(confidence[labelled], pairs[0] == pairs[1])
            if self.policy is not None and len(labelled):
                tally.segments = segment_confusions(
                    features.iloc[labelled],
                    truth.iloc[labelled].to_numpy(),
                    chunk["prediction"].iloc[labelled].to_numpy(),
                    self.policy,
                )
            shares = chunk["prediction"].iloc[positions].value_counts()
            tally.predictions = {str(label): int(count) for label, count in shares.items()}
            tally.latencies.append(elapsed[positions])
            reference = self.reference(str(version))
            if isinstance(reference, ModelReference):
                tally.feature_counts = _feature_counts(features.iloc[positions], reference.profile)
            key = (str(version), str(role))
            self.tallies.setdefault(key, GroupTally()).merge(tally)

    def rows(self) -> list[dict[str, Any]]:
        """The day's report as `credit_model_monitoring` rows (day, model_version, role,
        metric, feature, value): every (version, role) group, every version over all its
        roles (role "all"), and the day's totals (version "all", role "all")."""
        groups: dict[tuple[str, str], GroupTally] = {}
        for (version, role), tally in sorted(self.tallies.items()):
            groups[(version, role)] = tally
            groups.setdefault((version, MONITORING_ALL_ROLES), GroupTally()).merge(tally)
        report: list[dict[str, Any]] = []
        for (version, role), tally in groups.items():
            report.extend(self._group_rows(version, role, tally))
        if groups:
            total = GroupTally()
            for (_, role), tally in groups.items():
                if role == MONITORING_ALL_ROLES:
                    total.merge(tally)
            report.extend(self._volume_rows(ALL_VERSIONS, MONITORING_ALL_ROLES, total))
        return report

    def _row(self, version: str, role: str, metric: str, value: Any, feature: str = "") -> dict:
        return {
            "day": self.day,
            "model_version": version,
            "role": role,
            "metric": metric,
            "feature": feature,
            "value": None if value is None else float(value),
        }

    def _volume_rows(self, version: str, role: str, tally: GroupTally) -> list[dict[str, Any]]:
        rows = [self._row(version, role, REQUESTS, tally.requests)]
        latencies = np.concatenate(tally.latencies) if tally.latencies else np.array([])
        latencies = latencies[np.isfinite(latencies)]
        for percentile in LATENCY_PERCENTILES:
            value = float(np.percentile(latencies, percentile)) if latencies.size else None
            rows.append(self._row(version, role, latency_metric(percentile), value))
        if tally.unreadable:
            rows.append(self._row(version, role, UNREADABLE_FEATURES, tally.unreadable))
        return rows

    def _group_rows(self, version: str, role: str, tally: GroupTally) -> list[dict[str, Any]]:
        rows = self._volume_rows(version, role, tally)
        labelled, accuracy, macro_f1 = quality_from_confusion(tally.confusion)
        rows += [
            self._row(version, role, LABELLED, labelled),
            self._row(version, role, LIVE_ACCURACY, accuracy),
            self._row(version, role, LIVE_MACRO_F1, macro_f1),
            self._row(version, role, LIVE_ECE, ece_from_counts(tally.calibration)),
        ]
        rows += self._segment_rows(version, role, tally)
        for label in LABELS:
            share = tally.predictions.get(label, 0) / tally.requests if tally.requests else None
            rows.append(self._row(version, role, PREDICTION_SHARE, share, label))
        reference = self.reference(version)
        if not isinstance(reference, ModelReference):
            rows.append(self._row(version, role, DRIFT_SKIPPED, 1))
            return rows
        if reference.test_accuracy is not None:
            rows.append(self._row(version, role, TEST_ACCURACY, reference.test_accuracy))
        mix = psi(reference.profile.prediction_mix, tally.predictions)
        rows.append(self._row(version, role, PREDICTION_MIX_PSI, mix))
        values = []
        for name in (*NUMERIC_FEATURES, *CATEGORICAL_FEATURES, *TEXT_FEATURES):
            if name not in reference.profile.counts:
                continue  # declared after the model was trained
            value = psi(reference.profile.counts[name], tally.feature_counts.get(name, {}))
            rows.append(self._row(version, role, FEATURE_PSI, value, name))
            if value is not None:
                values.append(value)
        rows.append(self._row(version, role, MAX_FEATURE_PSI, max(values) if values else None))
        return rows

    def _segment_rows(self, version: str, role: str, tally: GroupTally) -> list[dict[str, Any]]:
        if self.policy is None or not tally.segments:
            return []
        rows = []
        for entry in segment_table(tally.segments, self.policy):
            name = segment_feature_name(entry["feature"], entry["segment"])
            values = {
                SEGMENT_LABELLED: entry["rows"],
                SEGMENT_ACCURACY: entry["accuracy"],
                SEGMENT_GOOD_RATE: entry["good_rate"],
                **{segment_recall_metric(label): entry[f"recall_{label}"] for label in LABELS},
                # NULL for a segment with too few labels to judge
                SEGMENT_FLAGGED: (1 if entry["flags"] else 0) if entry["judged"] else None,
            }
            rows += [
                self._row(version, role, metric, value, name) for metric, value in values.items()
            ]
        return rows


def calibration_counts(confidence: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Per confidence bin (as `core.calibration.reliability_bins` cuts them): rows, summed
    confidence and rows answered right; a confidence that is missing or outside [0, 1] is
    left out."""
    counts = np.zeros((3, CALIBRATION_BINS))
    confidence = np.asarray(confidence, dtype=float)
    usable = np.isfinite(confidence) & (confidence >= 0) & (confidence <= 1)
    confidence, correct = confidence[usable], np.asarray(correct, dtype=float)[usable]
    index = np.clip((confidence * CALIBRATION_BINS).astype(int), 0, CALIBRATION_BINS - 1)
    np.add.at(counts[0], index, 1)
    np.add.at(counts[1], index, confidence)
    np.add.at(counts[2], index, correct)
    return counts


def ece_from_counts(counts: np.ndarray) -> float | None:
    """The ECE of `calibration_counts` (None when no labelled prediction has a confidence)."""
    rows = counts[0]
    total = rows.sum()
    if not total:
        return None
    filled = rows > 0
    gaps = np.abs(counts[1][filled] / rows[filled] - counts[2][filled] / rows[filled])
    return float((rows[filled] * gaps).sum() / total)


def _feature_counts(features: pd.DataFrame, profile: ReferenceProfile) -> dict[str, dict]:
    counts = {}
    numeric, others = _profiled(profile)
    for name in numeric:
        counts[name] = numeric_bin_counts(features[name].to_numpy(dtype=float), profile.edges[name])
    for name in others:
        counts[name] = category_counts(name, features[name])
    return counts
