"""The Starlette application of ``rlx serve``: the page and the JSON API it uses.

    GET    /                             the page (static/index.html)
    GET    /static/...                   its script and style sheet
    GET    /api/health                   model, profile, device, synthetic weights or not
    POST   /api/images                   multipart field "file" -> {id, width, height, encode_ms}
    POST   /api/images/{id}/masks        JSON prompt -> {masks: [{png, score, area}], best, ...}
    POST   /api/images/{id}/everything   every object: COCO-style annotations with RLE
                                         (optional JSON: points_per_side, thresholds)
    DELETE /api/images/{id}              forget an image

Every answer is JSON; every refusal is ``{"error", "field", "status"}`` with
a 4xx status (see `errors`). A route that fails in an unforeseen way answers
500 with the same shape and logs the traceback; the server keeps serving.
Model work runs on worker threads (``run_in_threadpool``), so the event
loop keeps accepting requests while an image is being encoded.

Each masks answer carries a ``Server-Timing`` header (``total``: from the
request reaching the route to the JSON body being ready), which the
benchmark reads.
"""

from __future__ import annotations

import logging
import time
from importlib import resources

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .errors import ApiError
from .prompts import parse_everything_request, parse_mask_request
from .service import SegmentService
from .upload import decode_image, read_body, read_upload

__all__ = ["create_app", "STATIC_DIR"]

log = logging.getLogger("rlx.serve")
STATIC_DIR = resources.files(__package__).joinpath("static")


def _error(status: int, message: str, field=None) -> JSONResponse:
    return JSONResponse(ApiError(status, message, field).body(), status_code=status)


def _api(handler):
    """Turn `ApiError` into its 4xx answer and any other exception into a logged 500."""
    async def route(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as e:
            return JSONResponse(e.body(), status_code=e.status)
        except ClientDisconnect:  # the client went away mid-request: nobody to answer
            return Response(status_code=400)
        except Exception as e:  # a bug: answer, log, keep serving
            log.exception("error in %s %s", request.method, request.url.path)
            return _error(500, f"internal error: {type(e).__name__}: {e}")
    route.__name__ = handler.__name__
    return route


def create_app(service: SegmentService) -> Starlette:
    """The ASGI app serving ``service`` (one compiled model, its cache and limits)."""
    limits = service.limits

    async def health(request: Request) -> Response:
        return JSONResponse(service.health())

    async def upload(request: Request) -> Response:
        data = await read_upload(request, limits.max_upload_bytes)
        image = await run_in_threadpool(decode_image, data, limits.max_pixels)
        del data
        entry, seconds = await run_in_threadpool(service.add_image, image)
        return JSONResponse({"id": entry.id, "width": entry.width, "height": entry.height,
                             "encode_ms": round(seconds * 1e3, 3)}, status_code=201)

    async def masks(request: Request) -> Response:
        t0 = time.perf_counter()
        entry = service.entry(request.path_params["id"])
        req = parse_mask_request(await read_body(request), entry.width, entry.height)
        payload = await run_in_threadpool(service.masks_json, entry, req)
        total = (time.perf_counter() - t0) * 1e3
        return Response(payload, media_type="application/json",
                        headers={"Server-Timing": f"total;dur={total:.3f}"})

    async def everything(request: Request) -> Response:
        entry = service.entry(request.path_params["id"])
        settings = parse_everything_request(await read_body(request))
        out = await run_in_threadpool(service.everything, entry, settings)
        return JSONResponse(out)

    async def delete(request: Request) -> Response:
        service.delete(request.path_params["id"])
        return JSONResponse({"deleted": request.path_params["id"]})

    async def index(request: Request) -> Response:
        return FileResponse(str(STATIC_DIR.joinpath("index.html")), media_type="text/html")

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error(exc.status_code, exc.detail if isinstance(exc.detail, str) else
                      "request refused")

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/api/health", _api(health), methods=["GET"]),
        Route("/api/images", _api(upload), methods=["POST"]),
        Route("/api/images/{id}/masks", _api(masks), methods=["POST"]),
        Route("/api/images/{id}/everything", _api(everything), methods=["POST"]),
        Route("/api/images/{id}", _api(delete), methods=["DELETE"]),
        Mount("/static", app=StaticFiles(directory=str(STATIC_DIR)), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    app.state.service = service
    return app
