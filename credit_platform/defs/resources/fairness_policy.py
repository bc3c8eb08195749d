"""The fairness rules as a Dagster resource.

The check on `credit_score_model`, the model card and `model_monitoring` compare the same
segments with the same thresholds.

Each field takes its variable through `EnvVar` (names and defaults in `core.settings`), kept
as text and parsed when read, like `MonitoringPolicyResource`; a malformed value fails
naming the variable.
"""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from credit_platform.core import settings
from credit_platform.core.fairness import FairnessPolicy


class FairnessPolicyResource(ConfigurableResource):
    """Segments and thresholds of the fairness rules (see README, Model quality)."""

    segments: str = Field(
        default_factory=lambda: ",".join(settings.fairness_segments()),
        description="Features whose segments are compared: age (in bands) and categorical "
        "features (by value), separated by commas.",
    )
    age_bands: str = Field(
        default_factory=lambda: ",".join(f"{edge:g}" for edge in settings.fairness_age_bands()),
        description="Edges between the age bands (25,40,60: under 25, 25-40, 40-60, 60 and over).",
    )
    min_rate_ratio: str = Field(
        default_factory=lambda: str(settings.fairness_min_rate_ratio()),
        description="Four-fifths rule: a segment's rate of Good must be at least this share "
        "of the best segment's.",
    )
    max_accuracy_gap: str = Field(
        default_factory=lambda: str(settings.fairness_max_accuracy_gap()),
        description="How far below the whole's accuracy a segment's accuracy may be.",
    )
    min_segment_rows: str = Field(
        default_factory=lambda: str(settings.fairness_min_segment_rows()),
        description="Rows a segment needs before the rules judge it (smaller ones are only "
        "reported).",
    )
    max_p_value: str = Field(
        default_factory=lambda: str(settings.fairness_max_p_value()),
        description="A shortfall flags a segment only when a one-sided two-proportion z-test "
        "gives at most this p-value divided by the number of tests (two per judged segment).",
    )

    @property
    def policy(self) -> FairnessPolicy:
        return FairnessPolicy(
            segments=settings.parse_segments(settings.FAIRNESS_SEGMENTS_ENV, self.segments),
            age_bands=settings.parse_band_edges(settings.FAIRNESS_AGE_BANDS_ENV, self.age_bands),
            min_rate_ratio=settings.parse_ratio(
                settings.FAIRNESS_MIN_RATE_RATIO_ENV, self.min_rate_ratio
            ),
            max_accuracy_gap=settings.parse_non_negative_number(
                settings.FAIRNESS_MAX_ACCURACY_GAP_ENV, self.max_accuracy_gap
            ),
            min_segment_rows=settings.parse_positive_int(
                settings.FAIRNESS_MIN_SEGMENT_ROWS_ENV, self.min_segment_rows
            ),
            max_p_value=settings.parse_ratio(settings.FAIRNESS_MAX_P_VALUE_ENV, self.max_p_value),
        )
