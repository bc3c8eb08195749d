"""The JSON-lines value's parse: typed columns, or None whenever the value is not exactly
the expected rows (so the caller reads them the ordinary way)."""

import pyarrow as pa
import pytest

from credit_platform.core.json_lines import NUMBER, TEXT, LineField, object_sql, parse_lines

SCHEMA = pa.schema([("name", pa.string()), ("age", pa.float64())])


def test_lines_parse_into_the_schemas_columns():
    table = parse_lines('{"name":"a","age":3,"extra":[1]}\n{"name":null}', 2, SCHEMA)
    assert table.to_pylist() == [{"name": "a", "age": 3.0}, {"name": None, "age": None}]


@pytest.mark.parametrize(
    "value, count",
    [
        ('{"name":"a","age":3}\n{"name":"b","ag', 2),  # cut short at the packet limit
        ('{"name":"a","age":3}', 2),  # fewer rows than counted
        ('{"name":"a","age":"three"}', 1),  # a text where a number belongs
        ('{"name":"a","age":1e400}', 1),  # no double holds it
        ("[1, 2]", 1),  # no object
        (None, 1),
    ],
)
def test_anything_but_the_expected_rows_is_none(value, count):
    assert parse_lines(value, count, SCHEMA) is None


def test_the_row_object_sql_quotes_texts_and_refuses_an_unknown_kind():
    sql = object_sql([LineField("name", "name", TEXT), LineField("age", "age", NUMBER)])
    assert sql == (
        "CONCAT('{\"name\":', COALESCE(JSON_QUOTE(name), 'null'), "
        "',\"age\":', COALESCE(age, 'null'), '}')"
    )
    with pytest.raises(ValueError, match="unknown field kind"):
        object_sql([LineField("x", "x", "blob")])
