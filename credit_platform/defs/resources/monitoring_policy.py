"""The monitoring's thresholds as a Dagster resource.

The drift and accuracy checks and the retrain, rollback and challenger sensors judge by
the same values.

Each field takes its variable through `EnvVar` (names and defaults in `core.settings`) and
holds its text, since `EnvVar` fills text fields only; `policy` gives the parsed numbers
under the same names, and a malformed value fails naming its variable.
"""

from __future__ import annotations

from dataclasses import dataclass

from dagster import ConfigurableResource
from pydantic import Field

from credit_platform.core import settings


@dataclass(frozen=True)
class MonitoringPolicy:
    """The thresholds as numbers, each under the name of the resource field it comes from
    (its variable is that name in capitals under CREDIT_, with MONITORING_ for the first
    four)."""

    psi_threshold: float
    accuracy_tolerance: float
    min_labelled: int
    label_horizon_days: int
    retrain_cooldown_seconds: int
    rollback_tolerance: float
    rollback_min_labelled: int
    challenger_margin: float
    challenger_min_labelled: int


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

    challenger_margin: str = Field(
        default_factory=lambda: str(settings.challenger_margin()),
        description="How much better (worse) a challenger must be to be promoted (detached).",
    )
    challenger_min_labelled: str = Field(
        default_factory=lambda: str(settings.challenger_min_labelled()),
        description="Labelled predictions the challenger and the champion each need.",
    )

    @property
    def policy(self) -> MonitoringPolicy:
        """Every threshold parsed, under its field's name; a malformed one fails naming its
        variable."""
        return MonitoringPolicy(
            psi_threshold=settings.parse_non_negative_number(
                settings.MONITORING_PSI_THRESHOLD_ENV, self.psi_threshold
            ),
            accuracy_tolerance=settings.parse_non_negative_number(
                settings.MONITORING_ACCURACY_TOLERANCE_ENV, self.accuracy_tolerance
            ),
            min_labelled=settings.parse_positive_int(
                settings.MONITORING_MIN_LABELLED_ENV, self.min_labelled
            ),
            label_horizon_days=settings.parse_positive_int(
                settings.MONITORING_LABEL_HORIZON_DAYS_ENV, self.label_horizon_days
            ),
            retrain_cooldown_seconds=settings.parse_positive_int(
                settings.RETRAIN_COOLDOWN_SECONDS_ENV, self.retrain_cooldown_seconds
            ),
            rollback_tolerance=settings.parse_non_negative_number(
                settings.ROLLBACK_TOLERANCE_ENV, self.rollback_tolerance
            ),
            rollback_min_labelled=settings.parse_positive_int(
                settings.ROLLBACK_MIN_LABELLED_ENV, self.rollback_min_labelled
            ),
            challenger_margin=settings.parse_non_negative_number(
                settings.CHALLENGER_MARGIN_ENV, self.challenger_margin
            ),
            challenger_min_labelled=settings.parse_positive_int(
                settings.CHALLENGER_MIN_LABELLED_ENV, self.challenger_min_labelled
            ),
        )
