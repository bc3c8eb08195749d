"""Rows as training sees them: the loader's numeric rules applied to a frame of sample
rows read the way a client reads them (`bench.sample_requests.load_sample`), the reference
the served model's input is compared with."""

from __future__ import annotations

import pandas as pd

from credit_platform.core.features import NUMERIC_FEATURES
from credit_platform.ingest.cleaning import CleaningLog, apply_numeric_rules
from credit_platform.ingest.writer import IngestSummary


def as_loaded(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with the loader's numeric rules applied (fillers, out-of-range values and
    fractions in whole-number columns nulled), as the store would hold it."""
    loaded = frame.copy()
    log = CleaningLog()
    for name in NUMERIC_FEATURES:
        loaded[name] = apply_numeric_rules(name, frame[name], log)
    return loaded


def nulled_in(summary: IngestSummary, column: str) -> int:
    """Values of `column` a load nulled, whatever the reason (`summary.nulled` counts them per
    column and reason)."""
    return sum(count for (name, _), count in summary.nulled.items() if name == column)
