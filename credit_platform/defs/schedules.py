"""The nightly schedules: training and the monitoring of the day before.

Training is stopped by default (the new-data sensor is the usual trigger); monitoring runs,
since nothing else triggers it."""

from dagster import DefaultScheduleStatus, build_schedule_from_partitioned_job

from credit_platform.defs.jobs import continuous_training_job, model_monitoring_job

daily_continuous_training = build_schedule_from_partitioned_job(
    continuous_training_job,
    hour_of_day=2,
    name="daily_continuous_training",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Trains on yesterday's partition every night (the new-data sensor is the "
    "usual trigger; turn this on to train on a clock instead).",
)

daily_model_monitoring = build_schedule_from_partitioned_job(
    model_monitoring_job,
    hour_of_day=1,
    name="daily_model_monitoring",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Monitors yesterday's predictions every night; its checks feed the retrain "
    "and rollback sensors. Labels arriving later: materialize the older days again.",
)
