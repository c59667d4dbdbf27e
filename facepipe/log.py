"""Warnings for people, printed once to stderr in a colour that is hard to miss."""
from __future__ import annotations

from rich.console import Console

_stderr = Console(stderr=True)
_seen: set[str] = set()


def warn(message: str) -> None:
    if message in _seen:
        return
    _seen.add(message)
    _stderr.print(f"[bold yellow]warning:[/] {message}", highlight=False)


def info(message: str) -> None:
    _stderr.print(message, highlight=False)
