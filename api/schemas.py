"""Request and response bodies of the prediction API, with a lender's validation rules.

Every field is required as a key, so a forgotten field is an error rather than a silent
"missing". Eleven features may carry an explicit ``null``: the ones that are blank in real
application data (the Kaggle source has gaps exactly there); the model was trained with
those gaps and treats null as "unknown" (NaN for numbers, a placeholder for categories).
The other eleven must be present and valid.

Numbers must be JSON numbers (a string or a boolean is refused), finite (the ``NaN`` and
``Infinity`` tokens are refused), and in range: counts are never negative, age is 14-100
years, rates and ratios are percentages. Integer fields accept integral floats (``3.0``) but
not fractions. Categories must be one of the values in `credit_platform.features`, and
``type_of_loan`` must list known loan types. Unknown fields are refused.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from credit_platform import settings
from credit_platform.features import (
    CREDIT_MIX_VALUES,
    FLOAT_FEATURES,
    INTEGER_FEATURES,
    LABELS,
    LOAN_TYPES,
    MODEL_FEATURES,
    NUMERIC_FEATURES,
    OCCUPATION_VALUES,
    PAYMENT_BEHAVIOUR_VALUES,
    PAYMENT_OF_MIN_AMOUNT_VALUES,
)
from credit_platform.schema import ID_LENGTH, TEXT_LENGTH

# Money amounts beyond this are data errors (the Kaggle sentinel -3.33e26), not customers.
MAX_AMOUNT = 1e12

CustomerId = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=ID_LENGTH)
]
Count = Annotated[int, Field(ge=0)]
# Strict floats take JSON numbers only (no "35", no true), checked in pydantic-core: a
# Python validator per field per row costs more than the rest of a 1,000-row batch's parse.
Amount = Annotated[float, Field(ge=0, le=MAX_AMOUNT, allow_inf_nan=False, strict=True)]
SignedAmount = Annotated[
    float, Field(ge=-MAX_AMOUNT, le=MAX_AMOUNT, allow_inf_nan=False, strict=True)
]
Percentage = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False, strict=True)]

Occupation = Literal[OCCUPATION_VALUES]  # type: ignore[valid-type]
CreditMix = Literal[CREDIT_MIX_VALUES]  # type: ignore[valid-type]
PaymentOfMinAmount = Literal[PAYMENT_OF_MIN_AMOUNT_VALUES]  # type: ignore[valid-type]
PaymentBehaviour = Literal[PAYMENT_BEHAVIOUR_VALUES]  # type: ignore[valid-type]
Label = Literal[LABELS]  # type: ignore[valid-type]

# Features a request may set to null (documented above); the rest are mandatory values.
NULLABLE_FEATURES: tuple[str, ...] = (
    "occupation",
    "monthly_inhand_salary",
    "type_of_loan",
    "num_of_delayed_payment",
    "changed_credit_limit",
    "num_credit_inquiries",
    "credit_mix",
    "credit_history_age",
    "amount_invested_monthly",
    "payment_behaviour",
    "monthly_balance",
)

_LOAN_SEPARATOR = re.compile(r",\s*(?:and\s+)?|^and\s+")


class PredictionFeatures(BaseModel):
    """One applicant: the customer id and the 22 model features."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customer_id: CustomerId
    age: Annotated[int, Field(ge=14, le=100, description="years")]
    occupation: Occupation | None
    annual_income: Amount
    monthly_inhand_salary: Amount | None
    num_bank_accounts: Count
    num_credit_card: Count
    interest_rate: Annotated[int, Field(ge=0, le=100, description="percent")]
    num_of_loan: Count
    type_of_loan: (
        Annotated[
            str,
            Field(
                max_length=TEXT_LENGTH, description='comma list, e.g. "Auto Loan, and Payday Loan"'
            ),
        ]
        | None
    )
    delay_from_due_date: Annotated[
        int, Field(ge=-365, le=3650, description="days; negative means paid early")
    ]
    num_of_delayed_payment: Count | None
    changed_credit_limit: SignedAmount | None
    num_credit_inquiries: Count | None
    credit_mix: CreditMix | None
    outstanding_debt: Amount
    credit_utilization_ratio: Percentage
    credit_history_age: Annotated[int, Field(ge=0, le=1200, description="months")] | None
    payment_of_min_amount: PaymentOfMinAmount
    total_emi_per_month: Amount
    amount_invested_monthly: Amount | None
    payment_behaviour: PaymentBehaviour | None
    monthly_balance: SignedAmount | None

    @field_validator(*INTEGER_FEATURES, mode="before")
    @classmethod
    def _json_number_only(cls, value: Any) -> Any:
        """Refuse "35" and true where a count is due: pydantic's lax mode would coerce them
        (strict mode would also refuse 3.0, which counts accept)."""
        if isinstance(value, bool | str | bytes):
            raise ValueError(f"must be a JSON number, not {type(value).__name__}")
        return value

    @field_validator("type_of_loan")
    @classmethod
    def _known_loan_types(cls, value: str | None) -> str | None:
        """Each listed loan must be a known type; blank means "no loan listed"."""
        if value is None or not value.strip():
            return value
        parts = [part.strip() for part in _LOAN_SEPARATOR.split(value.strip())]
        unknown = sorted({part for part in parts if part and part not in LOAN_TYPES})
        if unknown:
            raise ValueError(
                f"unknown loan type(s) {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(LOAN_TYPES)}"
            )
        return value

    def features(self) -> dict[str, Any]:
        """The 22 model features in model order (no customer id)."""
        return {name: getattr(self, name) for name in MODEL_FEATURES}


class PredictRequest(BaseModel):
    """Body of POST /predict."""

    model_config = ConfigDict(extra="forbid")

    data: PredictionFeatures


class BatchPredictRequest(BaseModel):
    """Body of POST /predict_batch; the row limit is a setting (CREDIT_API_MAX_BATCH_ROWS)."""

    model_config = ConfigDict(extra="forbid")

    data: Annotated[
        list[PredictionFeatures],
        Field(min_length=1, max_length=settings.api_max_batch_rows()),
    ]

    @field_validator("data", mode="before")
    @classmethod
    def _within_row_limit(cls, value: Any) -> Any:
        """Refuse an oversized batch before validating its rows one by one."""
        limit = settings.api_max_batch_rows()
        if isinstance(value, list) and len(value) > limit:
            raise ValueError(
                f"a batch holds at most {limit} rows (CREDIT_API_MAX_BATCH_ROWS), not {len(value)}"
            )
        return value


class PredictionResponse(BaseModel):
    """The seed's response: the customer, the predicted label and its probability."""

    customer_id: str
    predict: Label
    confidence: Annotated[float, Field(gt=0, le=1)]


class ModelMetadata(BaseModel):
    """What GET /metadata reports about the model being served."""

    model_name: str
    model_version: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    partition: str | None
    creation_time: str
    loaded_at: str


class ReloadRequest(BaseModel):
    """Body of POST /admin/reload; no tag (or an empty body) means the newest model."""

    model_config = ConfigDict(extra="forbid")

    tag: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
        | None
    ) = None


assert set(NULLABLE_FEATURES) <= set(MODEL_FEATURES)
assert set(INTEGER_FEATURES) | set(FLOAT_FEATURES) == set(NUMERIC_FEATURES)
assert set(PredictionFeatures.model_fields) == {"customer_id", *MODEL_FEATURES}
