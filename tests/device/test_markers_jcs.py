"""``markers.jcs`` takes the C JSON encoder for plain values and ``rfc8785`` for the rest: the bytes are
RFC 8785's either way (what ``prev`` hashes and signatures cover must never depend on the path)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from bodycam.device.errors import MarkerError
from bodycam.device.uplink.markers import _doubles, _plain, jcs

EDGE_FLOATS = [0.0, -0.0, 1.0, -3.0, 0.5, 1e-4, 9.99e-5, 1e-7, 1e15 + 0.5, 1e16, 1e21, 1e22, 5e-324,
               1.7976931348623157e308, 0.1, 0.2 + 0.1, 123456789012345.6, 2.0**53, 52.5224567, -0.12, 1 / 3]
EDGE_INTS = [0, 1, -1, 2**53 - 1, 2**53, -(2**53) + 1, -(2**53), 2**63 - 1, -(2**63)]
EDGE_TEXT = ["", "a\"b\\c", "\x00\x01\x1f\x7f", "\b\f\n\r\t", "\u2028\u2029", "é", "日本", "\U0001f600", "\ue000",
             "<script>alert(1)</script>"]


def rfc(value: Any) -> bytes:
    return rfc8785.dumps(_doubles(value))


@pytest.mark.parametrize("value", [*EDGE_FLOATS, *EDGE_INTS, *EDGE_TEXT, None, True, False, [], {}])
def test_edge_values_give_rfc8785_bytes(value: Any) -> None:
    assert jcs(value) == rfc(value)
    assert jcs({"k": value, "list": [value]}) == rfc({"k": value, "list": [value]})


def test_keys_sort_by_utf16_code_units_not_code_points() -> None:
    """U+E000 sorts after U+1F600 in UTF-16 (a surrogate pair, 0xD83D...) and before it by code point."""
    value = {"\ue000": 1, "\U0001f600": 2, "a": 3}
    assert not _plain(value)
    assert jcs(value) == rfc(value) == '{"a":3,"\U0001f600":2,"\ue000":1}'.encode()


def test_a_marker_shaped_value_takes_the_fast_path() -> None:
    marker = {"schema": "bodycam.marker/1", "seq": 12, "t": "2026-01-01T00:00:00.000Z", "confidence": 0.97,
              "location": {"lat": 52.5224567, "lon": 13.4076594, "alt_m": 34.5, "hdop": 0.9, "fix": "3d",
                           "age_s": 0.4}, "extra": {"evidence": {"audio": 0.97}}, "media": None}
    assert _plain(marker)
    assert jcs(marker) == rfc(marker)


def test_what_neither_can_write_is_a_marker_error() -> None:
    for bad in ({"x": math.nan}, {"x": math.inf}, {"x": "\ud800"}):
        with pytest.raises(MarkerError):
            jcs(bad)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=1500, deadline=None)
@given(json_values)
def test_any_json_value_gives_rfc8785_bytes(value: Any) -> None:
    try:
        expected = rfc(value)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError, ValueError):
        with pytest.raises(MarkerError):
            jcs(value)
        return
    assert jcs(value) == expected
