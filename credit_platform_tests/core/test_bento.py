"""The service's Bento: versioned by what it packs (the same code builds to the same tag, a
code change to a new one), the files BentoML itself would pack, no model packed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from credit_platform.core import settings
from credit_platform.core.bento import (
    BENTOFILE,
    bento_tag,
    bento_version,
    build_bento,
    packed_files,
)

REPO_ROOT = settings.REPO_ROOT


def copy_service_code(target: Path) -> Path:
    """The packed files and the bentofile, copied to `target` (a build context of its own)."""
    for relative in [*packed_files(REPO_ROOT), BENTOFILE.as_posix()]:
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO_ROOT / relative, target / relative)
    return target


def test_packed_files_are_what_bentoml_packs() -> None:
    from bentoml._internal.bento.build_config import BentoPathSpec

    options = yaml.safe_load((REPO_ROOT / BENTOFILE).read_text())
    spec = BentoPathSpec(options["include"], options.get("exclude", []), str(REPO_ROOT))
    expected = set()
    for top in ("api", "credit_platform"):
        for root, _, names in os.walk(REPO_ROOT / top):
            for name in names:
                relative = (Path(root) / name).relative_to(REPO_ROOT).as_posix()
                if spec.includes(relative):
                    expected.add(relative)
    assert set(packed_files()) == expected
    assert "api/service.py" in expected and "credit_platform/core/settings.py" in expected
    assert not any(path.startswith("credit_platform/defs/") for path in expected)


def test_version_is_a_digest_of_the_packed_code(tmp_path: Path) -> None:
    copy = copy_service_code(tmp_path / "copy")
    assert bento_version(copy) == bento_version(REPO_ROOT)

    schemas = copy / "api" / "schemas.py"
    schemas.write_text(schemas.read_text() + "\n# a change to the service code\n")
    changed = bento_version(copy)
    assert changed != bento_version(REPO_ROOT)

    bentofile = copy / BENTOFILE
    bentofile.write_text(bentofile.read_text().replace("orjson==", "orjson>="))
    repinned = bento_version(copy)
    assert repinned not in (changed, bento_version(REPO_ROOT))

    # Files the patterns do not pack (the Dagster code, caches) do not change the Bento.
    (copy / "credit_platform" / "defs").mkdir()
    (copy / "credit_platform" / "defs" / "new.py").write_text("x = 1\n")
    (copy / "api" / "__pycache__").mkdir()
    (copy / "api" / "__pycache__" / "service.cpython-311.pyc").write_bytes(b"\0")
    assert bento_version(copy) == repinned


@pytest.mark.slow
def test_build_is_a_no_op_for_unchanged_code_and_new_for_changed_code(tmp_path: Path) -> None:
    import bentoml

    tag = build_bento()
    assert tag == bento_tag()
    bento = bentoml.bentos.get(tag)
    built_at = bento.info.creation_time
    assert build_bento() == tag
    assert bentoml.bentos.get(tag).info.creation_time == built_at  # not built again

    # The Bento is the code; models come from the platform's model store at run time.
    assert bento.info.all_models == []
    src = Path(bento.path) / "src"
    assert (src / "api" / "service.py").read_bytes() == (REPO_ROOT / "api/service.py").read_bytes()

    copy = copy_service_code(tmp_path / "copy")
    service = copy / "api" / "service.py"
    service.write_text(service.read_text() + "\n# a change to the service code\n")
    changed = build_bento(copy)
    assert changed != tag and changed.split(":")[0] == tag.split(":")[0]
    packed = Path(bentoml.bentos.get(changed).path) / "src" / "api" / "service.py"
    assert packed.read_text().endswith("# a change to the service code\n")
