"""Retention of the BentoML store, with the facts only the platform knows.

`core.retention` decides from plain facts; this module gathers them: the MLflow champion and
the version a rollback of it would elect, the model and Bento that served before the current
ones (from the deploy records), and what the service reports serving (its champion, shadow
or canary, and the Bento it runs).
Both the deploy (after it succeeded) and the `prune_model_store` job call
`prune_around_deploys`.

MLflow: registered versions stay (a few hundred bytes each, and they are the record of what
was trained and judged); the versions of deleted models are tagged `PRUNED_TAG` first, so the
champion policy never elects a model that is gone. The run artifacts MLflow keeps (each
trial's logged model) are left to MLflow's own lifecycle (deleting runs, `mlflow gc`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dagster import AssetKey, DagsterInstance, MetadataValue

from credit_platform.core.bento import bento_name, bento_tag
from credit_platform.core.retention import (
    BentosInUse,
    ModelsInUse,
    Outcome,
    Plan,
    apply_plan,
    delete_bento,
    delete_model,
    empty_trash,
    plan_bentos,
    plan_models,
    stored_bentos,
    stored_models,
    trash_dir,
)
from credit_platform.core.service_client import ReportedModel
from credit_platform.defs.resources.mlflow_tracking import (
    BENTO_TAG,
    QUALITY_TAG,
    MlflowTrackingResource,
    champion_of,
)
from credit_platform.defs.resources.model_retention import ModelRetentionResource

CHAMPION_ROLE = "champion"
Replaced = tuple[str | None, str | None]  # (model tag, Bento tag)


@dataclass(frozen=True)
class RetentionReport:
    keep_last: int
    models: Plan
    bentos: Plan
    deleted_models: Outcome
    deleted_bentos: Outcome
    dry_run: bool
    left_in_trash: dict[str, str]  # files of earlier deletions that still could not go

    @property
    def failed(self) -> dict[str, str]:
        return {**self.deleted_models.failed, **self.deleted_bentos.failed, **self.left_in_trash}


def models_in_use(
    mlflow_tracking: MlflowTrackingResource, served: ReportedModel, previous_model: str | None
) -> ModelsInUse:
    """The models retention must keep whatever their age (see `core.retention`)."""
    versions = mlflow_tracking.versions()
    champion = mlflow_tracking.champion()
    others = [v for v in versions if champion is None or str(v.version) != str(champion.version)]
    fallback = champion_of(others) if champion is not None else None
    roles = {served.tag: CHAMPION_ROLE}
    challenger = served.challenger or {}
    if challenger.get("model_version"):
        roles[str(challenger["model_version"])] = str(challenger.get("role") or "challenger")
    return ModelsInUse(
        champion=(champion.tags or {}).get(BENTO_TAG) if champion is not None else None,
        previous_champion=previous_model,
        rollback_target=(fallback.tags or {}).get(BENTO_TAG) if fallback is not None else None,
        served=roles,
        unjudged_versions=frozenset(
            str(v.version) for v in versions if QUALITY_TAG not in (v.tags or {})
        ),
    )


def prune(
    mlflow_tracking: MlflowTrackingResource,
    served: ReportedModel,
    *,
    keep_last: int,
    previous_model: str | None = None,
    previous_bento: str | None = None,
    dry_run: bool = False,
) -> RetentionReport:
    """Decide, mark the doomed models' MLflow versions, then delete models and Bentos."""
    now = datetime.now(UTC)
    models = plan_models(
        stored_models(), models_in_use(mlflow_tracking, served, previous_model), keep_last, now
    )
    bentos = plan_bentos(
        stored_bentos(bento_name()),
        BentosInUse(running=served.bento_tag, current_code=bento_tag(), previous=previous_bento),
        keep_last,
    )
    if dry_run:
        nothing = Outcome(deleted=[], failed={})
        return RetentionReport(
            keep_last, models, bentos, nothing, nothing, dry_run=True, left_in_trash={}
        )
    left_in_trash = empty_trash(trash_dir())
    if models.deleted:  # before deleting: an election must never name a model being deleted
        mlflow_tracking.mark_pruned(models.deleted, now.isoformat())
    return RetentionReport(
        keep_last,
        models,
        bentos,
        apply_plan(models, delete_model),
        apply_plan(bentos, delete_bento),
        dry_run=False,
        left_in_trash=left_in_trash,
    )


