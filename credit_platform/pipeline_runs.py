"""Running the continuous-training job in-process from the CLI, recorded in the instance
(DAGSTER_HOME) so the runs, materializations and check results appear in the Dagster UI."""

from collections.abc import Callable

from dagster import DagsterInstance

from credit_platform.definitions import CONTINUOUS_TRAINING_JOB, defs

# A quick grid for demos and smoke runs; "seed" is the full 3 × 3 × 3 grid of the course.
SMALL_GRID = {
    "depths": [4, 6],
    "rsms": [1.0],
    "l2_leaf_regs": [3.0],
    "iterations": 300,
}


# Step-level DEBUG events stay in the instance (and the UI); the terminal gets INFO.
CONSOLE_LOGGING = {"console": {"config": {"log_level": "INFO"}}}


def training_run_config(grid: str) -> dict:
    if grid == "seed":
        return {"loggers": CONSOLE_LOGGING}
    if grid == "small":
        return {"loggers": CONSOLE_LOGGING, "ops": {"credit_score_model": {"config": SMALL_GRID}}}
    raise ValueError(f"unknown grid {grid!r}: choose 'small' or 'seed'")


def run_training_partitions(
    partitions: list[str], *, grid: str = "small", echo: Callable[[str], None] = print
) -> list[str]:
    """One run per partition, in order; returns the partitions whose run failed."""
    job = defs.resolve_job_def(CONTINUOUS_TRAINING_JOB)
    run_config = training_run_config(grid)
    failed: list[str] = []
    with DagsterInstance.get() as instance:
        for partition in partitions:
            echo(f"materializing partition {partition} ({grid} grid) ...")
            result = job.execute_in_process(
                partition_key=partition,
                run_config=run_config,
                instance=instance,
                raise_on_error=False,
            )
            if result.success:
                model = result.output_for_node("credit_score_model")
                metrics = model["metrics"]
                echo(
                    f"  run {result.run_id}: model {model['bento_tag']} "
                    f"val_accuracy={metrics['val_accuracy']:.3f} "
                    f"val_macro_f1={metrics['val_macro_f1']:.3f}"
                )
            else:
                failed.append(partition)
                for event in result.all_events:
                    if event.is_failure and event.step_failure_data is not None:
                        echo(f"  {event.step_key} failed: {event.step_failure_data.error.message}")
                echo(f"  run {result.run_id} failed")
    return failed
