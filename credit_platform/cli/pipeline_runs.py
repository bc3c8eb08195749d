"""The CLI's runs of the platform's jobs, in-process.

Each is recorded in the Dagster instance (DAGSTER_HOME), so its run, materializations and
check results appear in the Dagster UI."""

import logging
from collections.abc import Callable

from dagster import (
    AssetCheckSeverity,
    DagsterEventType,
    DagsterInstance,
    ExecuteInProcessResult,
    InitLoggerContext,
    colored_console_logger,
    logger,
)

from credit_platform.core import settings
from credit_platform.defs.definitions import defs
from credit_platform.defs.jobs import continuous_training_job, deploy_job

Echo = Callable[[str], None]

# Step-level DEBUG events stay in the instance (and the UI); the terminal gets INFO.
CONSOLE_LOGGING = {"console": {"config": {"log_level": "INFO"}}}


def training_run_config(grid: str | None) -> dict:
    """Run config of a training run. A named grid ("small" for demos and smoke runs, "seed"
    for the 3 × 3 × 3 grid) is written into the config, so CREDIT_TRAINING_GRID never
    overrides the --grid a user chose; without one the run takes the asset's default, the
    CREDIT_TRAINING_GRID preset, exactly as a launch from the UI does."""
    if grid is None:
        return {"loggers": CONSOLE_LOGGING}
    config = settings.training_grid_preset(grid)
    return {"loggers": CONSOLE_LOGGING, "ops": {"credit_score_model": {"config": config}}}


class _FailuresSummarized(logging.Filter):
    """Dagster logs a failed step and the failed run at ERROR, each with the stack traces
    of the error and its cause, and each step skipped because of them (84 lines for a day
    without labels). The CLI says why a day failed in one line (`failure_reasons`), so
    those records stay in the instance, and the UI, only; a step's own log lines pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        if getattr(record, "dagster_event", None) is not None:
            return False
        message = record.getMessage()
        return not ("Dependencies for step" in message and "Not executing" in message)


@logger(
    config_schema=colored_console_logger.config_schema,
    description="Dagster's console logger without the failure events the CLI summarizes.",
)
def cli_console_logger(init_context: InitLoggerContext) -> logging.Logger:
    console = colored_console_logger.logger_fn(init_context)
    for handler in console.handlers:
        handler.addFilter(_FailuresSummarized())
    return console


# Dagster's wrappers around a user error: the cause says what went wrong.
_WRAPPER_ERRORS = {"DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError"}


def failure_reasons(result: ExecuteInProcessResult) -> list[str]:
    """Why a run failed, one line each: every failed blocking check with its description,
    every other failed step with its error; the run's own error when no step failed."""
    reasons: list[str] = []
    check_steps: set[str] = set()
    for event in result.all_events:
        if event.event_type != DagsterEventType.ASSET_CHECK_EVALUATION:
            continue
        evaluation = event.event_specific_data
        if not evaluation.passed and evaluation.severity == AssetCheckSeverity.ERROR:
            reasons.append(
                f"check {evaluation.check_name} failed: "
                f"{_one_line(evaluation.description or 'no description')}"
            )
            check_steps.add(event.step_key)
    for event in result.all_events:
        if event.is_step_failure and event.step_key not in check_steps:
            reasons.append(f"step {event.step_key} failed: {_error_text(event)}")
    if not reasons:
        for event in result.all_events:
            if event.event_type == DagsterEventType.RUN_FAILURE:
                error = getattr(event.event_specific_data, "error", None)
                reasons.append(_one_line(error.message if error else event.message or ""))
    return reasons or ["the run failed without recording why"]


def _error_text(event) -> str:
    failure = event.step_failure_data
    if failure.user_failure_data is not None and failure.user_failure_data.description:
        return _one_line(failure.user_failure_data.description)
    error = failure.error
    while error.cause is not None and error.cls_name in _WRAPPER_ERRORS:
        error = error.cause
    return _one_line(error.message)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _execute(
    job_name: str, partition: str, run_config: dict, instance: DagsterInstance, echo: Echo
) -> ExecuteInProcessResult:
    job = defs.resolve_job_def(job_name).with_logger_defs({"console": cli_console_logger})
    result = job.execute_in_process(
        partition_key=partition, run_config=run_config, instance=instance, raise_on_error=False
    )
    if not result.success:
        echo(
            f"partition {partition} failed (run {result.run_id}): "
            + "; ".join(failure_reasons(result))
        )
    return result


def run_training_partitions(
    partitions: list[str], *, grid: str | None = None, echo: Echo = print
) -> list[str]:
    """One continuous-training run per partition, in order; a failed day is reported in one
    line and the next day runs. Returns the failed partitions. `grid` None trains on the
    CREDIT_TRAINING_GRID preset (as a launch from the UI does)."""
    failed: list[str] = []
    run_config = training_run_config(grid)
    grid_name = grid or settings.training_grid()
    with DagsterInstance.get() as instance:
        for partition in partitions:
            echo(f"materializing partition {partition} ({grid_name} grid) ...")
            result = _execute(continuous_training_job.name, partition, run_config, instance, echo)
            if not result.success:
                failed.append(partition)
                continue
            model = result.output_for_node("credit_score_model")
            metrics = model["metrics"]
            echo(
                f"  run {result.run_id}: model {model['bento_tag']} "
                f"test_accuracy={metrics['test_accuracy']:.3f} "
                f"test_macro_f1={metrics['test_macro_f1']:.3f} "
                f"trials={model['trials']}"
            )
    return failed


def run_deploy_partition(partition: str, *, echo: Echo = print) -> bool:
    """Materialize deployed_bento for the partition: the prediction service serves its model."""
    with DagsterInstance.get() as instance:
        echo(f"deploying the model of partition {partition} ...")
        result = _execute(deploy_job.name, partition, {"loggers": CONSOLE_LOGGING}, instance, echo)
        if result.success:
            metadata = result.asset_materializations_for_node("deployed_bento")[0].metadata
            echo(
                f"  {metadata['how'].value}: {metadata['api_url'].value} serves "
                f"{metadata['model_tag'].value} in Bento {metadata['bento_tag'].value}"
            )
        return result.success
