"""`credit-platform materialize` through the real command: a failed day is one line with its
reason and the rest of the range still runs; a day outside the partitions is one line."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from credit_platform.cli.main import main


@pytest.fixture
def runner(cli_runner, tmp_path):
    """The CLI on a home of its own: feature store, MLflow and Dagster instance under tmp."""
    cli_runner.env["CREDIT_PLATFORM_HOME"] = str(tmp_path / "home")
    return cli_runner


def test_a_failed_day_is_reported_with_its_reason_and_the_next_day_still_runs(runner):
    # Labels on 2025-01-02 only: the day before has none, so its feature table is empty.
    seeded = runner.invoke(
        main,
        ["seed", "synthetic", "--customers", "400", "--days", "1", "--start", "2025-01-02"]
        + ["--quiet"],
    )
    assert seeded.exit_code == 0, seeded.output

    result = runner.invoke(
        main,
        ["materialize", "--partition", "2025-01-01", "--end", "2025-01-02", "--grid", "small"],
    )

    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # no crash
    assert "Traceback" not in result.output and "CheckError" not in result.output
    # The failed day is a short message, not Dagster's failure events: each printed a
    # stack trace of the error and one of its cause (84 lines for the day).
    assert "Stack Trace" not in result.output and "Not executing" not in result.output
    day = result.output.split("materializing partition 2025-01-02")[0].splitlines()
    assert day[0] == "materializing partition 2025-01-01 (small grid) ..." and len(day) == 2, day
    lines = result.stdout.splitlines()
    failed = [line for line in lines if line.startswith("partition 2025-01-01 failed")]
    assert len(failed) == 1, result.stdout
    assert re.match(
        r"partition 2025-01-01 failed \(run [0-9a-f-]+\): step credit_score_features_target "
        r"failed: partition 2025-01-01 is empty: no rows of credit_score dated",
        failed[0],
    ), failed[0]
    # The range went on: the next day trained a model.
    assert "materializing partition 2025-01-02 (small grid) ..." in lines
    assert any(re.match(r"  run [0-9a-f-]+: model credit_score_classifier:", x) for x in lines)
    assert not any(line.startswith("partition 2025-01-02 failed") for line in lines)
    assert result.stderr.rstrip().endswith("error: 1 partition(s) failed: 2025-01-01")


@pytest.mark.parametrize("day", ["1999-01-01", "tomorrow"])
def test_a_day_outside_the_partitions_is_one_line_naming_the_valid_range(runner, day):
    today = datetime.now(UTC).date()
    if day == "tomorrow":
        day = (today + timedelta(days=1)).isoformat()
    result = runner.invoke(main, ["materialize", "--partition", day])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "DagsterUnknownPartitionError" not in result.output
    yesterday = today - timedelta(days=1)
    expected = f"error: partition {day} is outside the valid range 2025-01-01 .. {yesterday} "
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith(expected), line
    assert "materializing" not in result.stdout


def test_an_end_day_outside_the_partitions_runs_nothing(runner):
    last = datetime.now(UTC).date() + timedelta(days=3)
    result = runner.invoke(
        main, ["materialize", "--partition", "2025-01-05", "--end", last.isoformat()]
    )
    assert result.exit_code == 1, result.output
    assert f"error: partition {last} is outside the valid range" in result.stderr
    assert "materializing" not in result.stdout
