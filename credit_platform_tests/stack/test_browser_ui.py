"""The Dagster UI driven as a person drives it: Debian's headless Chromium (through
Playwright, with the system browser; nothing is downloaded) opens the webserver, launches
one partition of the continuous-training assets from the asset pages, watches the run
succeed and reads the row count and the accuracy off the asset pages; then, with
`model_monitoring` materialized for a few days into the UI's instance, it switches that
asset's metadata to its plots over the partitions and finds the monitoring metrics' plots.

The webserver and the daemon run as in embedded mode (the root workspace.yaml, SQLite
instance) on a seeded synthetic store in a temporary home, with CREDIT_TRAINING_GRID=small
so a launch without config trains two trials. The sensors are stopped before the daemon
starts: the new-data sensor would otherwise queue a run of its own, and the deploy sensor
would try to start a prediction service once the model passes its check (the monitoring
sensors are stopped too).
A screenshot of each asset page lands in pytest's tmp dir and in test-output/.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from credit_platform.core import routes
from credit_platform.core.db import init_schema
from credit_platform.core.schema import credit_score_features_target
from credit_platform.core.service_process import free_port
from credit_platform.ingest.synthetic import seed_synthetic
from credit_platform_tests.stack_fixtures import REPO_ROOT, VENV_BIN

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = REPO_ROOT / "test-output"
START_TIMEOUT = 90.0
RUN_TIMEOUT = 240.0
# Stopped before the daemon starts; the monitoring sensors too, since a test here writes
# monitoring reports into this instance.
SENSORS = (
    "new_data_sensor",
    "deploy_sensor",
    "retrain_sensor",
    "rollback_sensor",
    "challenger_sensor",
)
SEED_DAYS = 10


@dataclass
class DagsterUi:
    url: str
    api_url: str
    partition: str
    feature_store_url: str
    dagster_home: Path
    processes: list[subprocess.Popen]
    logs: list[Path]

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = requests.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30
        )
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def tails(self) -> str:
        return "\n".join(
            f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            for log in self.logs
        )


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    message = (
        f"Debian's chromium is not installed at {CHROMIUM}; scripts/test.sh installs it "
        "(apt-get install chromium)"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _start(command: list[str], env: dict, log: Path, cwd: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: code servers and runs go with it
        )


def _stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    with contextlib.suppress(ProcessLookupError):  # run workers left behind by the group
        os.killpg(process.pid, signal.SIGKILL)


def _wait_until(check, timeout: float, what: str, ui: DagsterUi | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    pytest.fail(f"{what} within {timeout:.0f}s" + (f"\n{ui.tails()}" if ui else ""))


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _stop_sensors(ui: DagsterUi) -> None:
    for name in SENSORS:
        selector = {
            "repositoryLocationName": "credit_platform",
            "repositoryName": "__repository__",
            "sensorName": name,
        }
        sensor = ui.graphql(
            "query ($s: SensorSelector!) { sensorOrError(sensorSelector: $s) "
            "{ ... on Sensor { id } } }",
            {"s": selector},
        )["sensorOrError"]
        stopped = ui.graphql(
            "mutation ($id: String!) { stopSensor(id: $id) { __typename "
            "... on StopSensorMutationResult { instigationState { status } } } }",
            {"id": sensor["id"]},
        )["stopSensor"]
        assert stopped["instigationState"]["status"] == "STOPPED", stopped


@pytest.fixture(scope="module")
def ui(tmp_path_factory) -> Iterator[DagsterUi]:
    _require_chromium()
    root = tmp_path_factory.mktemp("browser_ui")
    home = root / "home"
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"
    )
    feature_store_url = f"sqlite:///{home / 'feature_store.db'}"
    # Recent days, so the launch dialog's default "last 90 days" shows the partition.
    start = date.today() - timedelta(days=SEED_DAYS)
    engine = init_schema(feature_store_url)
    try:
        seed_synthetic(engine, customers=80, days=SEED_DAYS, start=start, progress=False)
    finally:
        engine.dispose()
    partition = (start + timedelta(days=SEED_DAYS - 1)).isoformat()

    api_url = f"http://127.0.0.1:{free_port()}"
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CREDIT_", "DAGSTER_", "MLFLOW_", "BENTOML_", "FEATURE_STORE"))
    }
    env.update(
        {
            "CREDIT_PLATFORM_HOME": str(home),
            "BENTOML_HOME": str(home / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "true",
            "DAGSTER_HOME": str(dagster_home),
            "CREDIT_TRAINING_GRID": "small",
            # Nothing listens here: no prediction service is part of this test.
            "CREDIT_API_URL": api_url,
            "CREDIT_API_ADMIN_TOKEN": "browser-9a5363807d6cf6856972365b",
        }
    )
    port = free_port()
    workspace = str(REPO_ROOT / "workspace.yaml")
    webserver_log, daemon_log = root / "webserver.log", root / "daemon.log"
    webserver = _start(
        [str(VENV_BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1", "-p", str(port)],
        env,
        webserver_log,
        root,
    )
    result = DagsterUi(
        url=f"http://127.0.0.1:{port}",
        api_url=api_url,
        partition=partition,
        feature_store_url=feature_store_url,
        dagster_home=dagster_home,
        processes=[webserver],
        logs=[webserver_log],
    )
    try:
        _wait_until(
            lambda: _answers(f"{result.url}/server_info"), START_TIMEOUT, "no webserver", result
        )
        _stop_sensors(result)
        daemon = _start(
            [str(VENV_BIN / "dagster-daemon"), "run", "-w", workspace], env, daemon_log, root
        )
        result.processes.append(daemon)
        result.logs.append(daemon_log)
        yield result
    finally:
        for process in reversed(result.processes):
            _stop(process)


def _launch_partition(page, ui: DagsterUi) -> None:
    """From the model's asset page to its group, and a launch of the whole group for one
    partition, the way the buttons read."""
    page.goto(f"{ui.url}/assets/credit_score_model")
    page.get_by_text("continuous_training", exact=True).first.click()
    page.wait_for_url(re.compile(r"asset-groups"))
    page.get_by_role("button", name="Materialize selected…").wait_for()  # the model alone
    # The group's lineage with no asset selected: the button now launches all four.
    page.goto(f'{ui.url}/asset-groups~group:"continuous_training"')
    page.get_by_role("button", name="Materialize all…").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Launch runs to materialize 4 assets").wait_for()
    dialog.get_by_role("button", name="Custom").click()
    partitions = dialog.get_by_role("textbox").first
    partitions.fill(ui.partition)
    partitions.press("Enter")
    dialog.get_by_text("1 partition", exact=True).wait_for()
    launch = dialog.get_by_role("button", name=re.compile(r"^Launch"))
    launch.click()
    dialog.wait_for(state="hidden")


def _run_succeeded(page, ui: DagsterUi) -> bool:
    page.goto(f"{ui.url}/runs")
    page.wait_for_load_state("networkidle")
    body = page.inner_text("body")
    if "Failure" in body:
        pytest.fail(f"the run failed:\n{ui.tails()}")
    return "Success" in body


def _rows_in_partition(ui: DagsterUi) -> int:
    engine = init_schema(ui.feature_store_url)
    table = credit_score_features_target
    try:
        with engine.connect() as connection:
            return connection.execute(
                select(func.count())
                .select_from(table)
                .where(table.c.base_dt == date.fromisoformat(ui.partition))
            ).scalar_one()
    finally:
        engine.dispose()


def _metadata_value(page, key: str) -> str:
    """The Value cell of `key`'s row in the asset page's metadata table."""
    row = page.locator("tr").filter(has=page.get_by_text(key, exact=True))
    row.first.wait_for()
    return row.first.locator("td").last.inner_text().strip()


def _row_count(page) -> str:
    """The value beside the overview's "Row count" heading."""
    heading = page.get_by_text("Row count", exact=True).first
    heading.wait_for()
    return heading.locator("xpath=..").inner_text().replace("Row count", "").strip()


