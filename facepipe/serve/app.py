"""The HTTP front end: parse the request, call the engine off the event loop, render its records.

Every answer is JSON; every error is `{"error": "one line"}` with a status that says whose fault it
is (4xx: the request; 503: busy, with Retry-After; 500: ours, with an id that is also in the server log, never
a traceback), and no error names a path of the server's (the gallery or a model file is called by its file name).

The request passes, outermost first: metrics, the Host / cross-site guard (serve/guards.py), CORS when asked,
the body size and deadline (serve/limits.py), the key (serve/auth.py); engine work then waits for a turn in the
bounded queue (Admission) and decodes images under the per-image memory budget.
"""
from __future__ import annotations

import logging
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

import facepipe
from facepipe.errors import FacepipeError, GalleryError, ImageError
from facepipe.names import person_name
from facepipe.runtime.image import image_limits
from facepipe.serve.auth import BearerKey, read_api_key
from facepipe.serve.clusters import cluster_router
from facepipe.serve.guards import RequestGuard
from facepipe.serve.limits import Admission, BodyLimit, BodyTimeout, BodyTooLarge, Overloaded
from facepipe.serve.metrics import Metrics, MetricsMiddleware
from facepipe.serve.settings import ServeSettings
from facepipe.serve.uploads import option, read_uploads
from facepipe.serve.video import video_router
from facepipe.types import image_record

log = logging.getLogger("facepipe.serve")
STATIC = Path(__file__).parent / "static"
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 1000, 10_000


