"""The terminal of every `facepipe` command: one console for results (stdout), one for messages and progress
bars (stderr), the progress bar, and the one-red-line error format."""
from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

# Piped or captured output gets room for the tables instead of rich's 80-column default. No emoji codes: rich
# would print a file name or time like `a:m:b` or `h:m:s` as `aⓂb`; markup stays (escape text that is not ours).
console = Console(width=None if sys.stdout.isatty() else 140, emoji=False)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140, emoji=False)


def progress() -> Progress:
    """A bar on stderr with a count and a status field (`bar.add_task(label, total=n, status="")`)."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=err, transient=False,
                    disable=not err.is_terminal)


class _ConsoleHandler(logging.Handler):
    """The library's log records (facepipe.log) on the stderr console: warnings in yellow, progress plain."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            err.print(f"[bold yellow]warning:[/] {message}", highlight=False, markup=True)
        else:
            err.print(message, highlight=False, markup=False)


def show_library_messages() -> None:
    """Route the "facepipe" logger to the stderr console (once), info and up."""
    logger = logging.getLogger("facepipe")
    if not any(isinstance(h, _ConsoleHandler) for h in logger.handlers):
        logger.addHandler(_ConsoleHandler())
        logger.setLevel(logging.INFO)
        logger.propagate = False


def print_error(message: str) -> None:
    """A user error: one red line on stderr."""
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # [brackets] are text
