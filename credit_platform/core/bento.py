"""The prediction service as a Bento: its code and environment, versioned by what it packs.

The version is a digest of the files `api/bentofile.yaml` includes, the bentofile itself
(which holds the pins), and the Python and BentoML versions. Unchanged service code gives
the same tag, so building again is a no-op; a code change gives a new Bento. Models are not
packed: the service loads them from the platform's BentoML model store and swaps them at
run time (`/admin/reload`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import yaml

from credit_platform.core import settings

BENTOFILE = Path("api") / "bentofile.yaml"
# Never packed, whatever the patterns say (BentoML skips these too).
ALWAYS_EXCLUDED = (".git/", ".venv/", "venv/", "__pycache__/", ".DS_Store")


class BentoBuildError(RuntimeError):
    """The Bento could not be built from the service's code."""


def bento_name(build_ctx: Path = settings.REPO_ROOT) -> str:
    return yaml.safe_load((build_ctx / BENTOFILE).read_text()).get("name", "credit_score_service")


def packed_files(build_ctx: Path = settings.REPO_ROOT) -> list[str]:
    """The paths (relative, sorted) that the bentofile's include/exclude patterns pack.
    Only the directories the patterns name are walked, never the whole checkout."""
    import pathspec

    options = yaml.safe_load((build_ctx / BENTOFILE).read_text())
    with warnings.catch_warnings():  # BentoML matches with "gitwildmatch": so do we
        warnings.simplefilter("ignore", DeprecationWarning)
        include = pathspec.PathSpec.from_lines("gitwildmatch", options.get("include", ["*"]))
        exclude = pathspec.PathSpec.from_lines(
            "gitwildmatch", [*options.get("exclude", []), *ALWAYS_EXCLUDED]
        )
    found: set[str] = set()
    for pattern in options.get("include", ["*"]):
        literal = []
        for part in pattern.strip("/").split("/"):
            if any(char in part for char in "*?["):
                break
            literal.append(part)
        base = build_ctx.joinpath(*literal)
        if base.is_file():
            candidates = [base]
        elif base.is_dir():
            candidates = [Path(root) / name for root, _, names in os.walk(base) for name in names]
        else:
            continue
        for path in candidates:
            relative = path.relative_to(build_ctx).as_posix()
            if include.match_file(relative) and not exclude.match_file(relative):
                found.add(relative)
    return sorted(found)


def bento_version(build_ctx: Path = settings.REPO_ROOT) -> str:
    """A digest of everything the Bento is made of (see the module docstring)."""
    import bentoml

    digest = hashlib.sha256()
    digest.update(f"python {sys.version_info[0]}.{sys.version_info[1]}\0".encode())
    digest.update(f"bentoml {bentoml.__version__}\0".encode())
    digest.update((build_ctx / BENTOFILE).read_bytes())
    for relative in packed_files(build_ctx):
        digest.update(f"\0{relative}\0".encode())
        digest.update((build_ctx / relative).read_bytes())
    return digest.hexdigest()[:20]


def bento_tag(build_ctx: Path = settings.REPO_ROOT) -> str:
    """The tag the code in `build_ctx` builds to (whether or not it is built yet)."""
    return f"{bento_name(build_ctx)}:{bento_version(build_ctx)}"


def bento_exists(tag: str) -> bool:
    settings.export_bentoml_home()
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        bentoml.bentos.get(tag)
    except NotFound:
        return False
    return True


def build_bento(build_ctx: Path = settings.REPO_ROOT) -> str:
    """Build the service in `build_ctx` into the BentoML store unless that exact code is
    already built; returns the Bento tag.

    The packed files are staged in a temporary directory and built there by `bentoml
    build` in a process of its own: BentoML imports the service to build it, and that
    import must not leave a copy of the code in the caller's modules."""
    home = settings.export_bentoml_home()
    tag = bento_tag(build_ctx)
    if bento_exists(tag):
        return tag
    with tempfile.TemporaryDirectory(prefix="bento-build-") as staging:
        stage = Path(staging)
        for relative in [*packed_files(build_ctx), BENTOFILE.as_posix()]:
            target = stage / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(build_ctx / relative, target)
        tag = bento_tag(stage)  # of the files as copied, should one have changed meanwhile
        name, version = tag.split(":", 1)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "bentoml",
                "build",
                "--bentofile",
                str(stage / BENTOFILE),
                "--name",
                name,
                "--version",
                version,
                "--output",
                "tag",
                str(stage),
            ],
            cwd=stage,
            env={
                **os.environ,
                settings.BENTOML_HOME_ENV: str(home),
                "BENTOML_DO_NOT_TRACK": "true",
                "PYTHONPATH": str(stage),
            },
            capture_output=True,
            text=True,
            check=False,
        )
    # Another process (the api container, a second deploy) may have built it meanwhile.
    if bento_exists(tag):
        return tag
    raise BentoBuildError(
        f"bentoml build of {tag} from {build_ctx} failed (exit {result.returncode}):\n"
        f"{(result.stdout + result.stderr)[-3000:]}"
    )


def serve_bento_command(tag: str, host: str, port: int) -> list[str]:
    """The command line that runs the built Bento `tag` (BentoML imports the service from
    the Bento's own copy of the code)."""
    return [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        tag,
        "--host",
        host,
        "--port",
        str(port),
    ]


def serve_bento_environment(model_tag: str | None = None) -> dict[str, str]:
    """This process's environment for a service process: the platform's BentoML home pinned
    (the models it serves live there) and, when given, the model to load first."""
    env = dict(os.environ)
    env[settings.BENTOML_HOME_ENV] = str(settings.bentoml_home())
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    if model_tag:
        env[settings.API_MODEL_TAG_ENV] = model_tag
    return env
