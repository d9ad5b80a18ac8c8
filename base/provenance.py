"""Whether a stored marker is *verified*: signed by a key registered for its device (``base/keys.py``).

The consumer stores the markers of a device without a registered key "unverified" (``keys.py``,
``--require-signatures registered``, the default): anyone holding a broker identity can publish
them. What such a marker may start is therefore less than a verified one's: peer activation
(``base/peer.py``) acts only on verified gunshots, and the dashboard shows an unverified alert as
unverified (``base/web/alerts.py``, the marker page) instead of dropping it.

The answer is the consumer's own rule (:meth:`SignaturePolicy.check`), asked again where it is
needed, so there is one rule and no column to keep in step: ``None`` when the marker verifies, else
the reason (``no_key``, ``unsigned``, ``unknown_key``, ``revoked_key``, ``retired_key``, ``bad_signature``, or
``invalid`` for a stored body that no longer parses).
"""

from __future__ import annotations

import logging

from bodycam.base.keys import KeyRegistry, KeyStore, SignaturePolicy
from bodycam.base.validate import Rejected
from bodycam.device.uplink.markers import Marker

_log = logging.getLogger(__name__)

#: the text shown for each reason a marker is not verified
UNVERIFIED_TEXT = {
    "no_key": "no key registered for the device",
    "unsigned": "not signed",
    "unknown_key": "signed with a key not registered for the device",
    "revoked_key": "signed with a revoked key",
    "retired_key": "signed with a retired key, and not from before its retirement",
    "bad_signature": "the signature does not verify",
    "invalid": "the stored marker cannot be read",
}


class Provenance:
    """Answers "is this marker verified?" with a :class:`SignaturePolicy` over the store's key registry
    (its keys are re-read at most every ``refresh_s``; an unknown key id at once)."""

    def __init__(self, store: KeyStore, policy: SignaturePolicy | None = None) -> None:
        self.policy = policy if policy is not None else SignaturePolicy(KeyRegistry(store))

    def unverified(self, m: Marker, received_ns: int) -> str | None:
        """None: ``m``'s signature verifies with a key registered for its device and trusted at
        ``received_ns``; else why not. A :class:`StorageError` (the registry cannot be read) propagates."""
        try:
            if self.policy.check(m, received_ns):
                return None
            if m.key is None:
                return "no_key"
            # a signed marker of a device without a key in the policy's cache: the key may have been
            # registered since the last read (at most refresh_s ago): read this device's keys now
            self.policy.reload(m.device)
            return None if self.policy.check(m, received_ns) else "no_key"
        except Rejected as exc:
            return exc.reason

    def unverified_body(self, body: str, received_ns: int) -> str | None:
        """:meth:`unverified` for a stored marker's JSON body."""
        try:
            m = Marker.from_json(body)
        except Exception:  # a stored body is the consumer's own canonical form; this is not expected
            _log.exception("a stored marker body does not parse")
            return "invalid"
        return self.unverified(m, received_ns)


def describe(reason: str | None) -> str:
    """The dashboard's words for :meth:`Provenance.unverified`'s answer."""
    if reason is None:
        return "verified (signed with a registered key)"
    return f"unverified: {UNVERIFIED_TEXT.get(reason, reason)}"
