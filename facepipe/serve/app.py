"""The HTTP front end: parse the request, call the engine off the event loop, render its records.

Every answer is JSON; every error is `{"error": "one line"}` with a status that says whose fault it
is (4xx: the request; 500: ours, with an id that is also in the server log, never a traceback).
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
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

import facepipe
from facepipe.errors import FacepipeError, GalleryError, ImageError
from facepipe.names import person_name
from facepipe.serve.auth import BearerKey, read_api_key
from facepipe.serve.clusters import cluster_router
from facepipe.serve.limits import BodyLimit, BodyTooLarge
from facepipe.serve.settings import ServeSettings
from facepipe.serve.uploads import option, read_uploads
from facepipe.types import image_record

log = logging.getLogger("facepipe.serve")
STATIC = Path(__file__).parent / "static"


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

    app = FastAPI(title="facepipe", summary="Detect, identify and enroll faces.", lifespan=lifespan)
    app.state.engine = fp
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["authorization", "content-type"])
    _add_error_handlers(app)
    app.include_router(_api(fp), prefix="/v1", dependencies=[Depends(BearerKey(key))])
    app.include_router(cluster_router(fp), prefix="/v1", dependencies=[Depends(BearerKey(key))])

    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict:
        """Liveness: answers without a key and says nothing about the gallery."""
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={
            "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:",
            "X-Content-Type-Options": "nosniff"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


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


def _api(fp) -> APIRouter:
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
        faces = await _engine(response, lambda: fp.identify(facepipe.load_image(data, name), top_k, threshold))
        return image_record(name, faces)

    @api.post("/detect", tags=["faces"], openapi_extra=_image_body("image"))
    async def detect(request: Request, response: Response,
                     threshold: float | None = Query(None, description="detector score threshold")) -> dict:
        """Faces only: box, score and 5 landmarks (as `facepipe detect --json`)."""
        [(name, data)], body = await read_uploads(request, "image")
        threshold = option(threshold, body, "threshold", float)
        faces = await _engine(response, lambda: fp.detect(facepipe.load_image(data, name), threshold))
        return image_record(name, faces, with_identity=False)

    @api.post("/verify", tags=["faces"], openapi_extra=_image_body("image_a", "image_b"))
    async def verify(request: Request, response: Response, threshold: float | None = Query(None)) -> dict:
        """Same person or not, from the largest face of each photo."""
        [(name_a, a), (name_b, b)], body = await read_uploads(request, "image_a", "image_b")
        threshold = option(threshold, body, "threshold", float)
        v = await _engine(
            response, lambda: fp.verify(facepipe.load_image(a, name_a), facepipe.load_image(b, name_b), threshold))
        return {"a": name_a, "b": name_b, "similarity": round(float(v.similarity), 4),
                "threshold": float(v.threshold), "same_person": bool(v.same_person)}

    @api.get("/persons", tags=["gallery"])
    async def persons() -> dict:
        """Everyone enrolled, with their number of faces and when they were enrolled (Unix time)."""
        found = await run_in_threadpool(fp.persons)
        return {"persons": [{"name": p.name, "faces": p.faces, "created": p.created} for p in found]}

    @api.post("/persons/{name}/faces", tags=["gallery"], status_code=201, openapi_extra=_image_body("image"))
    async def enroll(name: str, request: Request) -> JSONResponse:
        """Enroll the largest face of one photo under `name`. Sending the same file again changes
        nothing (200, "duplicate"): photos are known by the sha256 of their bytes."""
        name = person_name(name)  # 422 with the rule's own words when it breaks it
        [(image_name, data)], _ = await read_uploads(request, "image")
        # The bytes themselves go to the engine: a photo is known by the sha256 of its file, as in the CLI.
        status, = await run_in_threadpool(_named_errors, image_name, fp.enroll, name, [data],
                                          source=f"upload:{image_name}")
        if status == "no face":
            raise FacepipeError(f"{image_name}: no face found (nothing enrolled)")
        return JSONResponse({"person": name, "image": image_name, "status": status},
                            status_code=201 if status == "added" else 200)

    @api.delete("/persons/{name}", tags=["gallery"])
    async def remove(name: str) -> dict:
        """Remove a person and all their faces."""
        name = person_name(name)  # 422 with the rule's own words when it breaks it

        def remove_known():
            if name not in {p.name for p in fp.persons()}:
                raise HTTPException(404, f"no person named {name!r} in the gallery")
            return fp.remove(name)

        return {"person": name, "removed_faces": await run_in_threadpool(remove_known)}

    @api.get("/gallery", tags=["gallery"])
    async def gallery() -> dict:
        """Size, the model that filled it, and which threshold decides "unknown" and why."""
        return jsonable_encoder(await run_in_threadpool(fp.info))

    return api


async def _engine(response: Response, call):
    """Run an engine call in the thread pool (off the event loop); say how long it took in a
    Server-Timing header, so a client can tell the engine's time from the HTTP overhead."""
    def timed():
        start = time.perf_counter()
        result = call()
        return result, time.perf_counter() - start

    result, seconds = await run_in_threadpool(timed)
    response.headers["Server-Timing"] = f"engine;dur={seconds * 1000:.2f}"
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


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BodyTooLarge)
    async def too_large(_request, exc):
        return _error(413, str(exc), {"connection": "close"})

    @app.exception_handler(ImageError)
    async def bad_image(_request, exc):
        return _error(422, str(exc))

    @app.exception_handler(GalleryError)  # ModelMismatchError included: another model's gallery is a 409 too
    async def gallery_problem(_request, exc):
        return _error(409, str(exc))

    @app.exception_handler(FacepipeError)
    async def user_problem(_request, exc):
        return _error(422, str(exc))

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
