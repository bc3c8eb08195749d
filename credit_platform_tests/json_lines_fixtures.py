"""Watching the JSON-lines fast path of a bulk reader (`core.json_lines.parse_lines`)."""

from __future__ import annotations

from types import ModuleType

import pytest

from credit_platform.core import json_lines


def record_parses(monkeypatch: pytest.MonkeyPatch, module: ModuleType) -> list[bool]:
    """Patch `module.parse_lines` to record, per aggregated value, whether it parsed (True)
    or was handed to the ordinary read (False); returns that growing record."""
    parsed: list[bool] = []

    def recording(lines, count, schema):
        table = json_lines.parse_lines(lines, count, schema)
        parsed.append(table is not None)
        return table

    monkeypatch.setattr(module, "parse_lines", recording)
    return parsed
