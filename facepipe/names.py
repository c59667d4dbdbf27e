"""The one rule for a person's name, for every path that stores or looks one up.

Folder enroll (the folder's name), `Engine.enroll` / `remove` (the Python API), the HTTP service (the URL's
name) and `gallery import` (the export's names) all call `person_name()`, so a person enrolled one way can
be found, removed and matched every other way, on every gallery backend.

The rule: the name is NFC-normalised (the "ë" typed on one keyboard is the "ë" of a macOS folder name) and
trimmed; then it must be 1 to MAX_NAME_LENGTH characters, all printable — no control characters, no bidi
overrides or other invisible format characters (which would let "Alice" display as someone else), no lone
surrogates — and hold no path separator ("/" or "\\"), nor be "." or "..". Letters of any script, digits,
spaces and punctuation are fine: `Anne (2)`, `O'Brien`, `Zoë`, `𝔄lice`, `王小明`.

A leaf module: it imports only facepipe.errors, so every layer may use it.
"""
from __future__ import annotations

import unicodedata

from facepipe.errors import FacepipeError

MAX_NAME_LENGTH = 100  # characters, after normalisation (at most 400 UTF-8 bytes)


class PersonNameError(FacepipeError):
    """A person name that breaks the rule (the message says which part)."""


def person_name(name: object) -> str:
    """`name` as every gallery stores it (NFC, trimmed), or PersonNameError saying what is wrong with it."""
    if not isinstance(name, str):
        raise PersonNameError(f"a person name must be text, not {type(name).__name__}")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):  # a lone surrogate cannot even be encoded as UTF-8
        raise PersonNameError(f"{_shown(name)}: not a usable person name (it holds an invalid character)")
    text = unicodedata.normalize("NFC", name).strip()
    if not text:
        raise PersonNameError("an empty person name is not usable")
    if len(text) > MAX_NAME_LENGTH:
        raise PersonNameError(f"{_shown(text)}: a person name has at most {MAX_NAME_LENGTH} characters "
                              f"(this one has {len(text)})")
    bad = next((c for c in text if not c.isprintable()), None)
    if bad is not None:
        kind = "a control" if unicodedata.category(bad) == "Cc" else "an invisible or formatting"
        raise PersonNameError(f"{_shown(text)}: a person name may not hold {kind} character (U+{ord(bad):04X})")
    if "/" in text or "\\" in text or text in (".", ".."):
        raise PersonNameError(f"{_shown(text)}: a person name may not be '.' or '..' nor hold '/' or '\\'")
    return text


def is_person_name(name: object) -> bool:
    try:
        person_name(name)
    except PersonNameError:
        return False
    return True


def _shown(name: str) -> str:
    """The name as it may be printed in an error: escaped, and cut short."""
    shown = ascii(name[:60]) if not name.isprintable() else repr(name[:60])
    return shown + ("..." if len(name) > 60 else "")
