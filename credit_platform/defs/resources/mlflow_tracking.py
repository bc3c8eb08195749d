"""MLflow tracking and model registry as a Dagster resource.

The registry's `champion` alias is the source of truth for what should serve: it is
elected from the version tags (the passing model of the newest data partition), so the
order in which runs finish never decides it.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from dagster import ConfigurableResource
from pydantic import Field

from credit_platform.core import settings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

# MLflow 3's UI opens an experiment without this tag as a GenAI one (traces, "Detect
# Issues"); "custom_model_development" is the kind its UI names CUSTOM_MODEL_DEVELOPMENT
# (mlflow 3.17: server/js ExperimentKind, and the onboarding skill's table of kinds).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
# Metrics MLflow accepts in one log_batch call.
MAX_METRICS_PER_BATCH = 1000
CHAMPION_ALIAS = "champion"
QUALITY_TAG = "quality_check"
PASSED = "passed"
PARTITION_TAG = "partition"
BENTO_TAG = "bento_tag"
# A rolled-back version keeps its quality verdict but is never elected again.
ROLLED_BACK_TAG = "rolled_back"
# A version whose live accuracy fell behind its predecessor's on the same days (the rollback
# sensor's mark; the value says why): never elected again.
LIVE_REGRESSION_TAG = "live_regression"
# A challenger promoted on live evidence ranks as a model of the partition of the champion
# it displaced: a backfill of older days never displaces it, newer data still does.
PROMOTED_OVER_TAG = "promoted_over_partition"
# A version whose BentoML model retention deleted (the value says when): nothing left to
# serve, so never elected again.
PRUNED_TAG = "pruned_from_bentoml_store"
# What the live evidence decided for a challenger ("promoted: ..." or "detached: ...").
CHALLENGER_VERDICT_TAG = "challenger_verdict"
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
                    self.experiment_name,
                    artifact_location=self._artifact_location(),
                    tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND},
                )
            except MlflowException as error:
                if error.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment.lifecycle_stage != "deleted" and (
            (experiment.tags or {}).get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING_KIND
        ):  # made before the kind was set (or by hand): MLflow 3 would open it as GenAI
            client.set_experiment_tag(
                experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND
            )
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

    def log_step_metrics(self, run_id: str, curves: Mapping[str, Sequence[float]]) -> int:
        """Each curve as one metric with a value per step (its history is the learning curve
        in the MLflow UI), sent in batches of MLflow's limit rather than a call per value.
        Returns how many values were logged."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = [
            Metric(key=name, value=float(value), timestamp=now, step=step)
            for name, curve in curves.items()
            for step, value in enumerate(curve)
        ]
        client = self.client()
        for start in range(0, len(values), MAX_METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=values[start : start + MAX_METRICS_PER_BATCH])
        return len(values)

    def log_png(self, run_id: str, png: bytes, artifact_file: str) -> None:
        """A PNG image as an artifact of the run (the MLflow UI shows it in Artifacts)."""
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / Path(artifact_file).name
            path.write_bytes(png)
            parent = str(Path(artifact_file).parent)
            self.client().log_artifact(run_id, str(path), None if parent == "." else parent)

    def run_url(self, run_id: str) -> str:
        """The run's page in the MLflow UI."""
        return f"{self.ui_url.rstrip('/')}/#/experiments/{self.experiment_id()}/runs/{run_id}"

    def artifact_url(self, run_id: str, path: str) -> str:
        """An artifact of the run, opened in the MLflow UI's artifact view."""
        return f"{self.run_url(run_id)}/artifactPath/{path}"

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

    def versions(self, name: str = settings.MODEL_NAME) -> list[ModelVersion]:
        """Every version of the registered model (none when it was never registered)."""
        from mlflow.exceptions import MlflowException

        try:
            return list(self.client().search_model_versions(f"name = '{name}'"))
        except MlflowException as error:
            if error.error_code in _ABSENT_CODES:
                return []
            raise

    def elect_champion(self, name: str = settings.MODEL_NAME) -> ModelVersion | None:
        """Point the champion alias at the eligible version (passed, not rolled back, not
        marked for a live regression) of the newest data partition (the newest such version
        on a tie) and return it; None when none qualifies.

        Every check records its verdict tag before electing, so whichever of several
        concurrent runs elects last sees every verdict and leaves the same answer; a second
        pass repairs an alias moved by a run that elected from an older view.
        """
        elected = None
        for _ in range(2):
            elected = champion_of(self.versions(name))
            current = self.champion(name)
            if elected is None:
                if current is not None:
                    self.client().delete_registered_model_alias(name, CHAMPION_ALIAS)
                return None
            if current is None or str(current.version) != str(elected.version):
                self.set_champion(str(elected.version), name)
        return elected

    def roll_back(self, name: str = settings.MODEL_NAME) -> tuple[ModelVersion, ModelVersion]:
        """Retire the champion (tag it rolled back) and elect the next one; returns (retired,
        new champion). Raises LookupError when there is no champion or none to fall back to."""
        current = self.champion(name)
        if current is None:
            raise LookupError(f"{name} has no {CHAMPION_ALIAS!r} alias: nothing to roll back")
        remaining = [
            version
            for version in self.versions(name)
            if str(version.version) != str(current.version)
        ]
        if champion_of(remaining) is None:
            raise LookupError(
                f"{name} version {current.version} is the only passing model: there is no "
                "previous champion to roll back to"
            )
        self.client().set_model_version_tag(name, str(current.version), ROLLED_BACK_TAG, "true")
        elected = self.elect_champion(name)
        assert elected is not None  # `remaining` holds an eligible version
        return current, elected

    def versions_of_model(
        self, bento_tag: str, name: str = settings.MODEL_NAME
    ) -> list[ModelVersion]:
        """The registered versions of the BentoML model `bento_tag` (usually one)."""
        return [
            version
            for version in self.versions(name)
            if (version.tags or {}).get(BENTO_TAG) == bento_tag
        ]

    def mark_regressed(
        self, bento_tag: str, reason: str, name: str = settings.MODEL_NAME
    ) -> tuple[list[ModelVersion], ModelVersion | None]:
        """Tag every version of `bento_tag` with LIVE_REGRESSION_TAG (the reason) so the
        champion policy skips it, and elect the champion again; returns (marked versions,
        the champion now). Repeating it changes nothing."""
        marked = self.versions_of_model(bento_tag, name)
        for version in marked:
            if (version.tags or {}).get(LIVE_REGRESSION_TAG) != reason:
                self.client().set_model_version_tag(
                    name, str(version.version), LIVE_REGRESSION_TAG, reason
                )
        return marked, self.elect_champion(name)

    def promote(
        self, challenger: str, champion: str, reason: str, name: str = settings.MODEL_NAME
    ) -> ModelVersion | None:
        """Make the challenger (a Bento model tag) champion on live evidence: the displaced
        champion is marked for a live regression (never elected again), the challenger
        ranks at the displaced one's partition (and loses a rolled-back mark: the evidence
        answers the doubt), and the election runs; returns the champion. Repeating it
        changes nothing."""
        displaced = self.versions_of_model(champion, name)
        partitions = [(v.tags or {}).get(PARTITION_TAG) or "" for v in displaced]
        over = max(partitions, default="")
        for version in self.versions_of_model(challenger, name):
            self.client().set_model_version_tag(
                name, str(version.version), CHALLENGER_VERDICT_TAG, f"promoted: {reason}"
            )
            if (version.tags or {}).get(ROLLED_BACK_TAG) == "true":
                # rolled back by hand before it was tried live: the evidence answers that
                self.client().delete_model_version_tag(name, str(version.version), ROLLED_BACK_TAG)
            if over:
                self.client().set_model_version_tag(
                    name, str(version.version), PROMOTED_OVER_TAG, over
                )
        _, elected = self.mark_regressed(champion, f"displaced by {challenger}: {reason}", name)
        return elected

    def record_challenger_verdict(
        self, challenger: str, verdict: str, name: str = settings.MODEL_NAME
    ) -> list[ModelVersion]:
        """Tag the challenger's versions with what the live evidence decided."""
        versions = self.versions_of_model(challenger, name)
        for version in versions:
            self.client().set_model_version_tag(
                name, str(version.version), CHALLENGER_VERDICT_TAG, verdict
            )
        return versions

    def mark_pruned(
        self, bento_tags: list[str], when: str, name: str = settings.MODEL_NAME
    ) -> list[ModelVersion]:
        """Tag the versions of deleted BentoML models with PRUNED_TAG (the value: when) so
        the champion policy never names a model that is gone; the versions themselves stay
        as the record of what was trained and judged."""
        gone = set(bento_tags)
        marked = [v for v in self.versions(name) if (v.tags or {}).get(BENTO_TAG) in gone]
        for version in marked:
            self.client().set_model_version_tag(name, str(version.version), PRUNED_TAG, when)
        return marked

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


def eligible(version: ModelVersion) -> bool:
    """Passed its quality check, knows its partition and model, was never rolled back,
    never marked for a live regression, and its model was not deleted by retention."""
    tags = version.tags or {}
    return (
        tags.get(QUALITY_TAG) == PASSED
        and bool(tags.get(PARTITION_TAG))
        and bool(tags.get(BENTO_TAG))
        and tags.get(ROLLED_BACK_TAG) != "true"
        and not tags.get(LIVE_REGRESSION_TAG)
        and not tags.get(PRUNED_TAG)
    )


def ranking_partition(version: ModelVersion) -> str:
    """The partition a version ranks at: its own, or that of the champion it displaced on
    live evidence when later."""
    tags = version.tags or {}
    return max(tags[PARTITION_TAG], tags.get(PROMOTED_OVER_TAG) or "")


def champion_of(versions: list[ModelVersion]) -> ModelVersion | None:
    """The eligible version of the newest partition (ISO dates sort as days; a promoted
    challenger ranks at the partition it won over); on a tie the newest version. None when
    no version is eligible."""
    candidates = [version for version in versions if eligible(version)]
    if not candidates:
        return None
    return max(candidates, key=lambda version: (ranking_partition(version), int(version.version)))
