"""The `facepipe` command (typer + rich): each module parses its verbs' options, calls the library and renders;
none decides anything, and none imports another's privates. Shared options: options.py; the terminal:
console.py. Each verb module adds its commands through `register(app)`."""
from __future__ import annotations

import importlib
import sys

import typer

from facepipe.errors import FacepipeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Face pipeline: detect, align, recognize; train your own detector and recognizer.")

# The verb modules, in the order of `facepipe --help`.
VERBS = ("faces", "cluster", "gallery", "demo", "detection", "recognition", "prepare", "export", "models", "serve",
         "watch")
for _verb in VERBS:
    importlib.import_module(f"facepipe.cli.{_verb}").register(app)


def main() -> None:
    """Entry point: user errors become one red line and exit code 1; usage errors exit 2 (typer)."""
    from facepipe.cli.console import print_error, show_library_messages
    from facepipe.cli.ray_jobs import ray_flag_value

    show_library_messages()
    try:
        app(ray_flag_value(sys.argv[1:]))
    except FacepipeError as exc:
        print_error(str(exc))
        sys.exit(1)
