"""Random applicants for load tests, drawn from the feature declaration (`core.features`).

Each number is drawn evenly from the range real data holds (the feature's `typical_range`,
rounded like the feature: whole numbers for integer features, cents for amounts), each
category from its values, and a loan list names up to four loan types. Every applicant
passes the API's validation; a feature declared tomorrow is drawn the same way.
"""

from __future__ import annotations

import random
from typing import Any

from credit_platform.core.features import FEATURES, Feature

# At most this many items in a random listing (Kaggle's loan lists name up to nine).
MAX_LISTED = 4


def random_value(feature: Feature, rng: random.Random) -> Any:
    """One value of `feature` an applicant could send."""
    if feature.numeric:
        low, high = feature.typical_range
        if feature.kind == "integer":
            return rng.randint(int(low), int(high))
        return round(rng.uniform(low, high), 2)
    if feature.listing:
        items = rng.sample(feature.values, rng.randint(0, min(MAX_LISTED, len(feature.values))))
        return ", ".join(items) if items else None
    return rng.choice(feature.values)


def random_applicant(rng: random.Random | None = None) -> dict[str, Any]:
    """A request row: a customer id and a random value of every declared feature."""
    rng = rng or random.Random()
    return {
        "customer_id": f"CUS_{rng.randint(1, 100_000):06d}",
        **{feature.name: random_value(feature, rng) for feature in FEATURES},
    }
