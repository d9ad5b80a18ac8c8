"""The map page and its data (``/map``, ``/map.json``): last positions of the devices and shot markers.

A device's position is its latest telemetry's ``location`` when it has one, else the location of its
newest marker that has one (``source`` says which). Shots are the detection markers with a location
that base received in the last ``hours`` (default 24, newest 500; by base's receive time, since a
camera's clock may be wrong). The page is Leaflet (vendored, ``static/leaflet``)
driven by ``static/map.js``; tiles come from ``serve --tile-url`` when given, else a plain grid.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bodycam.base.web.auth import Session
from bodycam.base.web.fleet import fleet_views
from bodycam.base.web.pages import Context
from bodycam.device.uplink.markers import DETECTION_KINDS, Marker

MAX_SHOTS = 500
_KINDS = tuple(sorted(DETECTION_KINDS))


def _hours(request: Request) -> int:
    try:
        return min(max(int(request.query_params.get("hours", "24")), 1), 24 * 366)
    except ValueError:
        return 24


async def page(ctx: Context, request: Request, s: Session) -> Response:
    return ctx.render(request, "map.html", {"s": s, "hours": _hours(request), "tiles": ctx.tile_url,
                                            "attribution": ctx.tile_attribution})


def map_data(ctx: Context, hours: int, now_ns: int) -> dict[str, Any]:
    views, _ = fleet_views(ctx.db, ctx.fleet, now_ns)
    last_fix = {
        str(r[0]): (float(r[1]), float(r[2]), str(r[3]))
        for r in ctx.db.rows(
            "SELECT m.device, m.lat, m.lon, m.t FROM markers m JOIN ("
            "SELECT device, MAX(seq) AS seq FROM markers WHERE lat IS NOT NULL GROUP BY device) x "
            "ON x.device = m.device AND x.seq = m.seq"
        )
    }
    devices = []
    for v in views:
        d = v.to_json()
        if d["location"] is not None:
            d["source"] = "telemetry"
        elif v.device in last_fix:
            lat, lon, t = last_fix[v.device]
            d["location"], d["source"] = {"lat": lat, "lon": lon}, f"marker at {t}"
        devices.append(d)
    since = now_ns - hours * 3600 * 10**9
    marks = ",".join("?" * len(_KINDS))
    rows = ctx.db.rows(
        f"SELECT body FROM markers WHERE kind IN ({marks}) AND lat IS NOT NULL AND received_ns >= ? "
        "ORDER BY received_ns DESC LIMIT ?",
        (*_KINDS, since, MAX_SHOTS),
    )
    shots = []
    for (body,) in rows:
        m = Marker.from_json(body)
        assert m.location is not None
        shots.append({"id": m.id, "device": m.device, "seq": m.seq, "kind": m.kind, "t": m.t,
                      "confidence": m.confidence, "location": {"lat": m.location.lat, "lon": m.location.lon}})
    return {"devices": devices, "shots": shots}


async def data(ctx: Context, request: Request, s: Session) -> Response:
    hours = _hours(request)
    body = await run_in_threadpool(map_data, ctx, hours, ctx.now_ns())
    return JSONResponse(body)
