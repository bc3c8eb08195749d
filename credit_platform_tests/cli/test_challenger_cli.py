"""`credit-platform challenger`: only a model that passed its check is attached, and every
refusal says which model and why."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from bench.isolation import SilentPort
from credit_platform.cli.challenger import checked_model_tag
from credit_platform.cli.main import main
from credit_platform.core.settings import (
    ADMIN_TOKEN_ENV,
    API_URL_ENV,
    MLFLOW_EXPERIMENT_ENV,
    MLFLOW_TRACKING_URI_ENV,
    MODEL_NAME,
)
from credit_platform_tests.defs.test_champion import _registry, _version


def test_only_a_passed_registered_model_may_challenge(tmp_path) -> None:
    tracking = _registry(tmp_path)
    _version(tracking, "2025-02-01", bento=f"{MODEL_NAME}:good")
    _version(tracking, "2025-02-02", verdict="failed", bento=f"{MODEL_NAME}:bad")
    assert checked_model_tag(tracking, f"{MODEL_NAME}:good") == f"{MODEL_NAME}:good"
    assert checked_model_tag(tracking, "good") == f"{MODEL_NAME}:good"  # name added
    with pytest.raises(ValueError, match=r":bad did not pass its quality check.*'failed'"):
        checked_model_tag(tracking, f"{MODEL_NAME}:bad")
    with pytest.raises(ValueError, match=r":nosuch is not a registered version"):
        checked_model_tag(tracking, f"{MODEL_NAME}:nosuch")


def test_the_cli_refuses_a_failed_model_before_calling_the_service(tmp_path, monkeypatch) -> None:
    tracking = _registry(tmp_path)
    _version(tracking, "2025-02-02", verdict="failed", bento=f"{MODEL_NAME}:bad")
    _version(tracking, "2025-02-03", bento=f"{MODEL_NAME}:good")
    monkeypatch.setenv(MLFLOW_TRACKING_URI_ENV, tracking.tracking_uri)
    monkeypatch.setenv(MLFLOW_EXPERIMENT_ENV, tracking.experiment_name)
    monkeypatch.setenv(ADMIN_TOKEN_ENV, "token")
    silent = SilentPort()
    try:
        monkeypatch.setenv(API_URL_ENV, silent.url)
        runner = CliRunner()
        refused = runner.invoke(main, ["challenger", "attach", "--tag", f"{MODEL_NAME}:bad"])
        assert refused.exit_code == 1
        assert "did not pass its quality check" in refused.output
        # A passing model goes to the service, which here does not answer: said, not raised.
        unreachable = runner.invoke(
            main, ["challenger", "attach", "--tag", f"{MODEL_NAME}:good", "--role", "canary"]
        )
        assert unreachable.exit_code == 1
        assert f"attach {MODEL_NAME}:good as canary at {silent.url} failed" in unreachable.output
    finally:
        silent.close()
