"""Images out of a request: multipart file fields, or base64 strings in a JSON object.

The bytes go to the engine as they came (its safe reader decodes them, with the CLI's errors), so
the content hash that makes enrolling idempotent is the hash of the file the client sent.
"""
from __future__ import annotations

import base64
import binascii
import json
from pathlib import PurePath

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request


async def read_uploads(request: Request, *fields: str) -> tuple[list[tuple[str, bytes]], dict]:
    """[(name to report, bytes)] for each field, in order, and the body's other (scalar) fields;
    415/422 for a request without them."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        return await _from_multipart(request, fields)
    if kind == "application/json":
        return await _from_json(request, fields)
    raise HTTPException(415, f"send multipart/form-data with file field(s) {', '.join(fields)}, "
                             f"or application/json with {', '.join(f + '_base64' for f in fields)}")


async def _from_multipart(request: Request, fields: tuple[str, ...]) -> tuple[list[tuple[str, bytes]], dict]:
    parser = MultiPartParser(request.headers, request.stream(), max_files=len(fields), max_fields=16)
    # Parts stay in memory (the body limit bounds them, and they are read whole anyway): Starlette's
    # default spills parts over 1 MB to a temporary file, which doubled the cost of parsing a photo.
    parser.spool_max_size = max(parser.spool_max_size, int(request.headers.get("content-length") or 0))
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise HTTPException(400, str(exc)) from None
    try:
        out = []
        for field in fields:
            part = form.get(field)
            if not isinstance(part, UploadFile):
                raise HTTPException(422, f"missing file field {field!r} in the multipart form")
            name = PurePath((part.filename or "").replace("\\", "/")).name or field
            out.append((name, await part.read()))
        return out, {k: v for k, v in form.items() if isinstance(v, str)}
    finally:
        await form.close()


async def _from_json(request: Request, fields: tuple[str, ...]) -> tuple[list[tuple[str, bytes]], dict]:
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HTTPException(422, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(422, "the JSON body must be an object")
    name = body.get("name")
    out = []
    for field in fields:
        encoded = body.get(f"{field}_base64")
        if not isinstance(encoded, str):
            raise HTTPException(422, f"missing string field {field}_base64 in the JSON body")
        if encoded.startswith("data:"):
            encoded = encoded.partition(",")[2]  # a data: URL, as a browser's FileReader gives it
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise HTTPException(422, f"{field}_base64 is not valid base64") from None
        label = PurePath(name).name if isinstance(name, str) and len(fields) == 1 and name else field
        out.append((label, data))
    return out, {k: v for k, v in body.items() if isinstance(v, (int, float, str)) and not k.endswith("_base64")}


def option(query_value, body: dict, key: str, kind: type, default=None, low: float | None = None):
    """A parameter from the query string, else from the body's fields, else the default; 422 if bad."""
    raw = query_value if query_value is not None else body.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise HTTPException(422, f"{key} must be a number") from None
    if isinstance(raw, bool) or value != value or value in (float("inf"),
                                                            float("-inf")) or (low is not None and value < low):
        raise HTTPException(422, f"{key} must be a finite number" + (f" >= {low:g}" if low is not None else ""))
    return value
