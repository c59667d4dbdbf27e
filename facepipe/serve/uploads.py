"""Images out of a request: multipart file fields, or base64 strings in a JSON object.

The bytes go to the engine as they came (its safe reader decodes them, with the CLI's errors), so
the content hash that makes enrolling idempotent is the hash of the file the client sent.

The JSON body is a flat object: nesting, integers longer than MAX_NUMBER_DIGITS digits, and non-finite numbers
(`1e400`, `NaN`) are refused as 422 while parsing, before they can cost anything. Upload names are cut to
MAX_UPLOAD_NAME characters of printable text (they are echoed back and stored with each enrolled face).
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import unicodedata
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
            out.append((upload_name(part.filename, field), await part.read()))
        return out, {k: v for k, v in form.items() if isinstance(v, str)}
    finally:
        await form.close()


MAX_UPLOAD_NAME = 120
MAX_NUMBER_DIGITS = 40


def upload_name(raw: object, default: str) -> str:
    """The name a client gave an upload, as it may be shown and stored: the last path part, printable, short."""
    if not isinstance(raw, str):
        return default
    name = PurePath(raw.replace("\\", "/")).name
    name = "".join(c if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF else "?"
                   for c in unicodedata.normalize("NFC", name.encode("utf-8", "replace").decode("utf-8")))
    if len(name) > MAX_UPLOAD_NAME:
        stem, dot, suffix = name.rpartition(".")
        keep = f"{dot}{suffix}" if dot and len(suffix) <= 10 else ""
        name = name[:MAX_UPLOAD_NAME - len(keep) - 3] + "..." + keep
    return name.strip() or default


class _BadJson(ValueError):
    pass


def _number(text: str, kind: type):
    if len(text) > MAX_NUMBER_DIGITS:
        raise _BadJson(f"a number of {len(text)} characters is too long")
    value = kind(text)
    if isinstance(value, float) and not math.isfinite(value):
        raise _BadJson(f"{text[:20]} is not a finite number")
    return value


def _no_constant(text: str):
    raise _BadJson(f"{text} is not a number JSON allows")


def parse_json_object(raw: bytes) -> dict:
    """A flat JSON object (values: strings, numbers, booleans, null), or a one-line 422."""
    try:
        body = json.loads(raw, parse_int=lambda t: _number(t, int), parse_float=lambda t: _number(t, float),
                          parse_constant=_no_constant)
    except _BadJson as exc:
        raise HTTPException(422, f"the JSON body is refused: {exc}") from None
    except RecursionError:
        raise HTTPException(422, "the JSON body is nested too deeply") from None
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        raise HTTPException(422, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(422, "the JSON body must be an object")
    nested = next((k for k, v in body.items() if isinstance(v, (dict, list))), None)
    if nested is not None:
        raise HTTPException(422, f"the JSON body must be flat: field {upload_name(nested, '?')!r} holds an "
                                 "object or a list")
    return body


async def _from_json(request: Request, fields: tuple[str, ...]) -> tuple[list[tuple[str, bytes]], dict]:
    body = parse_json_object(await request.body())
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
        label = upload_name(name, field) if len(fields) == 1 else field
        out.append((label, data))
    return out, {k: v for k, v in body.items() if isinstance(v, (int, float, str)) and not k.endswith("_base64")}


def option(query_value, body: dict, key: str, kind: type, default=None, low: float | None = None):
    """A parameter from the query string, else from the body's fields, else the default; 422 if bad."""
    raw = query_value if query_value is not None else body.get(key)
    if raw is None or raw == "":
        return default
    if isinstance(raw, str) and len(raw) > 80:
        raise HTTPException(422, f"{key} must be a number") from None
    try:
        value = kind(raw)
    except (TypeError, ValueError, OverflowError):
        raise HTTPException(422, f"{key} must be a number") from None
    if isinstance(raw, bool) or value != value or value in (float("inf"),
                                                            float("-inf")) or (low is not None and value < low):
        raise HTTPException(422, f"{key} must be a finite number" + (f" >= {low:g}" if low is not None else ""))
    return value
