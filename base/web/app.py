"""The Starlette app of ``bodycam-base serve``: routes, login guard, CSRF, security headers, error pages.

Adding a page (evidence, review, map): write ``async def page(request, s: Session) -> Response`` in a
module of ``bodycam.base.web``, render a template that extends ``base.html`` (which carries the
alert banner, the outage banner and the CSRF meta tag), and add ``Route(path, guard(page, role))``
to :func:`create_app`'s routes. Blocking store calls go through ``run_in_threadpool``; a
``StorageError`` anywhere becomes the 503 "database unavailable" page; POST handlers call
``check_csrf`` first.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bodycam.base.model_delivery import ModelShelf
from bodycam.base.offload_api import offload_routes
from bodycam.base.receive import Receiver
from bodycam.base.review import Review
from bodycam.base.store_pg import PostgresStore
from bodycam.base.web import evidence, pages, record
from bodycam.base.web import map as map_pages
from bodycam.base.web import models as models_page
from bodycam.base.web.alert_wake import PgAlertWaker
from bodycam.base.web.alerts import AlertHub
from bodycam.base.web.auth import Auth, Session, same
from bodycam.base.web.db import WebDb
from bodycam.base.web.fleet import FleetConfig, FleetWatch
from bodycam.base.web.models import ModelDesk
from bodycam.base.web.record import RecordSender
from bodycam.base.web.review import review_routes
from bodycam.device.clock import rfc3339_ms
from bodycam.device.errors import StorageError

SESSION_COOKIE = "bodycam_session"
LOGIN_CSRF_COOKIE = "bodycam_login_csrf"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)

Page = Callable[[Request, Session], Awaitable[Response]]


@dataclass
class WebConfig:
    session_s: int = 12 * 3600
    poll_s: float = 0.2  # how often alerts are read without notifications (SQLite, or the LISTEN link down)
    notify: bool = True  # PostgreSQL: read alerts when NOTIFY says they changed (base/web/alert_wake.py)
    fallback_s: float = 5.0  # ... and at least this often
    cookie_secure: bool = False  # set behind HTTPS
    now_ns: Callable[[], int] = time.time_ns
    fleet: FleetConfig = field(default_factory=FleetConfig)  # thresholds of the fleet page and alerts
    tile_url: str = ""  # map tiles, e.g. http://tiles.local/{z}/{x}/{y}.png; "" = a plain grid (offline)
    tile_attribution: str = ""
    recorder: RecordSender | None = None  # operators' "start recording" (None: serve without --broker)

    def csp(self) -> str:
        """The CSP; a tile server's origin is the one other source allowed, for images only."""
        if not self.tile_url:
            return CSP
        parts = urlsplit(self.tile_url)
        origin = f"{parts.scheme}://{parts.netloc.replace('{s}', '*')}"  # {s}: Leaflet's subdomains
        return CSP.replace("img-src 'self' data:", f"img-src 'self' data: {origin}")


class _Headers:
    """Security headers on every response (CSP: no inline script, nothing from another origin)."""

    def __init__(self, app: ASGIApp, csp: str = CSP) -> None:
        self.app = app
        self.csp = csp.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", self.csp),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (b"x-frame-options", b"DENY"),
                ]
                if not any(k == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with)


def templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("bodycam.base.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["ns"] = lambda ns: rfc3339_ms(int(ns)) if ns else "never"
    return Jinja2Templates(env=env)


def client_of(request: Request) -> str:
    return request.client.host if request.client else "?"


def create_app(db: WebDb, config: WebConfig | None = None, *, offload: Receiver | None = None,
               models: ModelShelf | None = None, model_desk: ModelDesk | None = None,
               review: Review | None = None) -> Starlette:
    """The web app; ``offload``: base's receiver of camera uploads (``base/receive.py``), whose routes
    (``/api/offload/v1/...``, signed by each device's key, no session) are mounted in this app, with
    ``models``: the approved model packages offered to cameras at the dock (base/model_delivery.py);
    ``model_desk``: the registry's page (``/models``, base/web/models.py); ``review``: the review
    pages and API on the same evidence (``base/web/review.py``)."""
    cfg = config or WebConfig()
    auth = Auth(db, session_s=cfg.session_s)
    hub = AlertHub(db, poll_s=cfg.poll_s, fallback_s=cfg.fallback_s,
                   waker=PgAlertWaker(db.store.url) if cfg.notify and isinstance(db.store, PostgresStore) else None)
    watch = FleetWatch(db, cfg.fleet, cfg.now_ns)
    tpl = templates()

    def render(request: Request, name: str, ctx: dict[str, Any], status: int = 200) -> Response:
        return tpl.TemplateResponse(request, name, {"s": None, "outage": hub.outage, "evidence_on": offload is not None,
                                                   "models_on": model_desk is not None,
                                                   "review_on": review is not None, **ctx}, status_code=status)

    async def session_of(request: Request) -> Session | None:
        return await run_in_threadpool(auth.session, request.cookies.get(SESSION_COOKIE), cfg.now_ns())

    async def check_csrf(request: Request, s: Session) -> None:
        sent = request.headers.get("x-csrf-token")
        if sent is None:
            form = await request.form()
            value = form.get("csrf")
            sent = value if isinstance(value, str) else None
        if not sent or not same(sent, s.csrf):
            raise HTTPException(403, "missing or wrong CSRF token (reload the page)")

    def guard(page: Page, role: str = "operator", *, post: bool = False) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            s = await session_of(request)
            if s is None:
                if post or request.url.path == "/events":
                    raise HTTPException(401, "not logged in (or the session expired)")
                return RedirectResponse(f"/login?next={request.url.path}", 303)
            if not s.user.can(role):
                raise HTTPException(403, f"needs the {role} role")
            if post:
                await check_csrf(request, s)
            request.state.session = s
            return await page(request, s)

        return endpoint

    # -- login / logout -----------------------------------------------------------------------------
    async def login_form(request: Request, error: str = "", status: int = 200) -> Response:
        token = secrets.token_urlsafe(24)
        nxt = request.query_params.get("next", "/")
        resp = render(request, "login.html", {"csrf": token, "error": error, "next": _local(nxt)}, status)
        resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=cfg.cookie_secure,
                        path="/login")
        return resp

    async def login_get(request: Request) -> Response:
        return await login_form(request)

    async def login_post(request: Request) -> Response:
        form = await request.form()
        name, password, sent, nxt = (str(form.get(k) or "") for k in ("name", "password", "csrf", "next"))
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not sent or not cookie or not same(sent, cookie):
            return await login_form(request, "The form expired; please log in again.", 403)
        result = await run_in_threadpool(auth.login, name, password, client_of(request), cfg.now_ns())
        if result.retry_after_s:
            resp = await login_form(
                request, f"Too many failed logins; try again in {result.retry_after_s} s.", 429
            )
            resp.headers["retry-after"] = str(result.retry_after_s)
            return resp
        if result.session_token is None:
            return await login_form(request, "Wrong user name or password.", 401)
        resp = RedirectResponse(_local(nxt), 303)
        resp.set_cookie(SESSION_COOKIE, result.session_token, max_age=cfg.session_s, httponly=True,
                        samesite="strict", secure=cfg.cookie_secure)
        resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return resp

    async def logout(request: Request, s: Session) -> Response:
        await run_in_threadpool(auth.logout, request.cookies.get(SESSION_COOKIE, ""), s.user.name,
                                client_of(request), cfg.now_ns())
        resp = RedirectResponse("/login", 303)
        resp.delete_cookie(SESSION_COOKIE)
        return resp

    # -- alerts -------------------------------------------------------------------------------------
    async def events(request: Request, s: Session) -> Response:
        return StreamingResponse(
            hub.stream(request.is_disconnected), media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def acknowledge(request: Request, s: Session) -> Response:
        try:
            n = int(request.path_params["n"])
        except ValueError as exc:
            raise HTTPException(404, "no such alert") from exc
        done = await run_in_threadpool(db.acknowledge, n, s.user.name, cfg.now_ns(), client_of(request))
        if done:
            hub.acked_here(n)
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"n": n, "acknowledged": done, "by": s.user.name})
        return RedirectResponse("/", 303)

    ctx = pages.Context(db=db, hub=hub, render=render, now_ns=cfg.now_ns, fleet=cfg.fleet, tile_url=cfg.tile_url,
                        tile_attribution=cfg.tile_attribution)

    def bound(fn: Callable[[pages.Context, Request, Session], Awaitable[Response]]) -> Page:
        async def page(request: Request, s: Session) -> Response:
            return await fn(ctx, request, s)

        return page

    async def storage_error(request: Request, exc: Exception) -> Response:
        outage = "The database is not answering. Nothing is lost: markers wait at the broker; retry in a moment."
        return render(request, "error.html", {"title": "Database unavailable", "outage": outage}, 503)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if request.url.path == "/events" or "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"error": exc.detail}, exc.status_code)
        return render(request, "error.html", {"title": f"{exc.status_code}: {exc.detail}"}, exc.status_code)

    async def server_error(request: Request, exc: Exception) -> Response:
        return render(request, "error.html", {"title": "Something went wrong (logged at the server)"}, 500)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await hub.start()
        await watch.start()
        try:
            yield
        finally:
            await watch.stop()
            await hub.stop()

    routes: list[BaseRoute] = [
        Route("/login", login_get, methods=["GET"]),
        Route("/login", login_post, methods=["POST"]),
        Route("/logout", guard(logout, post=True), methods=["POST"]),
        Route("/", guard(bound(pages.home)), methods=["GET"]),
        Route("/events", guard(events), methods=["GET"]),
        Route("/alerts/{n}/ack", guard(acknowledge, post=True), methods=["POST"]),
        Route("/markers", guard(bound(pages.markers)), methods=["GET"]),
        Route("/markers/{marker_id}", guard(bound(pages.marker)), methods=["GET"]),
        Route("/fleet", guard(bound(pages.fleet)), methods=["GET"]),
        Route("/quarantine", guard(bound(pages.quarantine)), methods=["GET"]),
        Route("/map", guard(bound(map_pages.page)), methods=["GET"]),
        Route("/map.json", guard(bound(map_pages.data)), methods=["GET"]),
        Route("/audit", guard(bound(pages.audit), "supervisor"), methods=["GET"]),
        *([] if model_desk is None else [
            Route("/models", guard(bound(models_page.page(model_desk)), "supervisor"), methods=["GET"]),
            Route("/models/approve", guard(bound(models_page.approve(model_desk, client_of)), "admin", post=True),
                  methods=["POST"]),
        ]),
        Route("/devices/record", guard(bound(record.page(cfg.recorder, client_of)), post=True), methods=["POST"]),
        Route("/devices/{device}/record", guard(bound(record.page(cfg.recorder, client_of)), post=True),
              methods=["POST"]),
        Mount("/static", StaticFiles(packages=[("bodycam.base.web", "static")]), name="static"),
    ]
    if offload is not None:
        rx = offload

        def with_rx(fn: Callable[[pages.Context, Receiver, Request, Session], Awaitable[Response]]) -> Page:
            async def page(request: Request, s: Session) -> Response:
                return await fn(ctx, rx, request, s)

            return page

        routes += offload_routes(offload, models)
        routes += [
            Route("/evidence", guard(with_rx(evidence.recordings), "supervisor"), methods=["GET"]),
            Route("/evidence/{device}/{recording}", guard(with_rx(evidence.recording), "supervisor"), methods=["GET"]),
            Route("/evidence/{device}/{recording}/{name}", guard(with_rx(evidence.file), "supervisor"),
                  methods=["GET"]),
        ]
    if review is not None:
        routes += review_routes(ctx, review, guard)
    app = Starlette(
        routes=routes,
        middleware=[Middleware(_Headers, csp=cfg.csp())],
        exception_handlers={StorageError: storage_error, HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.state.hub = hub
    app.state.fleet = watch
    app.state.auth = auth
    return app


def _local(path: str) -> str:
    """Only a path on this site (no open redirect to another host)."""
    return path if path.startswith("/") and not path.startswith("//") and "\\" not in path else "/"
