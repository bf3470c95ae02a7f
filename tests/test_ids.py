"""Connection ids: integers, UUIDs (canonicalised) and short text ids; which column type each needs."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from engine.ids import describe, equals_sql, fits, kind_mismatch, kind_of, parse_connection_id

A = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"


@pytest.mark.parametrize(("value", "canonical", "kind"), [
    (7, 7, "bigint"), ("-7", -7, "bigint"), (" 42 ", 42, "bigint"), (2**63 - 1, 2**63 - 1, "bigint"),
    (A.upper(), A, "uuid"), (uuid.UUID(A), A, "uuid"),
    ("shop-eu:7", "shop-eu:7", "text"), ("a" * 64, "a" * 64, "text"), ("3f2504e04f8911d39a0c0305e82c3301",
                                                                       "3f2504e04f8911d39a0c0305e82c3301", "text"),
])
def test_parse_and_kind(value: Any, canonical: Any, kind: str) -> None:
    assert parse_connection_id(value) == canonical
    assert kind_of(parse_connection_id(value)) == kind


@pytest.mark.parametrize("value", [True, 7.5, 2**63, "a" * 65, "has space", "", "x/y", None, [1]])
def test_bad_ids_say_what_is_accepted(value: Any) -> None:
    with pytest.raises(ValueError, match="connection id"):
        parse_connection_id(value)


def test_fits_and_the_one_line_mismatch() -> None:
    assert fits("bigint", 7) and not fits("bigint", A) and not fits("bigint", "shop")
    assert fits("uuid", A) and not fits("uuid", 7) and not fits("uuid", "shop")
    assert fits("text", 7) and fits("text", A) and fits("text", "shop")
    assert kind_mismatch("orders", "uuid", 42) == "orders.connection_id is uuid; connection id 42 is an integer"
    assert kind_mismatch("orders", "bigint", A) == f"orders.connection_id is bigint; connection id {describe(A)}"
    assert kind_mismatch("orders", "text", 42) is None
    assert equals_sql('"connection_id"', "uuid") == '"connection_id" = $1::uuid'
    assert equals_sql('"connection_id"', "integer") == '"connection_id"::text = $1'
