"""The nightly training schedule (stopped by default: the new-data sensor is the usual trigger)."""

from dagster import DefaultScheduleStatus, build_schedule_from_partitioned_job

from credit_platform.defs.jobs import continuous_training_job

daily_continuous_training = build_schedule_from_partitioned_job(
    continuous_training_job,
    hour_of_day=2,
    name="daily_continuous_training",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Trains on yesterday's partition every night (the new-data sensor is the "
    "usual trigger; turn this on to train on a clock instead).",
)
