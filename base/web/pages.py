"""The dashboard's pages: one function each, ``(ctx, request, session) -> Response`` (see ``app``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from bodycam.base.provenance import describe
from bodycam.base.store import StoredMarker
from bodycam.base.web.alerts import AlertHub, evidence_of
from bodycam.base.web.auth import Session
from bodycam.base.web.db import WebDb
from bodycam.base.web.fleet import FleetConfig, fleet_views
from bodycam.device.clock import rfc3339_ms
from bodycam.device.errors import UsageError

PAGE_SIZE = 50
MAX_PAGE = 1_000_000  # 50 million markers deep; a larger page number is a bad request, not a query
ONLINE = "online"


@dataclass
class Context:
    db: WebDb
    hub: AlertHub
    render: Callable[..., Response]
    now_ns: Callable[[], int]
    fleet: FleetConfig = field(default_factory=FleetConfig)
    tile_url: str = ""  # the map's tiles ({z}/{x}/{y} template); "" = a plain grid
    tile_attribution: str = ""


def _time(text: str, what: str) -> int | None:
    """A form's date/time (as ``--since``: ``2026-01-01``, ``2026-01-01T12:00``; no offset = UTC)."""
    from bodycam.base.cli import parse_since

    if not text.strip():
        return None
    try:
        return parse_since(text, what)
    except UsageError as exc:
        raise ValueError(str(exc)) from exc


def marker_view(sm: StoredMarker) -> dict[str, Any]:
    m = sm.marker
    extra = m.extra or {}
    evidence = evidence_of(m.to_dict())
    return {
        "id": m.id, "device": m.device, "seq": m.seq, "kind": m.kind, "t": m.t, "chain": sm.chain,
        "received": rfc3339_ms(sm.received_ns),
        "confidence": None if m.confidence is None else f"{m.confidence:.3f}",
        "media": None if m.media is None else m.media.to_dict(),
        "location": None if m.location is None else m.location.to_dict(),
        "model": None if m.model is None else m.model.to_dict(),
        "evidence": evidence,
        "extra": {k: json.dumps(v, ensure_ascii=False) for k, v in sorted(extra.items()) if k != "evidence"},
        "json": json.dumps(m.to_dict(), indent=2, ensure_ascii=False, sort_keys=True),
    }


def parse_area(text: str) -> tuple[float, float, float, float] | None:
    """``south,west,north,east`` in degrees (what the map's "search this area" sends); "" = none."""
    if not text:
        return None
    try:
        south, west, north, east = (float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"area: {text[:60]!r} is not south,west,north,east (four numbers)") from None
    if not (-90 <= south <= north <= 90 and -180 <= west <= 180 and -180 <= east <= 180):
        raise ValueError(f"area: {text[:60]!r}: latitudes -90..90 with south <= north, longitudes -180..180")
    return south, west, north, east


async def home(ctx: Context, request: Request, s: Session) -> Response:
    recent = await run_in_threadpool(lambda: ctx.db.store.markers(limit=20, newest_first=True))
    return ctx.render(request, "home.html", {"s": s, "recent": [marker_view(r) for r in recent]})


async def markers(ctx: Context, request: Request, s: Session) -> Response:
    q = request.query_params
    form = {k: q.get(k, "").strip() for k in ("device", "kind", "since", "until", "area")}
    error = ""
    try:
        page = max(1, int(q.get("page", "1") or "1"))
    except ValueError:
        page, error = 1, "page: not a number"
    if page > MAX_PAGE:
        page, error = 1, f"page: at most {MAX_PAGE}"
    try:
        since, until = _time(form["since"], "from"), _time(form["until"], "until")
        area = parse_area(form["area"])
    except ValueError as exc:
        since = until = area = None
        error = str(exc)
    rows: list[StoredMarker] = []
    more = False
    if not error:
        rows = await run_in_threadpool(
            lambda: ctx.db.store.markers(
                device=form["device"] or None, kind=form["kind"] or None, since_ns=since, until_ns=until,
                limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE, newest_first=True, area=area,
            )
        )
        more = len(rows) > PAGE_SIZE
    devices, kinds = await run_in_threadpool(lambda: ([d.device for d in ctx.db.store.devices()], ctx.db.store.kinds()))
    return ctx.render(
        request, "markers.html",
        {"s": s, "form": form, "error": error, "page": page, "more": more, "rows": [marker_view(r) for r in rows[:PAGE_SIZE]],
         "devices": devices, "kinds": sorted(kinds)},
        400 if error else 200,
    )


async def marker(ctx: Context, request: Request, s: Session) -> Response:
    marker_id = str(request.path_params["marker_id"])

    def load() -> tuple[StoredMarker | None, Any, list[int], str]:
        sm = ctx.db.store.marker(marker_id)
        if sm is None:
            return None, None, [], ""
        near = [int(r[0]) for r in ctx.db.rows(
            "SELECT seq FROM markers WHERE device=? AND seq IN (?, ?)", (sm.marker.device, sm.marker.seq - 1,
                                                                        sm.marker.seq + 1))]
        why = ctx.db.unverified(sm.marker, sm.received_ns)
        return sm, ctx.db.alert_of(marker_id), near, describe(why)

    sm, alert, near, signature = await run_in_threadpool(load)
    if sm is None:
        return ctx.render(request, "error.html", {"s": s, "title": "No such marker"}, 404)
    seq = sm.marker.seq
    gap_before = seq > 1 and (seq - 1) not in near
    return ctx.render(request, "marker.html", {
        "s": s, "m": marker_view(sm), "alert": alert, "gap_before": gap_before, "next_stored": (seq + 1) in near,
        "signature": signature, "verified": signature.startswith("verified"),
    })


async def fleet(ctx: Context, request: Request, s: Session) -> Response:
    views, unattributed = await run_in_threadpool(fleet_views, ctx.db, ctx.fleet, ctx.now_ns())
    return ctx.render(request, "fleet.html", {"s": s, "devices": views, "unattributed": unattributed, "cfg": ctx.fleet})


async def quarantine(ctx: Context, request: Request, s: Session) -> Response:
    device = request.query_params.get("device", "").strip() or None
    rows = await run_in_threadpool(lambda: ctx.db.store.quarantined(device=device, limit=200))
    return ctx.render(request, "quarantine.html", {"s": s, "rows": rows, "device": device})


async def audit(ctx: Context, request: Request, s: Session) -> Response:
    rows = await run_in_threadpool(ctx.db.audit_rows)
    return ctx.render(request, "audit.html", {"s": s, "rows": rows})
