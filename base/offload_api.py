"""The offload routes of base's web app (the protocol: ``bodycam.device.uplink.offload_wire``).

No session, cookie or CSRF token here: each request is signed by the device's key and checked by
:meth:`bodycam.base.receive.Receiver.authenticate` before anything else is read from it. Every
refusal is a JSON body ``{"refused": [codes], "reason": "..."}`` with a status that says what to
do: 4xx (never retried as such: the camera keeps the recording and says why), 409 (resume from
``received``), 503/507 (base's database or disk: retry later).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from bodycam.base.model_delivery import ModelShelf, NotOffered
from bodycam.base.receive import Receiver, Refused
from bodycam.device.errors import StorageError
from bodycam.device.uplink.offload_wire import H_DEVICE, H_KEY, H_SHA, H_SIG, MAX_CHUNK, PREFIX

log = logging.getLogger(__name__)


def _target(request: Request) -> str:
    raw = request.scope.get("raw_path") or request.url.path.encode("utf-8")
    query = request.scope.get("query_string") or b""
    return bytes(raw).decode("latin-1") + ("?" + bytes(query).decode("latin-1") if query else "")


async def _body(request: Request) -> bytes:
    """The body, refused past one chunk (a client cut on the way raises ClientDisconnect)."""
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > MAX_CHUNK:
            raise Refused(413, ["chunk_too_large"], f"a request body is at most {MAX_CHUNK} bytes")
        parts.append(part)
    return b"".join(parts)


def offload_routes(receiver: Receiver, shelf: ModelShelf | None = None) -> list[BaseRoute]:
    """The offload routes, and (``shelf``) the model packages offered to cameras at the dock."""
    async def authenticated(request: Request) -> tuple[str, bytes]:
        """The device and the body of a request signed by the device's registered key.

        The signature covers the body's SHA-256 (a header), so it is checked *before* the body is read:
        a client that holds no registered key cannot make base read (and hold) an 8 MiB body; then the
        body is read and must hash to what was signed."""
        device = str(request.path_params["device"])
        sent = request.headers.get(H_SHA, "")
        if request.headers.get(H_DEVICE) != device:
            raise Refused(403, ["wrong_device"], f"a device uploads only its own recordings ({device})")
        await run_in_threadpool(receiver.authenticate, device, request.headers.get(H_KEY),
                                request.headers.get(H_SIG), request.method, _target(request), sent)
        body = await _body(request)
        if hashlib.sha256(body).hexdigest() != sent:
            raise Refused(400, ["body_hash"], "the body's SHA-256 is not the one signed")
        return device, body

    def handled(fn: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                return await fn(request)  # type: ignore[no-any-return]
            except Refused as exc:
                if exc.status >= 500 or exc.status in (401, 403):
                    log.warning("offload %s %s: %s (%s)", request.method, request.url.path, exc.codes, exc.reason)
                return JSONResponse(exc.to_json(), status_code=exc.status)
            except StorageError as exc:
                log.error("offload %s %s: base's store: %s", request.method, request.url.path, exc)
                return JSONResponse({"refused": ["base_unavailable"], "reason": str(exc)}, status_code=503)
            except ClientDisconnect:
                return Response(status_code=400)  # nobody is listening; nothing was written

        return endpoint

    @handled
    async def status(request: Request) -> Response:
        device, _ = await authenticated(request)
        state = await run_in_threadpool(receiver.status, device, str(request.path_params["recording"]))
        return JSONResponse(state)

    @handled
    async def put_chunk(request: Request) -> Response:
        device, body = await authenticated(request)
        try:
            offset = int(request.query_params.get("offset", ""))
        except ValueError:
            raise Refused(400, ["bad_offset"], "offset=N (bytes) is required") from None
        received = await run_in_threadpool(receiver.write_chunk, device, str(request.path_params["recording"]),
                                           str(request.path_params["name"]), offset, body, request.headers[H_SHA])
        return JSONResponse({"received": received})

    @handled
    async def confirm(request: Request) -> Response:
        device, _ = await authenticated(request)
        conf = await run_in_threadpool(receiver.confirm, device, str(request.path_params["recording"]))
        return JSONResponse(receiver.signed(conf))

    @handled
    async def handover(request: Request) -> Response:
        device, body = await authenticated(request)
        try:
            doc = json.loads(body)
        except ValueError:
            raise Refused(400, ["bad_handover"], "the body is not a JSON hand-over record") from None
        return JSONResponse(await run_in_threadpool(receiver.register_handover, device, doc))

    @handled
    async def models(request: Request) -> Response:
        await authenticated(request)
        offers = [] if shelf is None else await run_in_threadpool(shelf.offers)
        return JSONResponse({"packages": [o.as_json() for o in offers]})

    @handled
    async def model_file(request: Request) -> Response:
        device, _ = await authenticated(request)
        package, name = str(request.path_params["package"]), str(request.path_params["name"])
        if shelf is None:
            raise Refused(404, ["not_offered"], "base offers no models")
        try:
            path = await run_in_threadpool(shelf.file, package, name)
        except NotOffered as exc:
            raise Refused(404, ["not_offered"], str(exc)) from exc
        log.info("model delivery: %s/%s to %s", package, name, device)
        return FileResponse(path, media_type="application/octet-stream")

    return [Mount(PREFIX, routes=[
        Route("/handover/{device}", handover, methods=["PUT"]),
        Route("/models/{device}", models, methods=["GET"]),
        Route("/models/{device}/{package}/{name}", model_file, methods=["GET"]),
        Route("/recordings/{device}/{recording}", status, methods=["GET"]),
        Route("/recordings/{device}/{recording}/confirm", confirm, methods=["POST"]),
        Route("/recordings/{device}/{recording}/{name}", put_chunk, methods=["PUT"]),
    ])]


def offload_app(receiver: Receiver, shelf: ModelShelf | None = None) -> Starlette:
    """The offload routes alone (tests, the bench); ``bodycam-base serve`` mounts them in the web app."""
    return Starlette(routes=offload_routes(receiver, shelf))
