"""The dashboard's review pages and JSON API (issue 15, item 1); role: supervisor (instructors).

Reviewing plays evidence footage, which base shows to supervisors only (the evidence pages); an
instructor who reviews range footage is given the ``supervisor`` role. Routes:

``GET  /review``                                   recordings and how far their review is
``GET  /review/{device}/{recording}``              the review page (``static/review.js``)
``GET  /review/{device}/{recording}/video.mp4``    the joined working copy, with HTTP range requests
``GET  /review/{device}/{recording}/chapters.vtt`` the camera's chapters (markers) for the ``<track>``
``GET  /api/review/v1/recordings``                 JSON: the list
``GET  /api/review/v1/recordings/{d}/{r}``         JSON: timeline, detections, markers, labels, history
``POST /api/review/v1/recordings/{d}/{r}/labels``  JSON body (``review_labels.NewLabel``), header
                                                   ``X-CSRF-Token``; 201 with the label, 422 with the reason

The footage and chapters are audited ``viewed`` in the custody log once per session and file (a
browser fetches a video in many range requests as it seeks).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bodycam.base.review import NoSuchRecording, Review
from bodycam.base.review_footage import FootageUnavailable
from bodycam.base.review_labels import LabelError, NewLabel
from bodycam.base.web.auth import Session
from bodycam.base.web.pages import Context
from bodycam.device.errors import StorageError

ROLE = "supervisor"
MAX_BODY = 16 * 1024
CHAPTERS_FILE = "chapters.vtt"

Guard = Callable[..., Callable[[Request], Awaitable[Response]]]


def _target(request: Request) -> tuple[str, str]:
    return str(request.path_params["device"]), str(request.path_params["recording"])


def review_routes(ctx: Context, rv: Review, guard: Guard) -> list[BaseRoute]:
    seen: set[tuple[str, str, str, str]] = set()
    seen_lock = threading.Lock()

    async def audit_once(s: Session, device: str, rec: str, name: str) -> None:
        key = (s.csrf, device, rec, name)  # the session's CSRF token identifies the session
        with seen_lock:
            if key in seen:
                return
        await run_in_threadpool(rv.viewed, ctx.now_ns(), s.user.name, device, rec, name)
        with seen_lock:
            seen.add(key)

    async def held(device: str, rec: str) -> None:
        try:
            await run_in_threadpool(rv.held, device, rec)
        except NoSuchRecording as exc:
            raise HTTPException(404, "base holds no such recording") from exc

    async def list_page(request: Request, s: Session) -> Response:
        rows = await run_in_threadpool(rv.recordings)
        return ctx.render(request, "review_list.html", {"s": s, "rows": rows})

    async def page(request: Request, s: Session) -> Response:
        device, rec = _target(request)
        await held(device, rec)
        try:
            state = await run_in_threadpool(rv.state, device, rec)
            await run_in_threadpool(rv.video, device, rec)
        except FootageUnavailable as exc:
            st = {"device": device, "recording": rec}
            return ctx.render(request, "review.html", {"s": s, "st": st, "problem": str(exc)}, 409)
        return ctx.render(request, "review.html", {"s": s, "st": state, "problem": ""})

    async def video(request: Request, s: Session) -> Response:
        device, rec = _target(request)
        await held(device, rec)
        try:
            path = await run_in_threadpool(rv.video, device, rec)
        except FootageUnavailable as exc:
            raise HTTPException(409, str(exc)) from exc
        await audit_once(s, device, rec, "video.mp4")
        return FileResponse(path, media_type="video/mp4")

    async def chapters(request: Request, s: Session) -> Response:
        device, rec = _target(request)
        await held(device, rec)

        def read() -> bytes:
            with rv.evidence.open(device, rec, CHAPTERS_FILE) as fh:
                return fh.read()

        try:
            data = await run_in_threadpool(read)
        except StorageError as exc:
            raise HTTPException(404, "no chapters") from exc
        await audit_once(s, device, rec, CHAPTERS_FILE)
        return Response(data, media_type="text/vtt; charset=utf-8")

    async def api_list(request: Request, s: Session) -> Response:
        rows = await run_in_threadpool(rv.recordings)
        return JSONResponse([{"device": r.device, "recording": r.recording, "stored_ns": r.stored_ns,
                              "manifest_sha256": r.manifest_sha256, **p.to_json()} for r, p in rows])

    async def api_state(request: Request, s: Session) -> Response:
        device, rec = _target(request)
        await held(device, rec)
        try:
            return JSONResponse(await run_in_threadpool(rv.state, device, rec))
        except FootageUnavailable as exc:
            raise HTTPException(409, str(exc)) from exc

    async def api_add(request: Request, s: Session) -> Response:
        device, rec = _target(request)
        await held(device, rec)
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"error": f"a label is at most {MAX_BODY} bytes"}, 413)
        try:
            new = NewLabel.from_json(json.loads(body))
            label = await run_in_threadpool(rv.add_label, device, rec, new, by=s.user.name, t_ns=ctx.now_ns())
        except (ValueError, LabelError) as exc:  # JSONDecodeError is a ValueError
            return JSONResponse({"error": str(exc)}, 422)
        except FootageUnavailable as exc:
            return JSONResponse({"error": str(exc)}, 409)
        return JSONResponse(label.to_json(), 201)

    def on(fn: Callable[[Request, Session], Awaitable[Response]], *, post: bool = False) -> Any:
        return guard(fn, ROLE, post=post)

    return [
        Route("/review", on(list_page), methods=["GET"]),
        Route("/review/{device}/{recording}", on(page), methods=["GET"]),
        Route("/review/{device}/{recording}/video.mp4", on(video), methods=["GET"]),
        Route("/review/{device}/{recording}/chapters.vtt", on(chapters), methods=["GET"]),
        Route("/api/review/v1/recordings", on(api_list), methods=["GET"]),
        Route("/api/review/v1/recordings/{device}/{recording}", on(api_state), methods=["GET"]),
        Route("/api/review/v1/recordings/{device}/{recording}/labels", on(api_add, post=True), methods=["POST"]),
    ]
