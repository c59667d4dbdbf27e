"""`POST /v1/identify-video`: an uploaded clip in, one NDJSON line per track out, written as each track ends.

The clip comes as the other routes' images do (multipart field `video`, or `video_base64` in JSON), within
the same upload limit; OpenCV reads it from a private temporary file that is deleted when the answer ends.
A clip that cannot be opened is a 422 before anything is streamed, a foreign or empty gallery a 409, and a
clip longer than MAX_VIDEO_SECONDS a 422 (the work of one request stays bounded). A clip that breaks off in
the middle (truncated) ends the stream with one line `{"error": "..."}` after the tracks found until then.
"""
from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path, PurePath

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from facepipe.errors import FacepipeError
from facepipe.serve.uploads import option, read_uploads
from facepipe.video.identify import VideoOptions, identify_video
from facepipe.video.source import VIDEO_SUFFIXES

MAX_VIDEO_SECONDS = 600.0

_VIDEO_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["video"],
                                       "properties": {"video": {"type": "string", "format": "binary"}}}},
    "application/json": {"schema": {"type": "object", "required": ["video_base64"], "properties": {
        "video_base64": {"type": "string", "description": "base64 (or a data: URL)"},
        "name": {"type": "string", "description": "name to report for the clip (default: the field name)"}}}}}}}


def video_router(fp, work) -> APIRouter:
    """The route, calling `fp` (the service's engine) in a turn of `work.admission` (the other routes' bounded
    queue: a clip holds one turn until its last line is sent); included under /v1 with the other routes' auth."""
    router = APIRouter()

    @router.post("/identify-video", tags=["video"], openapi_extra=_VIDEO_BODY,
                 response_class=StreamingResponse,
                 responses={200: {"content": {"application/x-ndjson": {}},
                                  "description": "one track record per line, as in `identify clip.mp4 --json`"}})
    async def identify_video_route(
            request: Request,
            every: int | None = Query(None, ge=1, le=100, description="detect on every Nth frame (default 3)"),
            top_k: int | None = Query(None, ge=1, le=100, description="candidates per track (default 3)"),
            threshold: float | None = Query(None, description="similarity needed to name a track")):
        """Every person on screen in the clip: one JSON object per track (`video`, `track`, `start`, `end`,
        `identity`, `similarity`, `candidates`, `boxes`), one per line, sent as each track ends."""
        [(name, data)], body = await read_uploads(request, "video")
        options = VideoOptions(every=option(every, body, "every", int, 3, low=1),
                               top_k=min(100, option(top_k, body, "top_k", int, 3, low=1)),
                               threshold=option(threshold, body, "threshold", float))
        done, turn = await _hold_turn(work.admission)
        try:
            run, path = await run_in_threadpool(_open_clip, fp, name, data, options)
        except BaseException:
            done.set()
            raise
        return StreamingResponse(_streamed(_records(run, path), done, turn), media_type="application/x-ndjson")

    return router


async def _hold_turn(admission) -> tuple[asyncio.Event, asyncio.Future]:
    """Take one of the service's engine turns and hold it until the returned event is set (Overloaded, a 503,
    when the queue is full, as for the other routes)."""
    started, done = asyncio.Event(), asyncio.Event()

    async def hold():
        started.set()
        await done.wait()

    turn = asyncio.ensure_future(admission.run(hold))
    waiting = asyncio.ensure_future(started.wait())
    await asyncio.wait({turn, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if turn.done():
        waiting.cancel()
        turn.result()  # raises what the admission refused with
    return done, turn


async def _streamed(lines, done: asyncio.Event, turn: asyncio.Future):
    """The lines, produced in the thread pool; the turn is given back when the stream ends or is abandoned."""
    try:
        async for line in iterate_in_threadpool(lines):
            yield line
    finally:
        try:
            lines.close()  # deletes the temporary file
        except ValueError:  # abandoned while a thread is inside it: that thread ends it
            pass
        done.set()
        await turn


def _open_clip(fp, name: str, data: bytes, options: VideoOptions):
    """Write the upload to a private temporary file and open it; FacepipeError (422) when it is not a clip."""
    suffix = PurePath(name).suffix.lower()
    handle, path = tempfile.mkstemp(prefix="facepipe-upload-", suffix=suffix if suffix in VIDEO_SUFFIXES else ".mp4")
    path = Path(path)
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        run = identify_video(fp, path, options)
        info = run.info
        if info.frame_count and info.frame_count / info.fps > MAX_VIDEO_SECONDS:
            run.close()
            raise FacepipeError(f"{name}: {info.frame_count / info.fps:.0f} s long; at most {MAX_VIDEO_SECONDS:.0f} s "
                                "per request")
        run.info.name = name  # records name the upload, not the temporary file
        return run, path
    except FacepipeError as exc:
        path.unlink(missing_ok=True)
        raise FacepipeError(str(exc).replace(str(path), name)) from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _records(run, path: Path):
    """The NDJSON lines (Starlette iterates this in its thread pool); the temporary file goes at the end."""
    try:
        for record in run:
            yield json.dumps(record.to_json(), ensure_ascii=False) + "\n"
    except FacepipeError as exc:
        yield json.dumps({"error": str(exc).replace(str(path), run.info.name)}) + "\n"
    finally:
        run.close()
        path.unlink(missing_ok=True)
