"""The seed-style baseline of the serving benchmark: seed 000's design, written anew.

It serves the same model from the same BentoML store, but the way the course service did:
BentoML's default configuration (one worker, access log and tracing middleware on), a
synchronous endpoint, a one-row pandas DataFrame per request scaled column by column with
the fitted RobustScalers, CatBoost called twice (`prediction_type="Probability"` for the
confidence, then `"Class"` for the label), and one ORM session that adds the log row and
commits it before the answer: one synchronous database commit per request.

Only what the benchmark needs differs from the seed: the model tag comes from
CREDIT_API_MODEL_TAG, and the X-Request-ID header (or a fresh id) fills the log's
request_id column, so the rows of a run can be counted. Not part of the platform.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime

from credit_platform.core import settings

settings.export_bentoml_home()

import bentoml  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from pydantic import BaseModel, create_model  # noqa: E402
from sqlalchemy import JSON, Column, DateTime, Float, Integer, String, create_engine  # noqa: E402
from sqlalchemy.orm import Session, declarative_base  # noqa: E402

from credit_platform.core.features import (  # noqa: E402
    CATEGORICAL_FEATURES,
    FEATURES,
    TEXT_FEATURES,
)
from credit_platform.core.model_input import MISSING_CATEGORY, MISSING_TEXT  # noqa: E402
from credit_platform.core.model_store import load_model_bundle  # noqa: E402

Base = declarative_base()


class PredictionLog(Base):
    """The log table, mapped the ORM way as in the seed."""

    __tablename__ = "credit_predictions_api_log"
    id = Column(Integer, primary_key=True, autoincrement=True)
    request_id = Column(String(64), nullable=False, unique=True)
    customer_id = Column(String(32), nullable=False)
    features = Column(JSON, nullable=False)
    prediction = Column(String(16), nullable=False)
    confidence = Column(Float, nullable=False)
    elapsed_ms = Column(Float, nullable=False)
    model_version = Column(String(128), nullable=False)
    created_at = Column(DateTime, nullable=False)


# Seed-style body: plain types, no ranges, no category checks; one field per declared
# feature (`core.features`), each nullable.
_PLAIN_TYPES = {"integer": int, "float": float, "category": str, "text": str}
Features = create_model(
    "Features",
    customer_id=(str, ...),
    **{feature.name: (_PLAIN_TYPES[feature.kind] | None, ...) for feature in FEATURES},
)


class Answer(BaseModel):
    customer_id: str
    predict: str
    confidence: float


@bentoml.service(name="seed_baseline_service", resources={"cpu": "2"}, traffic={"timeout": 10})
class SeedBaselineService:
    def __init__(self) -> None:
        bundle = load_model_bundle(settings.api_model_tag())
        self.tag = bundle.tag
        self.model = bundle.model
        self.scalers = bundle.scalers
        self.engine = create_engine(settings.feature_store_url())
        self.db = Session(self.engine)  # one session for the service, as in the seed
        self.db_lock = threading.Lock()  # ... made safe for BentoML's thread pool

    @bentoml.api
    def predict(self, data: Features, ctx: bentoml.Context) -> Answer:  # type: ignore[valid-type]
        started = time.time()
        frame = pd.DataFrame([data.model_dump()])
        customer_id = frame.pop("customer_id")
        for column, scaler in self.scalers.items():
            frame[column] = scaler.transform(frame[[column]])
        for column in CATEGORICAL_FEATURES:
            frame[column] = frame[column].fillna(MISSING_CATEGORY)
        for column in TEXT_FEATURES:
            frame[column] = frame[column].fillna(MISSING_TEXT)
        frame = frame[list(self.model.feature_names_)]

        confidence = float(np.max(self.model.predict(frame, prediction_type="Probability")))
        label = str(self.model.predict(frame, prediction_type="Class").item())
        elapsed_ms = (time.time() - started) * 1000

        request_id = ctx.request.headers.get("X-Request-ID") or uuid.uuid4().hex
        with self.db_lock:
            self.db.add(
                PredictionLog(
                    request_id=request_id,
                    customer_id=str(customer_id.item()),
                    features=data.model_dump(exclude={"customer_id"}),
                    prediction=label,
                    confidence=confidence,
                    elapsed_ms=elapsed_ms,
                    model_version=self.tag,
                    created_at=datetime.now(UTC).replace(tzinfo=None),
                )
            )
            self.db.commit()
        ctx.response.headers["X-Request-ID"] = request_id
        return Answer(customer_id=str(customer_id.item()), predict=label, confidence=confidence)
