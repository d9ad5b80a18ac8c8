"""Bad input at base: never a crash, always rejected and counted (hypothesis)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bodycam.base.consumer import Consumer, ConsumerOptions
from bodycam.base.store import SqliteStore
from bodycam.device.clock import VirtualClock
from bodycam.device.uplink.markers import FIELD_RE, GENESIS_PREV, MarkerDraft, ModelRef, build_marker, uuid7

WALL = 1_764_072_000_000_000_000
GOOD = build_marker(
    MarkerDraft(
        kind="gunshot", t_mono_ns=1, wall_ns=WALL, confidence=0.5, model=ModelRef("m", "1", "a" * 64)
    ),
    marker_id=uuid7(WALL),
    device="cam-01",
    seq=1,
    prev=GENESIS_PREV,
)
TOPIC = "bodycam/cam-01/marker"


@pytest.fixture(scope="module")
def consumer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Consumer]:
    path: Path = tmp_path_factory.mktemp("fuzz") / "base.db"
    with SqliteStore(path) as store:
        yield Consumer(
            ConsumerOptions(url="mqtt://127.0.0.1:1"), store, clock=VirtualClock(wall_epoch_ns=WALL)
        )


def test_valid_marker_is_stored_once(consumer: Consumer) -> None:
    assert consumer.handle(TOPIC, GOOD.to_json()) == "stored"
    assert consumer.handle(TOPIC, GOOD.to_json()) == "duplicate"


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (TOPIC, b"x" * (64 * 1024 + 1), "oversized"),
        (TOPIC, b"\xff\x00", "not_json"),
        (TOPIC, b'{"a": NaN}', "not_json"),
        (TOPIC, b"[" * 60_000, "not_json"),  # deep nesting: RecursionError inside json
        (TOPIC, b"{}", "invalid"),
        ("bodycam/cam-02/marker", GOOD.to_json(), "topic_mismatch"),
        ("bodycam/cam-01/marker/x", GOOD.to_json(), "bad_topic"),
        ("other/cam-01/marker", GOOD.to_json(), "bad_topic"),
        ("bodycam/cam-01/status", b'{"state": "sleeping"}', "invalid"),
        ("bodycam/cam-02/status", b'{"state": "online", "device": "cam-01"}', "topic_mismatch"),
        (TOPIC, json.dumps({**GOOD.to_dict(), "t": "2025-02-30T00:00:00.000Z"}).encode(), "invalid"),
    ],
)
def test_bad_messages_are_rejected_by_reason(
    consumer: Consumer, topic: str, payload: bytes, reason: str
) -> None:
    before = consumer.counters[f"rejected_{reason}"]
    assert consumer.handle(topic, payload) == f"rejected_{reason}"
    assert consumer.counters[f"rejected_{reason}"] == before + 1


def _mutations() -> st.SearchStrategy[dict[str, Any]]:
    base = GOOD.to_dict()
    # values that are wrong for every field: wrong types, or text with a space (no pattern allows one)
    junk = st.one_of(
        st.none(),
        st.booleans(),
        st.text(max_size=10).map(lambda t: t + " x"),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    )
    required = ["schema", "id", "device", "seq", "kind", "t", "t_mono_ns", "prev", "confidence", "model"]

    def drop(key: str) -> dict[str, Any]:
        return {k: v for k, v in base.items() if k != key}

    def replace(key: str, value: Any) -> dict[str, Any]:
        return {**base, key: value}

    dropped = st.sampled_from(required).map(drop)
    replaced = (
        st.tuples(st.sampled_from(required), junk)
        .filter(lambda kv: kv[1] != base[kv[0]])
        .map(lambda kv: replace(*kv))
    )
    # a new field a consumer may not ignore: a name outside the lowercase pattern (a newer firmware's
    # lowercase field is compatible, DESIGN section 4: test_a_new_lowercase_field_is_never_rejected)
    added = st.tuples(st.text(min_size=1, max_size=8).filter(lambda k: k not in base and not FIELD_RE.fullmatch(k)),
                      junk).map(lambda kv: {**base, kv[0]: kv[1]})
    return st.one_of(dropped, replaced, added)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=2000))
def test_random_bytes_never_crash(consumer: Consumer, payload: bytes) -> None:
    assert consumer.handle(TOPIC, payload).startswith("rejected_")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    doc=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
        max_leaves=20,
    )
)
def test_random_json_never_crashes(consumer: Consumer, doc: Any) -> None:
    assert consumer.handle(TOPIC, json.dumps(doc).encode()).startswith("rejected_")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=_mutations(), topic=st.sampled_from([TOPIC, "bodycam/cam-01/status", "bodycam/x/marker"]))
def test_mutated_markers_are_all_rejected(consumer: Consumer, doc: dict[str, Any], topic: str) -> None:
    stored = consumer.counters["stored"]
    outcome = consumer.handle(topic, json.dumps(doc).encode())
    assert outcome.startswith("rejected_") or (topic.endswith("status") and outcome == "status")
    assert consumer.counters["stored"] == stored


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.from_regex(FIELD_RE, fullmatch=True).filter(lambda k: k not in GOOD.to_dict()),
       value=st.none() | st.booleans() | st.integers(-(2**53), 2**53)
       | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)  # text as check_text allows
       | st.lists(st.integers(0, 9), max_size=3))
def test_a_new_lowercase_field_is_never_rejected(consumer: Consumer, name: str, value: Any) -> None:
    """DESIGN section 4: a field a newer firmware adds is kept, not refused. GOOD with it is another
    marker under the same id: stored the first time, then an id conflict (quarantined), never invalid."""
    outcome = consumer.handle(TOPIC, json.dumps({**GOOD.to_dict(), name: value}).encode())
    assert outcome in ("stored", "quarantined_id_conflict", "duplicate"), outcome
