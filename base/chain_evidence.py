"""What base holds about a retired key's chain: the links a walk follows, and what contradicts a head.

:func:`link_source` gives :func:`~bodycam.base.chain_heads.place` the ``previous`` link of a manifest:
of a stored recording (``evidence_links``, or its stored manifest), else of a signed manifest base
received and refused or holds (``base/seen_manifests.py``).

:func:`conflicts` is what ``bodycam-base keys accept-chain`` checks before an operator's head is kept,
and ``keys held`` shows: anything base holds that says the vouched manifest is not the key's genuine
chain. A thief holding a leaked retired key (and the card) can make a recording that verifies with
that key and links a genuine recording; what gives it away is the genuine chain's own signed links:

* base stores, or received signed, **another manifest of that recording id**;
* a signed manifest base holds links that recording id with **another SHA-256**;
* a **fork**: another signed manifest base holds links the same ``previous`` as the vouched one (two
  recordings claim to come right after one recording: one of them is not genuine);
* the chain from the key's registered **hand-over** head (signed by the old and the new key) goes past
  the recording without reaching it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from bodycam.base.chain_heads import Link, LinkOf, place
from bodycam.base.custody import CustodyLog
from bodycam.base.seen_manifests import SeenManifests


def link_source(device: str, custody: CustodyLog, seen: SeenManifests,
                stored_previous: Callable[[str], Any] | None = None) -> LinkOf:
    """``link_of(recording, sha)`` for a chain walk over what base holds for ``device``.
    ``stored_previous(recording)``: the ``previous`` of a stored manifest (for recordings stored before
    ``evidence_links`` existed; without it such a recording counts as not held yet)."""

    def link_of(recording: str, sha: str) -> Link | Literal["absent"] | None:
        held = custody.stored(device, recording)
        if held:
            if held[0].manifest_sha256 != sha:  # base holds another manifest of that id: the chain ends there
                return None
            link = custody.link(device, recording)
            if link is not None:
                return link
            if stored_previous is None:
                return "absent"
            prev = stored_previous(recording)
            if prev == "absent":
                return "absent"
            if isinstance(prev, dict) and isinstance(prev.get("recording"), str) and \
                    isinstance(prev.get("manifest_sha256"), str):
                return str(prev["recording"]), str(prev["manifest_sha256"])
            return None
        return seen.link(device, recording, sha)  # refused or held, its signature verified: its signed word
    return link_of


def _stored_linking(custody: CustodyLog, device: str, recording: str) -> list[tuple[str, Link]]:
    rows = custody.store.read("SELECT recording, previous, previous_manifest_sha256 FROM evidence_links"
                              " WHERE device=? AND previous=?", (device, recording))
    return [(str(r[0]), (str(r[1]), str(r[2]))) for r in rows]


def conflicts(device: str, key_id: str, recording: str, sha: str, custody: CustodyLog, seen: SeenManifests,
              handover_heads: list[Link], link_of: LinkOf) -> list[str]:
    """Why base's own records contradict (``recording``, ``sha``) as a head of ``key_id`` (none: nothing does)."""
    out: list[str] = []
    stored = custody.stored(device, recording)
    if stored and stored[0].manifest_sha256 != sha:
        out.append(f"base stores another manifest of {recording} (SHA-256 {stored[0].manifest_sha256})")
    others = sorted({s.manifest_sha256 for s in seen.of(device, recording)} - {sha})
    if others:
        out.append(f"base received other signed manifest(s) of {recording}: {', '.join(others)}")
    linkers = [(s.recording, s.previous) for s in seen.linking(device, recording) if s.previous is not None]
    for rec, link in sorted(set(linkers + _stored_linking(custody, device, recording))):
        if link[1] != sha:
            out.append(f"the signed manifest of {rec} links {recording} with another SHA-256 ({link[1]})")
    mine = seen.link(device, recording, sha)
    if isinstance(mine, tuple):
        prev = mine[0]
        rivals = {(s.recording, s.previous) for s in seen.linking(device, prev)} | \
            set(_stored_linking(custody, device, prev))
        for rec, link in sorted((r, lk) for r, lk in rivals if lk is not None and r != recording and lk == mine):
            out.append(f"a fork: the signed manifest of {rec} also links {prev} ({link[1]}) as its previous")
    for head in handover_heads:
        if place([head], recording, sha, link_of)[0] == "off":
            out.append(f"the chain from the hand-over head {head[0]} (signed by the old and the new key) goes past "
                       f"{recording} without reaching this manifest")
    return out