def _save_screenshot(page, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    SCREENSHOTS.mkdir(exist_ok=True)
    shutil.copy(shot, SCREENSHOTS / name)
    return shot


def test_launch_one_partition_from_the_ui_and_read_its_metadata(ui, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            _launch_partition(page, ui)
            _wait_until(lambda: _run_succeeded(page, ui), RUN_TIMEOUT, "no successful run", ui)
            _save_screenshot(page, tmp_path, "dagster_runs.png")

            page.goto(f"{ui.url}/assets/credit_score_features_target")
            # dagster/row_count is shown as the asset's "Row count", not in the metadata table.
            assert _row_count(page) == f"{_rows_in_partition(ui):,}"
            assert _metadata_value(page, "rows_good").isdigit()
            assert ui.partition in page.inner_text("body")
            _save_screenshot(page, tmp_path, "dagster_feature_target_asset.png")

            page.goto(f"{ui.url}/assets/credit_score_model")
            accuracy = float(_metadata_value(page, "val_accuracy"))
            assert 0.3 < accuracy <= 1.0, accuracy
            assert _metadata_value(page, "trials") == "2", "CREDIT_TRAINING_GRID=small"
            shot = _save_screenshot(page, tmp_path, "dagster_model_asset.png")
            assert shot.stat().st_size > 10_000
            assert not _answers(f"{ui.api_url}{routes.READYZ}"), "no prediction service was started"
        finally:
            browser.close()


# Share of right answers the served model gives on each monitored day (oldest first).
MONITORED_ACCURACY = (0.9, 0.85, 0.6, 0.55)
SERVED_MODEL = "credit_score_classifier:served_in_the_ui_test"
# Hot-swapped in on the last monitored day: it answers the second half of that day's rows.
SWAPPED_IN = "credit_score_classifier:swapped_in_the_ui_test"


def _monitor_days(ui: DagsterUi, tmp_path: Path) -> list[str]:
    """Prediction-log rows for a few seeded days (right for a chosen share of customers),
    then model_monitoring and its checks materialized for each day into the UI's instance,
    as the daemon's runs would record them."""
    from dagster import DagsterInstance, materialize

    from credit_platform.defs.assets.monitoring import MONITORING_CHECKS, model_monitoring
    from credit_platform_tests.monitoring_fixtures import (
        day_rows,
        log_rows,
        monitoring_resources,
        write_log,
    )

    last = date.fromisoformat(ui.partition)
    days = [last - timedelta(days=len(MONITORED_ACCURACY) - n) for n in range(4)]
    engine = init_schema(ui.feature_store_url)
    rows = []
    try:
        for day, accuracy in zip(days, MONITORED_ACCURACY, strict=True):
            frame = day_rows(engine, day)
            right = round(len(frame) * accuracy)
            common = {"day": day, "model_version": SERVED_MODEL}
            answered = log_rows(frame.iloc[:right], prefix="ui-right", **common)
            answered += log_rows(frame.iloc[right:], right=False, prefix="ui-wrong", **common)
            if day == days[-1]:
                for row in answered[len(answered) // 2 :]:
                    row.model_version = SWAPPED_IN
            rows += answered
    finally:
        engine.dispose()
    write_log(ui.feature_store_url, tmp_path / "spool", rows)
    instance = DagsterInstance.from_config(str(ui.dagster_home))
    try:
        for day in days:
            result = materialize(
                [model_monitoring, *MONITORING_CHECKS],
                partition_key=day.isoformat(),
                resources=monitoring_resources(ui.feature_store_url),
                instance=instance,
            )
            assert result.success
    finally:
        instance.dispose()
    return [day.isoformat() for day in days]


@contextlib.contextmanager
def _browser_page(url: str) -> Iterator:
    """A page of headless Chromium opened at `url`, closed with the browser."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(url)
            yield page
        finally:
            browser.close()


def _show_plots(page) -> None:
    """The asset overview's Metadata section switched from its table to its plots, scrolled
    to the top of the view."""
    page.get_by_role("button", name="Plots").first.click()
    page.get_by_text("When graphing values by partition", exact=False).wait_for()
    page.get_by_text("Metadata", exact=True).first.evaluate(
        "element => element.scrollIntoView({block: 'start'})"
    )


def test_model_monitoring_metadata_is_plotted_over_its_partitions(ui, tmp_path):
    partitions = _monitor_days(ui, tmp_path)
    with _browser_page(f"{ui.url}/assets/model_monitoring") as page:
        # The table shows the newest materialization: the last monitored day.
        assert _metadata_value(page, "status") == f"80 predictions of {partitions[-1]} monitored"
        assert float(_metadata_value(page, "champion_live_accuracy")) == pytest.approx(
            MONITORED_ACCURACY[-1]
        )
        _show_plots(page)
        # One plot per numeric metadata key, over the partitions (the default x axis).
        for title in ("champion_live_accuracy", "champion_live_macro_f1", "latency_p50_ms"):
            page.get_by_text(title, exact=True).first.wait_for(state="visible")
        assert page.get_by_role("button", name="Partitions").first.is_visible()
        assert page.locator("canvas").count() >= 3
        # markdown and text entries have no plot
        assert page.get_by_text("top_drifting_features", exact=True).count() == 0
        shot = _save_screenshot(page, tmp_path, "dagster_monitoring_plots.png")
        assert shot.stat().st_size > 10_000


def test_the_monitored_days_are_readable_with_the_hot_swap_marked(ui, tmp_path):
    """The asset page names both models of the hot-swap day and links a report whose chart
    and table cover the monitored days only; both are screenshotted."""
    partitions = _monitor_days(ui, tmp_path)
    with _browser_page(f"{ui.url}/assets/model_monitoring") as page:
        # Both models of the last day count, the old one's requests included.
        assert _metadata_value(page, "champion_model_versions") == "2"
        assert _metadata_value(page, "champion_requests") == "80"
        assert float(_metadata_value(page, "champion_live_accuracy")) == pytest.approx(
            MONITORED_ACCURACY[-1]
        )
        assert _metadata_value(page, "model_changes") == (
            f"{partitions[-1]}: hot swap: {SERVED_MODEL} -> {SWAPPED_IN}"
        )
        report = _metadata_value(page, "report")
        assert report.endswith(f"reports/model_monitoring/{partitions[-1]}.html")
        page.get_by_text("monitored_days", exact=True).first.evaluate(
            "element => element.scrollIntoView({block: 'center'})"
        )
        _save_screenshot(page, tmp_path, "dagster_monitoring_metadata.png")

        page.goto(f"file://{report}")
        chart = page.locator("img").first
        assert chart.evaluate("image => image.naturalWidth") > 600
        cells = page.locator("tr td:first-child").all_inner_texts()
        assert sorted(set(cells)) == partitions  # the monitored days, nothing else
        assert cells.count(partitions[-1]) == 2  # the swapped-out model keeps its row
        assert page.get_by_text("swapped out", exact=True).count() == 1
        shot = _save_screenshot(page, tmp_path, "monitoring_report.png")
        assert shot.stat().st_size > 30_000

        # The loop in the lineage: the API's log (external, its long name shortened by the
        # graph) between the deployment and monitoring, the labels upstream of both ends.
        page.goto(f"{ui.url}/assets/model_monitoring?view=lineage&lineageDepth=5")
        for name in ("credit_score", "deployed_bento", "model_monitoring", "train_valid_split"):
            page.get_by_text(name, exact=True).first.wait_for(state="visible")
        page.get_by_text(re.compile(r"^credit_pr.*api_log$")).first.wait_for(state="visible")
        _save_screenshot(page, tmp_path, "dagster_lineage.png")
