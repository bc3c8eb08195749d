"""Request and response bodies of the prediction API, with a lender's validation rules.

Every field is required as a key, so a forgotten field is an error rather than a silent
"missing". Eleven features may carry an explicit ``null``: the ones that are blank in real
application data (the Kaggle source has gaps exactly there); the model was trained with
those gaps and treats null as "unknown" (NaN for numbers, a placeholder for categories).
The other eleven must be present and valid.

Numbers must be JSON numbers (a string or a boolean is refused), finite (the ``NaN`` and
``Infinity`` tokens are refused), and in range: counts are never negative, age is 14-100
years, rates and ratios are percentages. Integer fields accept integral floats (``3.0``) but
not fractions. Categories must be one of the values in `credit_platform.core.features`, and
``type_of_loan`` must list known loan types. Unknown fields are refused.

Validation is a large share of the CPU a 1,000-row batch costs, so the checks run inside
pydantic-core, with one exception: the loan-type list, whose Python check is cached.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from credit_platform.core import settings
from credit_platform.core.features import (
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
from credit_platform.core.schema import ID_LENGTH, TEXT_LENGTH

# Money amounts beyond this are data errors (the Kaggle sentinel -3.33e26), not customers.
MAX_AMOUNT = 1e12


@dataclass(frozen=True)
class WholeNumber:
    """An integer field that takes a JSON number with no fraction (3 or 3.0) and refuses
    text ("3"), booleans and fractions, which pydantic's lax int would coerce or, in strict
    mode, refuse along with 3.0. Built from pydantic-core validators only."""

    ge: int | None = None
    le: int | None = None

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        json_whole_number = core_schema.union_schema(
            [
                core_schema.int_schema(strict=True),
                core_schema.float_schema(strict=True, allow_inf_nan=False, multiple_of=1),
            ],
            custom_error_type="whole_number",
            custom_error_message="must be a whole JSON number (3 or 3.0), "
            "not text, a boolean or a fraction",
        )
        return core_schema.chain_schema(
            [json_whole_number, core_schema.int_schema(ge=self.ge, le=self.le)]
        )

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        bounds = {"minimum": self.ge, "maximum": self.le}
        return {
            "type": "integer",
            **{name: bound for name, bound in bounds.items() if bound is not None},
        }


@functools.lru_cache(maxsize=4096)
def _unknown_loan_types(value: str) -> tuple[str, ...]:
    """The parts of a loan list that are not known loan types (cached: real requests
    repeat a few hundred lists)."""
    parts = (part.strip() for part in _LOAN_SEPARATOR.split(value.strip()))
    return tuple(sorted({part for part in parts if part and part not in LOAN_TYPES}))


def _known_loan_types(value: str) -> str:
    """Each listed loan must be a known type; blank means "no loan listed"."""
    unknown = _unknown_loan_types(value)
    if unknown:
        raise ValueError(
            f"unknown loan type(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(LOAN_TYPES)}"
        )
    return value


_LOAN_SEPARATOR = re.compile(r",\s*(?:and\s+)?|^and\s+")

CustomerId = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=ID_LENGTH)
]
Count = Annotated[int, WholeNumber(ge=0)]
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


class PredictionFeatures(BaseModel):
    """One applicant: the customer id and the 22 model features."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customer_id: CustomerId
    age: Annotated[int, WholeNumber(ge=14, le=100), Field(description="years")]
    occupation: Occupation | None
    annual_income: Amount
    monthly_inhand_salary: Amount | None
    num_bank_accounts: Count
    num_credit_card: Count
    interest_rate: Annotated[int, WholeNumber(ge=0, le=100), Field(description="percent")]
    num_of_loan: Count
    type_of_loan: (
        Annotated[
            str,
            Field(
                max_length=TEXT_LENGTH, description='comma list, e.g. "Auto Loan, and Payday Loan"'
            ),
            AfterValidator(_known_loan_types),
        ]
        | None
    )
    delay_from_due_date: Annotated[
        int,
        WholeNumber(ge=-365, le=3650),
        Field(description="days; negative means paid early"),
    ]
    num_of_delayed_payment: Count | None
    changed_credit_limit: SignedAmount | None
    num_credit_inquiries: Count | None
    credit_mix: CreditMix | None
    outstanding_debt: Amount
    credit_utilization_ratio: Percentage
    credit_history_age: (
        Annotated[int, WholeNumber(ge=0, le=1200), Field(description="months")] | None
    )
    payment_of_min_amount: PaymentOfMinAmount
    total_emi_per_month: Amount
    amount_invested_monthly: Amount | None
    payment_behaviour: PaymentBehaviour | None
    monthly_balance: SignedAmount | None

    def features(self) -> dict[str, Any]:
        """The 22 model features in model order (no customer id): a copy of the instance
        dict, the fields being declared in that order (checked below)."""
        features = self.__dict__.copy()
        del features["customer_id"]
        return features


class PredictRequest(BaseModel):
    """Body of POST /predict."""

    model_config = ConfigDict(extra="forbid")

    data: PredictionFeatures


class BatchPredictRequest(BaseModel):
    """Body of POST /predict_batch; the row limit is a setting (CREDIT_API_MAX_BATCH_ROWS).
    No Python validator on `data`: one would make pydantic build the whole parsed body as
    Python objects before validating it, which costs more than validating the rows."""

    model_config = ConfigDict(extra="forbid")

    data: Annotated[
        list[PredictionFeatures],
        Field(min_length=1, max_length=settings.api_max_batch_rows()),
    ]


class PredictionResponse(BaseModel):
    """The answer: the customer, the predicted label and its probability."""

    customer_id: str
    predict: Label
    confidence: Annotated[float, Field(gt=0, le=1)]


class ModelMetadata(BaseModel):
    """What GET /metadata reports: the model being served and the Bento serving it."""

    model_name: str
    model_version: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    partition: str | None
    creation_time: str
    loaded_at: str
    # The Bento this process runs ("<name>:<version>"); None when it runs from source.
    bento_tag: str | None = None


class ReloadRequest(BaseModel):
    """Body of POST /admin/reload; no tag (or an empty body) means the newest model."""

    model_config = ConfigDict(extra="forbid")

    tag: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
        | None
    ) = None


assert set(NULLABLE_FEATURES) <= set(MODEL_FEATURES)
assert set(INTEGER_FEATURES) | set(FLOAT_FEATURES) == set(NUMERIC_FEATURES)
assert all(
    any(isinstance(item, WholeNumber) for item in PredictionFeatures.model_fields[name].metadata)
    or "WholeNumber" in repr(PredictionFeatures.model_fields[name].annotation)
    for name in INTEGER_FEATURES
), "every integer feature must be a WholeNumber"
assert list(PredictionFeatures.model_fields) == ["customer_id", *MODEL_FEATURES]
