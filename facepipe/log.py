"""Messages for people, through the standard `logging` module (the "facepipe" logger): the library draws nothing.

`warn()` says a warning once per process; `info()` reports progress (trainers, downloads). A library user sees
warnings through Python's default handler (stderr) and configures `logging` as usual; the `facepipe` command
routes these records to its stderr console (cli/console.py), warnings in yellow.
"""
from __future__ import annotations

import logging

logger = logging.getLogger("facepipe")
_seen: set[str] = set()


def warn(message: str) -> None:
    if message in _seen:
        return
    _seen.add(message)
    logger.warning(message)


def info(message: str) -> None:
    logger.info(message)
