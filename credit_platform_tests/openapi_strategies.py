"""Hypothesis strategies built from an OpenAPI (JSON Schema) document: request bodies that
follow the schema a service publishes, to fuzz it from its own contract.

Covers the keywords pydantic emits for the API's models: $ref to components, anyOf, enum,
const, object (required, additionalProperties), array (minItems/maxItems), string lengths,
numeric bounds (inclusive and exclusive), boolean and null.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

MAX_ARRAY = 10


def from_openapi(schema: dict[str, Any], components: dict[str, Any]) -> st.SearchStrategy:
    """Values valid against `schema`; refs resolve in `components` (the document's
    `components` section)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return from_openapi(components["schemas"][name], components)
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            return st.one_of([from_openapi(option, components) for option in schema[combinator]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {name: from_openapi(properties[name], components) for name in required},
            optional={
                name: from_openapi(sub, components)
                for name, sub in properties.items()
                if name not in required
            },
        )
    if kind == "array":
        return st.lists(
            from_openapi(schema.get("items", {}), components),
            min_size=schema.get("minItems", 0),
            max_size=min(schema.get("maxItems", MAX_ARRAY), MAX_ARRAY),
        )
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0), max_size=schema.get("maxLength", 64))
    if kind == "integer":
        low = schema.get("minimum", schema.get("exclusiveMinimum", -(2**31) - 1) + 1)
        high = schema.get("maximum", schema.get("exclusiveMaximum", 2**31 + 1) - 1)
        return st.integers(min_value=int(low), max_value=int(high))
    if kind == "number":
        return st.floats(
            min_value=schema.get("minimum", schema.get("exclusiveMinimum")),
            max_value=schema.get("maximum", schema.get("exclusiveMaximum")),
            exclude_min="exclusiveMinimum" in schema,
            exclude_max="exclusiveMaximum" in schema,
            allow_nan=False,
            allow_infinity=False,
        )
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    raise ValueError(f"no strategy for schema {schema!r}")
