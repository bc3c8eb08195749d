"""MLflow tracking and model registry as a Dagster resource."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from dagster import ConfigurableResource
from pydantic import Field

from credit_platform.core import settings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

CHAMPION_ALIAS = "champion"
# Error codes MLflow uses for "no such registered model" and "no such alias".
_ABSENT_CODES = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}


class ExperimentDeleted(RuntimeError):
    """The configured experiment exists but was deleted; runs cannot be logged to it."""


class MlflowTrackingResource(ConfigurableResource):
    """Opens MLflow runs for assets and always closes them.

    dagster-mlflow's `mlflow_tracking` resource and hooks were built for ops: for assets
    launched from the UI they can leave MLflow runs RUNNING forever (dagster issue 21872).
    Here every run is a context manager that ends it FINISHED, FAILED on an error or
    KILLED on an interruption, so the MLflow UI never shows a stale run. All runs go to one
    experiment (created once, with the artifact location below), never one per training.
    """

    tracking_uri: str = Field(
        default_factory=settings.mlflow_tracking_uri,
        description="MLflow tracking URI: sqlite:///... (embedded default) or http://server:5000",
    )
    experiment_name: str = Field(
        default_factory=settings.mlflow_experiment_name,
        description="The one experiment every training run is logged to.",
    )
    ui_url: str = Field(
        default_factory=settings.mlflow_ui_url,
        description="Base URL of the MLflow UI that asset metadata links runs to.",
    )
    artifact_location: str | None = Field(
        default=None,
        description=(
            "Artifact root given to the experiment when it is created (ignored afterwards). "
            "Unset: <platform home>/mlartifacts for a local store, the server's own for http(s)."
        ),
    )

    def client(self) -> MlflowClient:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def experiment_id(self) -> str:
        """The experiment's id, creating it on first use (safe when two runs race)."""
        from mlflow.exceptions import MlflowException

        client = self.client()
        experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            try:
                return client.create_experiment(
                    self.experiment_name, artifact_location=self._artifact_location()
                )
            except MlflowException as error:
                if error.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment.lifecycle_stage == "deleted":
            raise ExperimentDeleted(
                f"MLflow experiment {self.experiment_name!r} (id {experiment.experiment_id}) at "
                f"{self.tracking_uri} is deleted; restore it with `mlflow experiments restore "
                f"--experiment-id {experiment.experiment_id}` or set "
                f"{settings.MLFLOW_EXPERIMENT_ENV} to another name"
            )
        return experiment.experiment_id

    @contextmanager
    def start_run(
        self,
        run_name: str,
        *,
        tags: Mapping[str, str] | None = None,
        nested: bool = False,
    ) -> Iterator[Run]:
        """An active MLflow run (nested under the enclosing one when `nested`), ended on exit.

        The run is active for the fluent API inside the block, so `mlflow.catboost.log_model`
        and friends log to it.
        """
        import mlflow
        from mlflow.entities import RunStatus

        experiment_id = self.experiment_id()
        self._point_fluent_api_here()
        if nested and mlflow.active_run() is None:
            raise RuntimeError(f"nested MLflow run {run_name!r} needs an enclosing run")
        run = mlflow.start_run(
            experiment_id=experiment_id, run_name=run_name, tags=dict(tags or {}), nested=nested
        )
        status = RunStatus.FAILED
        try:
            yield run
            status = RunStatus.FINISHED
        except Exception:
            raise
        except BaseException:  # KeyboardInterrupt, Dagster run termination
            status = RunStatus.KILLED
            raise
        finally:
            active = mlflow.active_run()
            if active is not None and active.info.run_id == run.info.run_id:
                mlflow.end_run(RunStatus.to_string(status))
            else:  # someone ended it already; still record the outcome
                self.client().set_terminated(run.info.run_id, RunStatus.to_string(status))

    def run_url(self, run_id: str) -> str:
        """The run's page in the MLflow UI."""
        return f"{self.ui_url.rstrip('/')}/#/experiments/{self.experiment_id()}/runs/{run_id}"

    def register_model(
        self, model_uri: str, name: str, *, tags: Mapping[str, str] | None = None
    ) -> ModelVersion:
        """A new version of the registered model `name` (created on first use)."""
        import mlflow

        self._point_fluent_api_here()
        return mlflow.register_model(model_uri, name, tags=dict(tags or {}))

    def champion(self, name: str = settings.MODEL_NAME) -> ModelVersion | None:
        """The version carrying the champion alias (the last model that passed its check)."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client().get_model_version_by_alias(name, CHAMPION_ALIAS)
        except MlflowException as error:
            if error.error_code in _ABSENT_CODES:
                return None
            raise

    def set_champion(self, version: str, name: str = settings.MODEL_NAME) -> None:
        self.client().set_registered_model_alias(name, CHAMPION_ALIAS, version)

    def _is_server(self) -> bool:
        return self.tracking_uri.startswith(("http://", "https://"))

    def _artifact_location(self) -> str | None:
        if self.artifact_location:
            return self.artifact_location
        if self._is_server():
            return None  # the tracking server decides where artifacts go
        return settings.mlflow_artifact_root().as_uri()

    def _point_fluent_api_here(self) -> None:
        """The fluent API (start_run, log_model, register_model) reads process-wide URIs."""
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
