"""A tiny real CatBoost model trained on the shared Kaggle sample, for tests that need a
model in the BentoML store (the API above all) without running the training pipeline.

It goes through the same seams as production: `fit_scalers` and `prepare_model_input`
for the input, `save_model_bundle` into the (test session's) BentoML store.
"""

from __future__ import annotations

import pandas as pd
from catboost import CatBoostClassifier

from credit_platform.core.derived_features import DERIVED_CATEGORICAL_FEATURES
from credit_platform.core.features import (
    CATEGORICAL_FEATURES,
    TARGET,
    TEXT_FEATURES,
)
from credit_platform.core.model_input import Scalers, fit_scalers, prepare_model_input
from credit_platform.core.model_store import save_model_bundle
from credit_platform.core.training import confusion_document, evaluate, make_pool

# CatBoost's default text processing builds a bigram dictionary, which is empty for the
# one-token payment_behaviour values; a comma tokenizer with a word dictionary fits both.
TEXT_PROCESSING = {
    "tokenizers": [{"tokenizer_id": "Comma", "delimiter": ",", "lowercasing": "true"}],
    "dictionaries": [{"dictionary_id": "Word", "occurrence_lower_bound": "3", "gram_order": "1"}],
    "feature_processing": {
        "default": [
            {
                "dictionaries_names": ["Word"],
                "feature_calcers": ["BoW"],
                "tokenizers_names": ["Comma"],
            }
        ]
    },
}


def train_tiny_model(
    frame: pd.DataFrame,
    *,
    iterations: int = 20,
    depth: int = 4,
    seed: int = 0,
    derived: bool = False,
) -> tuple[CatBoostClassifier, Scalers]:
    """A CatBoost model in seconds (iterations <= 30), with categorical and text features
    (and the derived features after the inputs, with `derived`)."""
    if iterations > 30:
        raise ValueError("the test model is meant to be tiny: at most 30 iterations")
    scalers = fit_scalers(frame)
    model = CatBoostClassifier(
        iterations=iterations,
        depth=depth,
        learning_rate=0.3,
        loss_function="MultiClassOneVsAll",
        cat_features=list(CATEGORICAL_FEATURES + (DERIVED_CATEGORICAL_FEATURES if derived else ())),
        text_features=list(TEXT_FEATURES),
        text_processing=TEXT_PROCESSING,
        random_seed=seed,
        thread_count=2,
        verbose=False,
        allow_writing_files=False,
    )
    model.fit(prepare_model_input(frame, scalers, derived=derived), frame[TARGET])
    return model, scalers


def save_tiny_model(
    frame: pd.DataFrame,
    *,
    partition: str = "2025-01-15",
    iterations: int = 20,
    depth: int = 4,
    seed: int = 0,
) -> str:
    """Train on the first four fifths of the rows, report test metrics on the rest (as the
    pipeline saves them) and save to the BentoML store; returns the tag."""
    cut = len(frame) * 4 // 5
    train, test = frame.iloc[:cut], frame.iloc[cut:]
    model, scalers = train_tiny_model(train, iterations=iterations, depth=depth, seed=seed)
    tested = evaluate(model, make_pool(prepare_model_input(test, scalers)), test[TARGET])
    return save_model_bundle(
        model,
        scalers,
        partition=partition,
        metrics=tested.metrics("test"),
        confusion=confusion_document(tested),
        params={"iterations": iterations, "depth": depth, "learning_rate": 0.3, "seed": seed},
        extra={"source": "credit_platform_tests.model_fixtures"},
    )
