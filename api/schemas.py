"""Request and response bodies of the prediction API, held to the data contract.

Every field is required as a key, so a forgotten field is an error rather than a silent
"missing". Every feature may be ``null``: the stored training data has gaps in each of
them and the model learned from those gaps. What else a feature may carry comes from
`credit_platform.core.data_contract`: numbers are JSON numbers (not text, not booleans),
finite and within the contract's accepted limits; whole-number features take no
fractions; categories are one of their values and ``type_of_loan`` lists known loan
types. Anything else is refused naming the field and what it allows. A number inside the
limits but outside its plausible range is not refused: the predictor makes it missing,
exactly as the loader does for training, and the answer lists it under ``repaired``.

Validation is a large share of the CPU a 1,000-row batch costs, so the checks run inside
pydantic-core, with one exception: the loan-type list, whose Python check is cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    SerializerFunctionWrapHandler,
    StrictBool,
    StringConstraints,
    create_model,
    model_serializer,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from credit_platform.core import settings
from credit_platform.core.data_contract import (
    ACCEPTED_RANGES,
    NULLABLE_FEATURES,
    PLAUSIBLE_RANGES,
    allowed_values,
    unknown_loan_types,
)
from credit_platform.core.features import (
    FEATURES,
    FLOAT_FEATURES,
    INTEGER_FEATURES,
    LABELS,
    MODEL_FEATURES,
    NUMERIC_FEATURES,
    Feature,
)
from credit_platform.core.reasons import DEFAULT_REASONS, REASON_CODES
from credit_platform.core.schema import ID_LENGTH, TEXT_LENGTH


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


@dataclass(frozen=True)
class Allowed:
    """Replaces every error of the schema it annotates with one message saying what the
    field allows (pydantic-core's custom error, so no Python runs per value)."""

    message: str

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.custom_error_schema(
            handler(source), custom_error_type="not_allowed", custom_error_message=self.message
        )


def _known_loan_types(value: str) -> str:
    """Each listed loan must be a known type; blank means "no loan listed"."""
    unknown = unknown_loan_types(value)
    if unknown:
        named = ", ".join(repr(item) if item else "an empty item" for item in unknown)
        raise ValueError(f"unknown loan type(s) {named}; allowed: {allowed_values('type_of_loan')}")
    return value


def _plausible_range(name: str) -> dict[str, Any]:
    low, high = PLAUSIBLE_RANGES[name]
    return {"x-plausible-minimum": low, "x-plausible-maximum": high}


def _number(name: str, unit: str) -> Any:
    """A numeric feature: null, or a number within the contract's accepted limits (JSON
    schema bounds); values outside the plausible range are made missing at scoring."""
    low, high = ACCEPTED_RANGES[name]
    if name in INTEGER_FEATURES:
        number: Any = Annotated[int, WholeNumber(ge=low, le=high)]
    else:
        # Strict floats take JSON numbers only (no "35", no true), checked in pydantic-core.
        number = Annotated[float, Field(ge=low, le=high, allow_inf_nan=False, strict=True)]
    return Annotated[
        number | None,
        Allowed(f"must be {allowed_values(name)}"),
        Field(
            description=f"{unit}; {allowed_values(name)}",
            json_schema_extra=_plausible_range(name),
        ),
    ]


def _category(name: str, values: tuple[str, ...]) -> Any:
    return Annotated[
        Literal[values] | None,  # type: ignore[valid-type]
        Allowed(f"must be {allowed_values(name)}"),
        Field(description=allowed_values(name)),
    ]


CustomerId = Annotated[
    str,
    # No control character (NUL, tab, line break): the id is stored, logged and joined on.
    StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=ID_LENGTH,
        pattern=r"^[^\x00-\x1f\x7f]*$",
    ),
    Allowed(
        f"must be text of 1 to {ID_LENGTH} characters with no control character "
        "(NUL, tab, line break)"
    ),
]
LoanList = Annotated[
    Annotated[
        str,
        StringConstraints(strip_whitespace=True, max_length=TEXT_LENGTH),
        Allowed(f"must be {allowed_values('type_of_loan')}, at most {TEXT_LENGTH} characters"),
        AfterValidator(_known_loan_types),
    ]
    | None,
    Field(description=allowed_values("type_of_loan")),
]
Label = Literal[LABELS]  # type: ignore[valid-type]


def _feature_field(feature: Feature) -> Any:
    """The request field of a declared feature (`core.features`)."""
    if feature.numeric:
        return _number(feature.name, feature.unit)
    if feature.listing:
        return LoanList
    return _category(feature.name, feature.values)


