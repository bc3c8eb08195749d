"""The monitoring's thresholds as a Dagster resource: the drift and accuracy checks and the
retrain and rollback sensors read the same values.

Each field takes its variable through `EnvVar` (names and defaults in `core.settings`).
Values are kept as the variable's text and parsed when read, because Dagster's `EnvVar`
fills text fields only; a malformed value fails naming the variable.
"""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from credit_platform.core import settings


class MonitoringPolicyResource(ConfigurableResource):
    """Thresholds of model monitoring (see README, Model monitoring)."""

    psi_threshold: str = Field(
        default_factory=lambda: str(settings.monitoring_psi_threshold()),
        description="PSI above which a feature or the prediction mix has drifted (WARN).",
    )
    accuracy_tolerance: str = Field(
        default_factory=lambda: str(settings.monitoring_accuracy_tolerance()),
        description="How far live accuracy may fall below the model's test accuracy.",
    )
    min_labelled: str = Field(
        default_factory=lambda: str(settings.monitoring_min_labelled()),
        description="Labelled predictions a day needs before live accuracy is judged.",
    )
    label_horizon_days: str = Field(
        default_factory=lambda: str(settings.monitoring_label_horizon_days()),
        description="A prediction of day D is judged by its customer's first label in "
        "[D, D + this many days].",
    )
    retrain_cooldown_seconds: str = Field(
        default_factory=lambda: str(settings.retrain_cooldown_seconds()),
        description="Least time between two retraining runs of the retrain sensor.",
    )
    rollback_tolerance: str = Field(
        default_factory=lambda: str(settings.rollback_tolerance()),
        description="How much worse than its predecessor (same days) a new model may be.",
    )
    rollback_min_labelled: str = Field(
        default_factory=lambda: str(settings.rollback_min_labelled()),
        description="Labelled predictions each model needs on the shared days to compare.",
    )

    @property
    def psi(self) -> float:
        return settings.parse_non_negative_number(
            settings.MONITORING_PSI_THRESHOLD_ENV, self.psi_threshold
        )

    @property
    def tolerance(self) -> float:
        return settings.parse_non_negative_number(
            settings.MONITORING_ACCURACY_TOLERANCE_ENV, self.accuracy_tolerance
        )

    @property
    def min_labels(self) -> int:
        return settings.parse_positive_int(settings.MONITORING_MIN_LABELLED_ENV, self.min_labelled)

    @property
    def horizon_days(self) -> int:
        return settings.parse_positive_int(
            settings.MONITORING_LABEL_HORIZON_DAYS_ENV, self.label_horizon_days
        )

    @property
    def cooldown_seconds(self) -> int:
        return settings.parse_positive_int(
            settings.RETRAIN_COOLDOWN_SECONDS_ENV, self.retrain_cooldown_seconds
        )

    @property
    def rollback_gap(self) -> float:
        return settings.parse_non_negative_number(
            settings.ROLLBACK_TOLERANCE_ENV, self.rollback_tolerance
        )

    @property
    def rollback_min_labels(self) -> int:
        return settings.parse_positive_int(
            settings.ROLLBACK_MIN_LABELLED_ENV, self.rollback_min_labelled
        )
