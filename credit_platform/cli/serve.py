"""`credit-platform serve`: run the prediction service's Bento on the platform's settings.

It builds the Bento when this code is not built yet (a no-op otherwise), then replaces
itself with `python -m bentoml serve <bento tag>`, so a signal sent to the command (Ctrl+C,
SIGTERM from a supervisor) reaches BentoML directly and the service drains its prediction
log before it exits.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import click

from credit_platform.core import settings
from credit_platform.core.bento import (
    BentoBuildError,
    build_bento,
    serve_bento_command,
    serve_bento_environment,
)

# The one rule for secrets: the stack's containers start through this script, and serve
# runs it on the admin token (it is POSIX sh and awk, as the MariaDB image has no Python).
REQUIRE_SECRETS = Path(__file__).resolve().parents[2] / "deploy" / "require-secrets.sh"
REFUSED = 78  # the script's exit status for a weak secret


def check_admin_token(token: str | None) -> None:
    """Refuse to serve with a weak admin token (a placeholder such as "change-me", a short
    one, or a guessable one such as "admin-token-admin"): whoever knows it can swap the
    served model. No token at all leaves /admin/reload disabled."""
    if not token:
        return
    if not REQUIRE_SECRETS.is_file():
        raise click.ClickException(
            f"refusing to serve: cannot check {settings.ADMIN_TOKEN_ENV}, {REQUIRE_SECRETS} "
            "is missing (serve from a checkout or the platform's image)"
        )
    done = subprocess.run(
        ["sh", str(REQUIRE_SECRETS), "true"],
        env={"PATH": os.environ.get("PATH", os.defpath), settings.ADMIN_TOKEN_ENV: token},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode == 0:
        return
    problems = [line.strip() for line in done.stderr.splitlines() if line.startswith("  ")]
    if done.returncode != REFUSED or not problems:
        raise click.ClickException(
            f"refusing to serve: the check of {settings.ADMIN_TOKEN_ENV} failed "
            f"(exit {done.returncode}): {done.stderr.strip()}"
        )
    raise click.ClickException(
        f"refusing to serve: {'; '.join(problems)}; set it to a random value of at least 16 "
        "characters (e.g. openssl rand -hex 24), or unset it to serve with /admin/reload "
        "disabled"
    )


class ModelNotSavedYet(click.ClickException):
    """The store holds no model to serve (yet): `--wait-for-model` waits for one."""


def check_model_exists(tag: str) -> None:
    """Fail before starting the server when the model to serve is not in the store."""
    from credit_platform.core.model_store import ModelNotFound, list_model_tags, normalize_tag

    try:
        full_tag = normalize_tag(tag)
    except ModelNotFound as error:
        raise click.ClickException(str(error)) from error
    saved = list_model_tags()
    where = f"the BentoML store at {settings.bentoml_home()}"
    if not saved:
        raise ModelNotSavedYet(
            f"no {settings.MODEL_NAME} model in {where}: train one first "
            "(materialize credit_score_model)"
        )
    if not full_tag.endswith(":latest") and full_tag not in saved:
        raise ModelNotSavedYet(f"no model {full_tag} in {where}; saved: {', '.join(saved[:5])}")


def wait_for_model(tag: str, interval: float) -> None:
    """Return once the model to serve is in the store, checking every `interval` seconds;
    a malformed tag still fails at once."""
    while True:
        try:
            check_model_exists(tag)
            return
        except ModelNotSavedYet as error:
            click.echo(
                f"waiting for a model ({error.message}); next look in {interval:g} s", err=True
            )
        time.sleep(interval)


@click.command()
@click.option(
    "--port", type=click.IntRange(1, 65535), default=settings.DEFAULT_API_PORT, show_default=True
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Use 0.0.0.0 to listen on every interface.",
)
@click.option(
    "--model-tag",
    default=None,
    help="Model to serve first, e.g. credit_score_classifier:<version> "
    f"(default: {settings.API_MODEL_TAG_ENV} or the newest saved model).",
)
@click.option(
    "--wait-for-model",
    "wait_seconds",
    type=click.FloatRange(min=0.1),
    default=None,
    metavar="SECONDS",
    help="When the store has no model to serve yet, look again every SECONDS instead of "
    "exiting (a new stack whose first model is still training).",
)
def serve(port: int, host: str, model_tag: str | None, wait_seconds: float | None) -> None:
    """Serve predictions over HTTP from the service's built Bento (BentoML; /predict,
    /predict_batch, /metadata, /admin/reload)."""
    check_admin_token(settings.admin_token())
    env = serve_bento_environment(model_tag)
    os.environ[settings.BENTOML_HOME_ENV] = env[settings.BENTOML_HOME_ENV]
    tag = model_tag or settings.api_model_tag()
    if wait_seconds is None:
        check_model_exists(tag)
    else:
        wait_for_model(tag, wait_seconds)
    if not settings.admin_token():
        click.echo(
            f"note: {settings.ADMIN_TOKEN_ENV} is not set, so /admin/reload is disabled", err=True
        )
    try:
        bento_tag = build_bento()
    except BentoBuildError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"serving Bento {bento_tag}", err=True)
    command = serve_bento_command(bento_tag, host, port)
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    serve()
