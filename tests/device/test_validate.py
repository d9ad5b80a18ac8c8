"""The one validator (device/uplink/validate.py): the camera refuses before committing what base
would refuse; the config's device id is the markers' device id; the JSON Schema agrees."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bodycam.device.clock import VirtualClock
from bodycam.device.config import DeviceSection, config_from_dict
from bodycam.device.errors import ConfigError, MarkerError
from bodycam.device.uplink.markers import GENESIS_PREV, Marker, MarkerDraft, ModelRef, build_marker, uuid7
from bodycam.device.uplink.outbox import Outbox
from bodycam.device.uplink.validate import (
    T_MAX,
    T_MAX_NS,
    T_MIN,
    check_time,
    check_tree,
    check_wall_ns,
    is_device_id,
)

WALL = 1_764_072_000_000_000_000


def draft(**kw: Any) -> MarkerDraft:
    return MarkerDraft(**{"kind": "manual", "t_mono_ns": 1, "wall_ns": WALL, **kw})


def test_patterns_are_full_matches() -> None:
    with pytest.raises(MarkerError, match="kind"):
        draft(kind="gunshot\n")
    assert not is_device_id("cam-01\n") and not is_device_id("cam 01") and not is_device_id("kämera")
    assert is_device_id("cam-01") and is_device_id("unit.7_b") and not is_device_id("-cam") and not is_device_id("x" * 65)
    good = build_marker(draft(), marker_id=uuid7(WALL), device="cam-01", seq=1, prev=GENESIS_PREV).to_dict()
    for field, value in (("id", good["id"] + "\n"), ("prev", GENESIS_PREV + "\n"), ("t", good["t"] + "\n")):
        with pytest.raises(MarkerError, match=field):
            Marker.from_dict({**good, field: value})


def test_the_config_uses_the_markers_device_id_rule() -> None:
    for bad in ("kämera-01", "cam 01", "cam/01", "-cam", "cam\n"):
        with pytest.raises(ConfigError, match=r"device\.id"):
            config_from_dict({"device": {"id": bad}})
        assert not is_device_id(bad)
    assert DeviceSection(id="unit.7_b").id == "unit.7_b"  # '.' is allowed in markers, so in the config too


def test_time_window() -> None:
    assert check_time(T_MIN) == 0 and check_time(T_MAX) == T_MAX_NS
    for bad in ("2262-04-11T23:47:16.855Z", "9999-12-31T23:59:59.999Z", "0001-01-01T00:00:00.000Z",
                "1969-12-31T23:59:59.999Z", "2025-02-30T00:00:00.000Z"):
        with pytest.raises(MarkerError, match="t"):
            check_time(bad)
    with pytest.raises(MarkerError, match="wall_ns"):
        draft(wall_ns=2**63)
    with pytest.raises(MarkerError):
        check_wall_ns(-1)
    assert check_time("2025-11-25T12:00:00.123Z") == 1_764_072_000_123_000_000


def test_values_the_stores_cannot_hold_are_refused_before_the_outbox_commits(tmp_path: Path) -> None:
    clock = VirtualClock(wall_epoch_ns=WALL)
    with Outbox(tmp_path / "o.db", "cam-01", clock, fsync="normal") as ob:
        for extra, needle in (
            ({"note": "\ud800"}, "extra.note"),
            ({"\udfff": 1}, "extra key"),
            ({"n": 2**63}, "extra.n"),
            ({"x": "a\x00"}, "extra.x"),
        ):
            with pytest.raises(MarkerError, match=needle):
                ob.record(draft(extra=extra))
        deep: Any = 1
        for _ in range(1000):
            deep = {"a": deep}
        with pytest.raises(MarkerError, match="nested more than"):
            ob.record(draft(extra=deep))
        with pytest.raises(MarkerError, match="not valid text"):
            ob.record(draft(kind="gunshot", confidence=0.9, model=ModelRef("m\ud800", "1", "a" * 64)))
        assert ob.last_seq == 0  # nothing committed, the chain goes on
        assert ob.record(draft()).seq == 1


def test_check_tree_is_iterative() -> None:
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(MarkerError, match="nested more than 16"):
        check_tree(deep)
    with pytest.raises(MarkerError, match="more than 4096 values"):
        check_tree(list(range(5000)))


def _schema_validator() -> Any:
    text = (resources.files("bodycam.device") / "schema" / "marker.schema.json").read_text("utf-8")
    schema = json.loads(text)
    return jsonschema.validators.validator_for(schema)(schema)


VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**64), max_value=2**64), st.floats(allow_nan=False),
    st.text(max_size=8), st.sampled_from(["gunshot", "gunshot\n", "3d", "a" * 64, "2026-11-25T12:00:00.000Z"]),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(changes=st.dictionaries(st.sampled_from(["seq", "kind", "t", "t_mono_ns", "confidence", "media", "location",
                                                 "model", "extra", "sig", "prev", "device"]), VALUES, max_size=3))
def test_the_json_schema_accepts_every_marker_the_validator_accepts(changes: dict[str, Any]) -> None:
    good = build_marker(
        draft(kind="gunshot", confidence=0.5, model=ModelRef("m", "1", "a" * 64)),
        marker_id=uuid7(WALL), device="cam-01", seq=1, prev=GENESIS_PREV,
    ).to_dict()
    doc = {**good, **changes}
    try:
        Marker.from_json(json.dumps(doc))
    except MarkerError:
        return
    _schema_validator().validate(doc)
