"""jsonio: the fast codec must never change what a value means."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from ojs_core import jsonio

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_round_trip_is_exact(value: object) -> None:
    data = jsonio.dumps(value)
    assert jsonio.loads(data) == value
    assert json.loads(data) == value  # the stdlib reads the same JSON


def test_big_integers_stay_integers() -> None:
    big = 123456789012345678901234567890
    assert jsonio.loads(jsonio.dumps({"n": big})) == {"n": big}
    assert jsonio.try_loads(b'{"n": 123456789012345678901234567890}') == (False, None)


def test_what_the_fast_parser_refuses_is_left_to_the_careful_one() -> None:
    for text in (b"[NaN]", b"1e400", b'"\\ud800"', b"\xff"):
        assert jsonio.try_loads(text) == (False, None)


def test_output_is_compact_utf8() -> None:
    assert jsonio.dumps({"a": "é", "b": [1, 2]}) == '{"a":"é","b":[1,2]}'.encode()
