"""The `facepipe` command: parse, call the library, render with rich. No logic of its own."""
from __future__ import annotations

import sys

import typer
from rich.console import Console

from facepipe.errors import FacepipeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Face pipeline: detect, align, recognize; train your own detector and recognizer.")
console = Console()
err_console = Console(stderr=True)


def _register_subsystems() -> None:
    """Training, preparation and export verbs live next to their code; each adds its own commands."""
    import importlib

    for module in ("facepipe.detection.cli", "facepipe.recognition.cli", "facepipe.prepare.cli", "facepipe.export_cli"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("facepipe"):
                continue  # that subsystem is not part of this build
            raise
        mod.register(app)


_register_subsystems()


def main() -> None:
    """Entry point: user errors become one red line and exit code 1 (2 for usage errors)."""
    try:
        app(standalone_mode=False)
    except FacepipeError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/] (everything committed so far is kept)")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:  # click usage errors and the like
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
