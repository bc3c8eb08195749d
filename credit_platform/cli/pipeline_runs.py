"""Running the platform's jobs in-process from the CLI, recorded in the instance
(DAGSTER_HOME) so the runs, materializations and check results appear in the Dagster UI."""

from collections.abc import Callable

from dagster import DagsterInstance, ExecuteInProcessResult

from credit_platform.defs.assets.model import GRID_PRESETS
from credit_platform.defs.definitions import CONTINUOUS_TRAINING_JOB, DEPLOY_JOB, defs

Echo = Callable[[str], None]

# Step-level DEBUG events stay in the instance (and the UI); the terminal gets INFO.
CONSOLE_LOGGING = {"console": {"config": {"log_level": "INFO"}}}


def training_run_config(grid: str) -> dict:
    """Run config naming the grid explicitly ("small" for demos and smoke runs, "seed" for the
    3 × 3 × 3 grid), so CREDIT_TRAINING_GRID never overrides the --grid a user chose."""
    if grid not in GRID_PRESETS:
        raise ValueError(f"unknown grid {grid!r}: choose one of {', '.join(GRID_PRESETS)}")
    config = GRID_PRESETS[grid]
    return {"loggers": CONSOLE_LOGGING, "ops": {"credit_score_model": {"config": config}}}


def _execute(
    job_name: str, partition: str, run_config: dict, instance: DagsterInstance, echo: Echo
) -> ExecuteInProcessResult:
    result = defs.resolve_job_def(job_name).execute_in_process(
        partition_key=partition, run_config=run_config, instance=instance, raise_on_error=False
    )
    if not result.success:
        for event in result.all_events:
            if event.is_failure and event.step_failure_data is not None:
                echo(f"  {event.step_key} failed: {event.step_failure_data.error.message}")
        echo(f"  run {result.run_id} failed")
    return result


def run_training_partitions(
    partitions: list[str], *, grid: str = "small", echo: Echo = print
) -> list[str]:
    """One continuous-training run per partition, in order; returns the failed partitions."""
    failed: list[str] = []
    with DagsterInstance.get() as instance:
        for partition in partitions:
            echo(f"materializing partition {partition} ({grid} grid) ...")
            result = _execute(
                CONTINUOUS_TRAINING_JOB, partition, training_run_config(grid), instance, echo
            )
            if not result.success:
                failed.append(partition)
                continue
            model = result.output_for_node("credit_score_model")
            metrics = model["metrics"]
            echo(
                f"  run {result.run_id}: model {model['bento_tag']} "
                f"test_accuracy={metrics['test_accuracy']:.3f} "
                f"test_macro_f1={metrics['test_macro_f1']:.3f}"
            )
    return failed


def run_deploy_partition(partition: str, *, echo: Echo = print) -> bool:
    """Materialize deployed_bento for the partition: the prediction service serves its model."""
    with DagsterInstance.get() as instance:
        echo(f"deploying the model of partition {partition} ...")
        result = _execute(DEPLOY_JOB, partition, {"loggers": CONSOLE_LOGGING}, instance, echo)
        if result.success:
            metadata = result.asset_materializations_for_node("deployed_bento")[0].metadata
            echo(
                f"  {metadata['action'].value}: {metadata['api_url'].value} serves "
                f"{metadata['served_model_tag'].value} (Bento {metadata['bento_tag'].value})"
            )
        return result.success
