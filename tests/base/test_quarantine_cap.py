"""The quarantine keeps the newest rows only: a flood of bad messages cannot fill base's disk (both stores)."""

from __future__ import annotations

from contextlib import closing

from bodycam.base.cli import open_store
from bodycam.base.rules import QUARANTINE_KEEP, Quarantined


def test_the_quarantine_keeps_the_newest_rows_and_drops_the_oldest(db: str) -> None:
    assert QUARANTINE_KEEP >= 10_000  # the default leaves room for an investigation
    with closing(open_store(db)) as store:
        store.quarantine_keep = 50  # type: ignore[union-attr]
        for batch in range(8):  # 8 batches of 20 bad messages from an unknown client
            store.quarantine([Quarantined(batch * 100 + i, "bodycam/x/marker", None, "rejected_schema",
                                          f"bad #{batch * 20 + i}", b"{}") for i in range(20)])
        rows = store.quarantined(limit=1000)
        reasons = sorted(int(r.item.reason.split("#")[1]) for r in rows)
        assert reasons == list(range(110, 160))  # the newest 50 of 160, none lost among them
