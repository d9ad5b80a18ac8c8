"""``chain_heads.place``: where a retired key's recording stands on the chain from its hand-over head
(``on``: taken; ``maybe``: 409, asked again; ``off``: 422), over what base holds (recording -> (manifest
SHA-256, its ``previous`` link))."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from bodycam.base.chain_heads import Link, place

R1, R2, R3, R4 = (f"20260301T1{i}0000000Z" for i in range(4))


def held(stored: dict[str, tuple[str, Link | None]]) -> Callable[[str, str], Link | Literal["absent"] | None]:
    def link_of(rec: str, sha: str) -> Link | Literal["absent"] | None:
        if rec not in stored:
            return "absent"
        have, link = stored[rec]
        return link if have == sha else None
    return link_of


def test_the_head_and_what_the_stored_chain_links_are_on_it() -> None:
    base = held({R3: ("s3", (R2, "s2")), R2: ("s2", (R1, "s1"))})
    assert place([(R3, "s3")], R3, "s3", base)[0] == "on"
    assert place([(R3, "s3")], R1, "s1", base)[0] == "on"


def test_what_base_cannot_place_yet_waits_and_what_the_chain_passed_is_off() -> None:
    base = held({R3: ("s3", (R1, "s1"))})
    assert place([(R4, "s4")], R2, "s2", base)[0] == "maybe"  # the head R4 is not at base yet
    assert place([(R3, "s3")], R2, "s2", base)[0] == "off"  # R3 links R1: the chain went past R2
    assert place([(R3, "s3")], R1, "forged", base)[0] == "off"  # the id on the chain, another manifest
    assert place([(R2, "s2")], R3, "s3", base)[0] == "off"  # newer than the head


def test_a_chain_that_starts_or_is_replaced_at_base_ends_there() -> None:
    assert place([(R3, "s3")], R1, "s1", held({R3: ("s3", None)}))[0] == "off"
    assert place([(R3, "s3")], R1, "s1", held({R3: ("other", (R1, "s1"))}))[0] == "off"
    assert place([(R3, "s3")], R1, "s1", held({R3: ("s3", (R4, "s4"))}))[0] == "off"  # a link forward: no chain