class _Applicant(BaseModel):
    """What every applicant body has beyond its fields (which `PredictionFeatures` gets
    from the feature declaration)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def features(self) -> dict[str, Any]:
        """The model features in model order (no customer id): a copy of the instance
        dict, the fields being declared in that order (checked below)."""
        features = self.__dict__.copy()
        del features["customer_id"]
        return features


# One applicant: the customer id, then one required field per declared feature, in model
# order. Built once at import; validation runs in pydantic-core as for a written class.
PredictionFeatures = create_model(
    "PredictionFeatures",
    __base__=_Applicant,
    __doc__="One applicant: the customer id and the model features.",
    __module__=__name__,
    customer_id=(CustomerId, ...),
    **{feature.name: (_feature_field(feature), ...) for feature in FEATURES},
)


ExplainFlag = Annotated[
    StrictBool,
    Field(
        description="true: the answer carries the reasons for its label (CatBoost's SHAP "
        "values of the served model, in the applicant's terms); costs far more than the "
        "prediction"
    ),
]
ReasonCount = Annotated[
    int,
    Field(
        ge=1,
        le=len(REASON_CODES),
        strict=True,
        description="how many reasons an explained answer shows, the largest first",
    ),
]


class PredictRequest(BaseModel):
    """Body of POST /predict."""

    model_config = ConfigDict(extra="forbid")

    data: PredictionFeatures
    explain: ExplainFlag = False
    reasons: ReasonCount = DEFAULT_REASONS


class BatchPredictRequest(BaseModel):
    """Body of POST /predict_batch; the row limit is a setting (CREDIT_API_MAX_BATCH_ROWS).
    No Python validator on `data`: one would make pydantic build the whole parsed body as
    Python objects before validating it, which costs more than validating the rows."""

    model_config = ConfigDict(extra="forbid")

    data: Annotated[
        list[PredictionFeatures],
        Field(min_length=1, max_length=settings.api_max_batch_rows()),
    ]
    explain: ExplainFlag = False
    reasons: ReasonCount = DEFAULT_REASONS


class Reason(BaseModel):
    """One reason for the label: a feature of the applicant (or a ratio of two, with both
    in `inputs`), its value, and how much it moved the label's raw score."""

    feature: Literal[REASON_CODES]  # type: ignore[valid-type]
    value: Any = Field(description="the applicant's value as scored (null: missing or repaired)")
    direction: Literal["raises", "lowers"] = Field(
        description="whether it makes the predicted label more or less likely"
    )
    contribution: float = Field(description="its SHAP value for the label's raw score")
    text: str
    inputs: dict[str, Any] | None = Field(
        default=None, description="a ratio's two input features and their values"
    )


class Explanation(BaseModel):
    """Why the model gave the label: base_value + the reasons' contributions +
    other_reasons = raw_score, the model's raw score of the label."""

    label: Label
    raw_score: float
    base_value: float = Field(description="the model's expected raw score of the label")
    reasons: list[Reason]
    other_reasons: float = Field(description="the contributions of the reasons not shown")


class PredictionResponse(BaseModel):
    """The answer: the customer, the predicted label and its probability, and, only when
    the predictor made implausible values missing, which fields those were."""

    customer_id: str
    predict: Label
    confidence: Annotated[float, Field(gt=0, le=1)]
    repaired: list[str] = Field(
        default_factory=list,
        description="features whose value was outside its plausible range (or a filler) and "
        "was scored as missing, as in training; absent when there were none",
    )
    explanation: Explanation | None = Field(
        default=None, description='the reasons, when the request said "explain": true'
    )

    @model_serializer(mode="wrap")
    def _without_empty_repaired(self, handler: SerializerFunctionWrapHandler):
        # No return annotation: the published schema stays the fields' own.
        answer = handler(self)
        if not answer.get("repaired"):
            answer.pop("repaired", None)
        if answer.get("explanation") is None:
            answer.pop("explanation", None)
        return answer


class ChallengerMetadata(BaseModel):
    """A shadow or canary model beside the champion, as GET /metadata reports it."""

    role: str
    model_version: str
    share: float  # of requests it answers: the canary's share, 0 for a shadow
    partition: str | None
    metrics: dict[str, Any]
    loaded_at: str
    # A shadow's work over every worker of the server: rows scored, skipped, failed, queued.
    shadow: dict[str, Any] | None = None


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
    champion_share: float = 1.0  # of requests the champion answers
    challenger: ChallengerMetadata | None = None
    challenger_problem: str | None = None  # why an asked-for challenger is absent here
    # This replica: its id, the model the replicas' record names, why it is not ready.
    replica: dict[str, Any] | None = None


class ReloadRequest(BaseModel):
    """Body of POST /admin/reload; no tag (or an empty body) means the newest model."""

    model_config = ConfigDict(extra="forbid")

    tag: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
        | None
    ) = None


class ChallengerRequest(BaseModel):
    """Body of POST /admin/challenger."""

    model_config = ConfigDict(extra="forbid")

    tag: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    role: Literal["shadow", "canary"]
    # The canary's share of customers (a shadow scores every request and answers none).
    share: Annotated[float, Field(ge=0.0, le=0.5, allow_inf_nan=False)] = 0.05


assert set(NULLABLE_FEATURES) == set(MODEL_FEATURES)
assert set(INTEGER_FEATURES) | set(FLOAT_FEATURES) == set(NUMERIC_FEATURES)
assert list(PredictionFeatures.model_fields) == ["customer_id", *MODEL_FEATURES]
