"""The model registry in the dashboard (issue 15, item 4): ``GET /models``, ``POST /models/approve``.

Supervisors and admins see every registered model (name, version, task, SHA-256, the metrics its
sidecar recorded, who added and who approved it, and when), which approved package each task's
cameras are offered at the dock (``base/model_delivery.py``), and the fleet's rollout: how many
cameras report each model in their latest telemetry. Admins approve a registered model here as
``bodycam-base model approve`` does: ``serve --model-key KEY --model-packages DIR`` gives the
dashboard base's model-signing key and where to write packages (without them the page is read-only
and says why). An approval is audited (``model_approve``, or ``model_approve_failed`` with the
reason) with who and when, and recorded once in the registry.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bodycam.base.model_registry import ModelRegistry
from bodycam.base.web import pages
from bodycam.base.web.auth import Session
from bodycam.base.web.db import audit
from bodycam.base.web.fleet import fleet_views
from bodycam.device.errors import ModelError, UsageError
from bodycam.device.identity import Signer

_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+")


@dataclass(frozen=True)
class ModelDesk:
    """What the models page needs: the registry, and (to approve) base's key and the packages' folder."""

    registry: ModelRegistry
    signer: Signer | None = None
    packages: Path | None = None

    @property
    def can_approve(self) -> bool:
        return self.signer is not None and self.packages is not None


PageFn = Callable[[pages.Context, Request, Session], Awaitable[Response]]


def _rollout(ctx: pages.Context) -> list[tuple[str, int]]:
    views, _ = fleet_views(ctx.db, ctx.fleet, ctx.now_ns())
    counts = Counter(f"{v.tel.model.name} {v.tel.model.version}" if v.tel is not None and v.tel.model is not None
                     else "(no telemetry)" for v in views if v.known)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def page(desk: ModelDesk) -> PageFn:
    async def models(ctx: pages.Context, request: Request, s: Session) -> Response:
        rows = await run_in_threadpool(desk.registry.all)
        offered = {m.task: m for m, _ in await run_in_threadpool(desk.registry.released)}
        rollout = await run_in_threadpool(_rollout, ctx)
        return ctx.render(request, "models.html", {
            "s": s, "rows": list(reversed(rows)), "offered": offered, "rollout": rollout,
            "can_approve": desk.can_approve and s.user.can("admin"), "desk": desk,
            "done": request.query_params.get("approved", ""), "error": ""})

    return models


def approve(desk: ModelDesk, client_of: Callable[[Request], str]) -> PageFn:
    """The POST handler (admin; CSRF already checked by the guard)."""

    async def approve_model(ctx: pages.Context, request: Request, s: Session) -> Response:
        form = await request.form()
        name, version = (str(form.get(k) or "") for k in ("name", "version"))
        if not name or not version or not set(name + version) <= _SAFE:
            raise HTTPException(400, "name and version of a registered model")
        if desk.signer is None or desk.packages is None:
            raise HTTPException(503, "this dashboard cannot approve models: start serve with --model-key and "
                                     "--model-packages")
        now = ctx.now_ns()
        target = f"model {name} {version}"
        try:
            m = await run_in_threadpool(desk.registry.approve, name, version, s.user.name, now, desk.signer,
                                        desk.packages / f"{name}-{version}")
        except (UsageError, ModelError) as exc:
            reason = str(exc)
            client = client_of(request)

            def failed() -> None:
                with ctx.db.tx() as tx:
                    audit(tx, now, s.user.name, "model_approve_failed", target, reason[:300], client)

            await run_in_threadpool(failed)
            rows = await run_in_threadpool(desk.registry.all)
            offered = {r.task: r for r, _ in await run_in_threadpool(desk.registry.released)}
            return ctx.render(request, "models.html", {
                "s": s, "rows": list(reversed(rows)), "offered": offered, "rollout": await run_in_threadpool(_rollout, ctx),
                "can_approve": True, "desk": desk, "done": "", "error": reason}, 409)

        def done() -> None:
            with ctx.db.tx() as tx:
                audit(tx, now, s.user.name, "model_approve", target, f"package sha256 {m.package_sha256}",
                      client_of(request))

        await run_in_threadpool(done)
        return RedirectResponse(f"/models?approved={name}%20{version}", 303)

    return approve_model


__all__ = ["ModelDesk", "approve", "page"]
