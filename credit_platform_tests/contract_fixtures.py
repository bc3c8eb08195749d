"""Rows as training sees them: the loader's numeric rules applied to a frame of sample
rows read the way a client reads them (`api.sample_requests.load_sample`), the reference
the served model's input is compared with."""

from __future__ import annotations

import pandas as pd

from credit_platform.core.features import NUMERIC_FEATURES
from credit_platform.ingest.cleaning import CleaningLog, apply_numeric_rules


def as_loaded(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with the loader's numeric rules applied (fillers, out-of-range values and
    fractions in whole-number columns nulled), as the store would hold it."""
    loaded = frame.copy()
    log = CleaningLog()
    for name in NUMERIC_FEATURES:
        loaded[name] = apply_numeric_rules(name, frame[name], log)
    return loaded