def create_app(settings: ServeSettings, engine=None) -> FastAPI:
    """The app, with its models loaded and its gallery opened (once, here) unless an engine is handed in."""
    key = read_api_key(settings.api_key_file) if settings.api_key_file else None
    fp = engine
    if fp is None:
        fp = facepipe.open(gallery=settings.gallery, detector=settings.detector, recognizer=settings.recognizer,
                           device=settings.device)
        fp.gallery(create=True)  # a new server can enroll into a new gallery
        fp.detector, fp.recognizer  # load now: a bad model file stops start-up, the first request is not slow

    @asynccontextmanager
    async def lifespan(_app):
        yield
        fp.close()

    app = FastAPI(title="facepipe", summary="Detect, identify and enroll faces.", lifespan=lifespan,
                  docs_url=None, redoc_url=None)  # the docs page below serves Swagger UI from the package
    app.state.engine = fp
    metrics = Metrics()
    admission = Admission(settings.max_concurrent, settings.max_queue, settings.queue_timeout_s,
                          on_shed=metrics.shed.inc)
    metrics.watch(admission)
    app.state.admission = admission
    # add_middleware puts each in front of the previous: the last added sees the request first.
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes, timeout_s=settings.body_timeout_s)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["authorization", "content-type"])
    app.add_middleware(RequestGuard, allowed_hosts=list(settings.allowed_hosts),
                       cors_origins=list(settings.cors_origins))
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    _add_error_handlers(app, _private_paths(settings, fp))
    work = _EngineWork(admission, settings.max_image_bytes)
    app.include_router(_api(fp, work), prefix="/v1", dependencies=[Depends(BearerKey(key))])
    app.include_router(video_router(fp, work), prefix="/v1", dependencies=[Depends(BearerKey(key))])
    app.include_router(cluster_router(fp, work.call), prefix="/v1", dependencies=[Depends(BearerKey(key))])

    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict:
        """Liveness: answers without a key and says nothing about the gallery."""
        return {"status": "ok"}

    @app.get("/metrics", tags=["service"], dependencies=[Depends(BearerKey(key))])
    async def prometheus() -> Response:
        """Prometheus metrics: requests by route and status, latency, engine queue depth, shed requests."""
        body, kind = metrics.render()
        return Response(body, media_type=kind)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    _add_docs(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _add_docs(app: FastAPI) -> None:
    """Swagger UI 5 from the swagger-ui-bundle-v2 package (nothing fetched from a CDN; it reads OpenAPI 3.1, which
    FastAPI writes), started by a static script of ours, so the page's CSP needs no inline script."""
    from swagger_ui_bundle import swagger_ui_path

    page = ('<!doctype html><html lang="en"><head><meta charset="utf-8"><title>facepipe API</title>'
            '<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head><body><div id="swagger-ui"></div>'
            '<script src="/docs/assets/swagger-ui-bundle.js"></script><script src="/static/docs.js"></script>'
            '</body></html>')

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(page)

    app.mount("/docs/assets", StaticFiles(directory=swagger_ui_path), name="swagger-ui")


def _private_paths(settings: ServeSettings, fp) -> list[tuple[str, str]]:
    """(server path, what an error may say instead): the gallery's and the models' folders stay private."""
    found: dict[str, str] = {}
    candidates = [settings.gallery, settings.detector, settings.recognizer, settings.api_key_file]
    try:
        candidates.append(str(fp.gallery().path))
    except Exception:  # noqa: BLE001 - an engine handed in by a test may have no gallery
        pass
    for text in filter(None, candidates):
        text = str(text)
        if "://" in text:
            continue
        for form in {text, str(Path(text).expanduser()), str(Path(text).expanduser().resolve())}:
            found[form] = Path(text).name
    found[str(Path.home())] = "~"
    found[str(Path.cwd())] = "."
    return sorted(found.items(), key=lambda kv: -len(kv[0]))


def app_from_environment() -> FastAPI:
    """Factory for uvicorn's worker processes (`--workers N`): each loads its own models."""
    configure_logging()
    return create_app(ServeSettings.from_env())


def configure_logging() -> None:
    """The service's request log on stderr, once per process."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


# -- routes ------------------------------------------------------------------------------------------
def _image_body(*fields: str) -> dict:
    """OpenAPI description of a body that carries images as multipart files or base64 JSON."""
    multipart = {f: {"type": "string", "format": "binary"} for f in fields}
    as_json = {f"{f}_base64": {"type": "string", "description": "base64 (or a data: URL)"} for f in fields}
    as_json["name"] = {"type": "string", "description": "name to report for the image (default: the field name)"}
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": list(fields), "properties": multipart}},
        "application/json": {"schema": {"type": "object", "required": [f"{f}_base64" for f in fields],
                                         "properties": as_json}}}}}


def _api(fp, work: "_EngineWork") -> APIRouter:
    api = APIRouter()

    @api.post("/identify", tags=["faces"], openapi_extra=_image_body("image"))
    async def identify(request: Request, response: Response,
                       top_k: int | None = Query(None, ge=1, le=100, description="candidates per face (default 3)"),
                       threshold: float | None = Query(None, description="similarity needed to name a face")) -> dict:
        """Every face in the photo with its identity (null = unknown), similarity and candidates:
        the same object as one line of `facepipe identify --json`. top_k and threshold may also be
        fields of the form or of the JSON body."""
        [(name, data)], body = await read_uploads(request, "image")
        top_k = min(100, option(top_k, body, "top_k", int, 3, low=1))
        threshold = option(threshold, body, "threshold", float)
        faces = await work.run(response, lambda: fp.identify(facepipe.load_image(data, name), top_k, threshold))
        return image_record(name, faces)

    @api.post("/detect", tags=["faces"], openapi_extra=_image_body("image"))
    async def detect(request: Request, response: Response,
                     threshold: float | None = Query(None, description="detector score threshold")) -> dict:
        """Faces only: box, score and 5 landmarks (as `facepipe detect --json`)."""
        [(name, data)], body = await read_uploads(request, "image")
        threshold = option(threshold, body, "threshold", float)
        faces = await work.run(response, lambda: fp.detect(facepipe.load_image(data, name), threshold))
        return image_record(name, faces, with_identity=False)

    @api.post("/verify", tags=["faces"], openapi_extra=_image_body("image_a", "image_b"))
    async def verify(request: Request, response: Response, threshold: float | None = Query(None)) -> dict:
        """Same person or not, from the largest face of each photo."""
        [(name_a, a), (name_b, b)], body = await read_uploads(request, "image_a", "image_b")
        threshold = option(threshold, body, "threshold", float)
        v = await work.run(
            response, lambda: fp.verify(facepipe.load_image(a, name_a), facepipe.load_image(b, name_b), threshold))
        return {"a": name_a, "b": name_b, "similarity": round(float(v.similarity), 4),
                "threshold": float(v.threshold), "same_person": bool(v.same_person)}

    @api.get("/persons", tags=["gallery"])
    async def persons(response: Response,
                      offset: int = Query(0, ge=0, le=2**31, description="skip this many persons (by name)"),
                      limit: int = Query(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="page size")) -> dict:
        """Everyone enrolled, by name, with their number of faces and when they were enrolled (Unix time), a
        page at a time: `next_offset` (null on the last page) asks for the next one."""
        found = await work.run(response, fp.persons)
        page = found[offset:offset + limit]
        more = offset + limit < len(found)
        return {"persons": [{"name": p.name, "faces": p.faces, "created": p.created} for p in page],
                "total": len(found), "next_offset": offset + limit if more else None}

    @api.post("/persons/{name}/faces", tags=["gallery"], status_code=201, openapi_extra=_image_body("image"))
    async def enroll(name: str, request: Request, response: Response) -> JSONResponse:
        """Enroll the largest face of one photo under `name`. Sending the same file again changes
        nothing (200, "duplicate"): photos are known by the sha256 of their bytes."""
        name = person_name(name)  # 422 with the rule's own words when it breaks it
        [(image_name, data)], _ = await read_uploads(request, "image")
        # The bytes themselves go to the engine: a photo is known by the sha256 of its file, as in the CLI.
        status, = await work.run(response, lambda: _named_errors(image_name, fp.enroll, name, [data],
                                                                  source=f"upload:{image_name}"))
        if status == "no face":
            raise FacepipeError(f"{image_name}: no face found (nothing enrolled)")
        return JSONResponse({"person": name, "image": image_name, "status": status},
                            status_code=201 if status == "added" else 200, headers=dict(response.headers))

    @api.delete("/persons/{name}", tags=["gallery"])
    async def remove(name: str, response: Response) -> dict:
        """Remove a person and all their faces."""
        name = person_name(name)  # 422 with the rule's own words when it breaks it

        def remove_known():
            if name not in {p.name for p in fp.persons()}:
                raise HTTPException(404, f"no person named {name!r} in the gallery")
            return fp.remove(name)

        return {"person": name, "removed_faces": await work.run(response, remove_known)}

    @api.get("/gallery", tags=["gallery"])
    async def gallery(response: Response) -> dict:
        """Size, the model that filled it, and which threshold decides "unknown" and why."""
        return jsonable_encoder(await work.run(response, fp.info))

    return api


class _EngineWork:
    """Every engine call of a request: in a turn of the bounded queue, in the thread pool (off the event loop),
    under the per-image memory budget; its time is said in a Server-Timing header, so a client can tell the
    engine's time from the HTTP overhead and the wait."""

    def __init__(self, admission: Admission, max_image_bytes: int):
        self.admission, self.max_image_bytes = admission, max_image_bytes

    async def call(self, fn, *args):
        """fn(*args) the same way, without the timing header (for routers that only need the turn)."""
        def limited():
            with image_limits(max_bytes=self.max_image_bytes):
                return fn(*args)

        return await self.admission.run(lambda: run_in_threadpool(limited))

    async def run(self, response: Response, call):
        def timed():
            with image_limits(max_bytes=self.max_image_bytes):
                start = time.perf_counter()
                result = call()
                return result, time.perf_counter() - start

        queued = time.perf_counter()
        result, seconds = await self.admission.run(lambda: run_in_threadpool(timed))
        waited = time.perf_counter() - queued - seconds
        response.headers["Server-Timing"] = f"queue;dur={waited * 1000:.2f}, engine;dur={seconds * 1000:.2f}"
        return result


def _named_errors(name: str, fn, *args, **kwargs):
    """Call the engine with bytes; its reader calls them "image" in errors: say the upload's name instead."""
    try:
        return fn(*args, **kwargs)
    except ImageError as exc:
        message = str(exc)
        if not message.startswith("image: "):
            raise
        raise ImageError(f"{name}: {message.removeprefix('image: ')}") from None


# -- errors ------------------------------------------------------------------------------------------
def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI, private_paths: list[tuple[str, str]]) -> None:
    def public(exc: Exception) -> str:
        message = str(exc)
        for path, shown in private_paths:
            message = message.replace(path, shown)
        return message

    @app.exception_handler(BodyTooLarge)
    async def too_large(_request, exc):
        return _error(413, str(exc), {"connection": "close"})

    @app.exception_handler(BodyTimeout)
    async def too_slow(_request, exc):
        return _error(408, str(exc), {"connection": "close"})

    @app.exception_handler(Overloaded)
    async def busy(_request, exc):
        return _error(503, str(exc), {"retry-after": str(exc.retry_after)})

    @app.exception_handler(ImageError)
    async def bad_image(_request, exc):
        return _error(422, public(exc))

    @app.exception_handler(GalleryError)  # ModelMismatchError included: another model's gallery is a 409 too
    async def gallery_problem(_request, exc):
        return _error(409, public(exc))

    @app.exception_handler(FacepipeError)
    async def user_problem(_request, exc):
        return _error(422, public(exc))

    @app.exception_handler(HTTPException)
    async def http_problem(_request, exc):
        return _error(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request, exc):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return _error(422, f"{where}: {first.get('msg', 'invalid value')}")

    @app.exception_handler(Exception)
    async def unexpected(request, exc):
        error_id = uuid.uuid4().hex[:12]
        log.error("error id %s on %s %s", error_id, request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": "internal error", "error_id": error_id}, status_code=500)
