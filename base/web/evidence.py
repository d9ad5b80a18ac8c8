"""The dashboard's evidence pages (supervisor): what cameras offloaded, its custody log, the files.

Reading a file back through base is audited as ``viewed`` (who, when) in the custody log, in the
same append-only table as received/verified/stored/exported (``base/custody.py``).
"""

from __future__ import annotations

from collections.abc import Iterator

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from bodycam.base.receive import Receiver
from bodycam.base.web.auth import Session
from bodycam.base.web.pages import Context
from bodycam.device.errors import StorageError
from bodycam.device.uplink.offload_wire import FILE_RE, RECORDING_RE
from bodycam.device.uplink.validate import is_device_id

_TYPES = {".mp4": "video/mp4", ".vtt": "text/vtt; charset=utf-8", ".json": "application/json",
          ".jsonl": "application/x-ndjson"}


def _target(request: Request) -> tuple[str, str]:
    device, recording = str(request.path_params["device"]), str(request.path_params["recording"])
    if not is_device_id(device) or not RECORDING_RE.fullmatch(recording):
        raise HTTPException(404, "no such recording")
    return device, recording


async def recordings(ctx: Context, rx: Receiver, request: Request, s: Session) -> Response:
    rows = await run_in_threadpool(rx.custody.stored)
    return ctx.render(request, "evidence.html", {"s": s, "rows": rows})


async def recording(ctx: Context, rx: Receiver, request: Request, s: Session) -> Response:
    device, rec = _target(request)
    held = await run_in_threadpool(rx.custody.stored, device, rec)
    if not held:
        raise HTTPException(404, "base holds no such recording")
    files = await run_in_threadpool(rx.evidence.files, device, rec)
    log = await run_in_threadpool(lambda: rx.custody.entries(device=device, recording=rec))
    return ctx.render(request, "evidence_recording.html", {"s": s, "r": held[0], "files": files, "log": log})


async def file(ctx: Context, rx: Receiver, request: Request, s: Session) -> Response:
    device, rec = _target(request)
    name = str(request.path_params["name"])
    if not FILE_RE.fullmatch(name):
        raise HTTPException(404, "no such file")
    if not await run_in_threadpool(rx.custody.stored, device, rec):
        raise HTTPException(404, "base holds no such recording")
    try:
        fh = await run_in_threadpool(rx.evidence.open, device, rec, name)
    except StorageError as exc:
        raise HTTPException(404, "no such file") from exc
    await run_in_threadpool(rx.custody.record, ctx.now_ns(), s.user.name, "viewed", device, rec, {"file": name})

    def chunks() -> Iterator[bytes]:
        with fh:
            yield from iter(lambda: fh.read(1 << 20), b"")

    suffix = name[name.rfind("."):]
    return StreamingResponse(chunks(), media_type=_TYPES.get(suffix, "application/octet-stream"))
