"""`facepipe models list | fetch NAME | add NAME FILE | path NAME`: the named third-party models and their cache."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from facepipe.cli.console import console
from facepipe.errors import ModelError


def _fetch_with_bar(name: str) -> Path:
    """runtime.models.fetch() with a download bar on stderr (shown only on a terminal)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from facepipe.cli.console import err
    from facepipe.runtime import models

    cached = models.verified_cached(name)  # still the registry's bytes (or gone, to be fetched again)
    if cached is not None:
        return cached
    with Progress(TextColumn(f"[bold]{name}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("download", total=models.named_model(name).size)
        return models.fetch(name, lambda done, total: bar.update(task, completed=done, total=total))


def _layouts_table() -> Table:
    """The third-party ONNX layouts the runtime recognises (runtime/layouts.py): any such file works as --detector
    or --recognizer, named or not."""
    from facepipe.runtime.layouts import layouts

    table = Table(title="ONNX layouts recognised (any file; LAYOUT:FILE forces one)")
    for column in ("layout", "kind", "recognised by", "default threshold", "metric"):
        table.add_column(column, overflow="fold")
    for layout in layouts().values():
        table.add_row(layout.name, layout.kind, layout.recognised_by, f"{layout.default_threshold:g}",
                      layout.metric or "-")
    return table


def register(app: typer.Typer) -> None:
    models_app = typer.Typer(no_args_is_help=True,
                             help="Named third-party models (YuNet, SFace): list, fetch once, hand over a file.")
    app.add_typer(models_app, name="models")

    @models_app.command("list")
    def list_models() -> None:
        """Each named model: what it is, its licence, its default threshold, whether it is in the cache."""
        from facepipe.runtime import models

        table = Table(show_lines=False)
        for column in ("name", "kind", "licence", "size", "default threshold", "cached", "source"):
            table.add_column(column, overflow="fold")
        for m in models.REGISTRY.values():
            cached = str(models.cached_path(m.name)) if models.is_cached(m.name) else "no"
            table.add_row(m.name, m.kind, m.licence, f"{m.size:,} B", f"{m.default_threshold:g}", cached, m.url())
        console.print(table)
        console.print(f"cache: {models.models_dir()}  (FACEPIPE_CACHE moves it; {models.URL_BASE_ENV} sets a mirror)")
        console.print(_layouts_table())

    @models_app.command("fetch")
    def fetch(name: str = typer.Argument(..., help="a named model, e.g. yunet")) -> None:
        """Download a named model into the cache (checked by sha256); nothing happens if it is already there."""

        console.print(str(_fetch_with_bar(name)))

    @models_app.command("add")
    def add(name: str = typer.Argument(..., help="a named model, e.g. yunet"),
            file: Path = typer.Argument(..., help="the model file you downloaded")) -> None:
        """Hand over a file you obtained yourself: its size and sha256 are checked before it goes into the cache."""
        from facepipe.runtime import models

        console.print(f"{name}: {models.add(name, file)}")

    @models_app.command("path")
    def path(name: str = typer.Argument(..., help="a named model, e.g. yunet")) -> None:
        """Print where a named model sits in the cache (an error if it has not been fetched)."""
        from facepipe.runtime import models

        target = models.cached_path(name)
        if not target.is_file():
            raise ModelError(f"{name}: not in the cache yet ({target}); run `facepipe models fetch {name}` "
                             f"or `facepipe models add {name} FILE`")
        console.print(str(target))