def retention_metadata(report: RetentionReport) -> dict[str, Any]:
    """The report as asset or op metadata: what went, what stayed and why, what failed."""
    metadata: dict[str, Any] = {
        "retention_keep_last": report.keep_last,
        "retention_deleted": MetadataValue.json(
            {"models": report.deleted_models.deleted, "bentos": report.deleted_bentos.deleted}
        ),
        "retention_kept": MetadataValue.json(
            {"models": report.models.kept, "bentos": report.bentos.kept}
        ),
    }
    if report.dry_run:
        metadata["retention_would_delete"] = MetadataValue.json(
            {"models": report.models.deleted, "bentos": report.bentos.deleted}
        )
    if report.failed:
        metadata["retention_failed"] = MetadataValue.json(report.failed)
    return metadata


# Deploy records searched for the model and Bento that served before the current ones.
HISTORY_LIMIT = 20


def deploy_history(instance: DagsterInstance, deploy_asset: AssetKey) -> list[Replaced]:
    """(model tag, Bento tag) each recent deploy replaced, newest first, from its metadata
    (None where it replaced nothing, e.g. "none (no service answered)")."""
    records = instance.fetch_materializations(deploy_asset, limit=HISTORY_LIMIT).records

    def tag(metadata: dict, key: str) -> str | None:
        entry = metadata.get(key)
        return str(entry.value) if entry is not None and ":" in str(entry.value) else None

    return [
        (tag(metadata, "previous_model_tag"), tag(metadata, "previous_bento_tag"))
        for metadata in (record.asset_materialization.metadata for record in records)
    ]


def previous_served(
    served: ReportedModel, before: ReportedModel | None, history: list[Replaced]
) -> Replaced:
    """The model and the Bento that served before the ones serving now: what this deploy
    replaced (`before`), else what the newest recorded deploy that changed them replaced (a
    start after an outage or the same model again replaces nothing)."""
    candidates = ([(before.tag, before.bento_tag)] if before is not None else []) + history
    model = next((m for m, _ in candidates if m and m != served.tag), None)
    bento = next((b for _, b in candidates if b and b != served.bento_tag), None)
    return model, bento


def prune_around_deploys(
    instance: DagsterInstance,
    deploy_asset: AssetKey,
    mlflow_tracking: MlflowTrackingResource,
    served: ReportedModel,
    *,
    keep_last: int,
    before: ReportedModel | None = None,
    dry_run: bool = False,
) -> RetentionReport:
    """`prune`, keeping what served before `served` as the deploy records tell it."""
    previous_model, previous_bento = previous_served(
        served, before, deploy_history(instance, deploy_asset)
    )
    return prune(
        mlflow_tracking,
        served,
        keep_last=keep_last,
        previous_model=previous_model,
        previous_bento=previous_bento,
        dry_run=dry_run,
    )


def retain_after_deploy(
    context: Any,
    mlflow_tracking: MlflowTrackingResource,
    model_retention: ModelRetentionResource,
    served: ReportedModel,
    before: ReportedModel | None,
) -> dict[str, Any]:
    """Retention at the end of a successful deploy (`context` is the deploy asset's), as
    metadata. Never raises: the new model already serves, so a failure here is reported
    (`retention_error`, `retention_failed`) and the deploy still succeeds."""
    log = context.log
    try:
        report = prune_around_deploys(
            context.instance,
            context.asset_key,
            mlflow_tracking,
            served,
            keep_last=model_retention.count,
            before=before,
        )
    except Exception as error:  # see the docstring: nothing here may fail the deploy
        log.warning("retention skipped: %s: %s", type(error).__name__, error)
        return {"retention_error": f"{type(error).__name__}: {error}"}
    for tag, reason in report.failed.items():
        log.warning("retention could not delete %s: %s", tag, reason)
    log.info(
        "retention (keep last %s): deleted models %s, Bentos %s",
        report.keep_last,
        report.deleted_models.deleted or "none",
        report.deleted_bentos.deleted or "none",
    )
    return retention_metadata(report)
