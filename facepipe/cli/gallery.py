"""`facepipe gallery list | remove | info | export | import | reindex`: look into a gallery, edit it, move it
between machines and backends, rebuild its index."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from facepipe.cli.console import console, progress
from facepipe.cli.options import GalleryOpt, JsonOpt, RecognizerOpt, open_engine


def gallery_list(gallery: Optional[str] = GalleryOpt):
    """Everyone enrolled, with their number of faces."""
    with open_engine(gallery) as engine:
        table = Table(title=str(engine.gallery().path))
        for col in ("person", "faces", "enrolled"):
            table.add_column(col)
        for p in engine.persons():
            table.add_row(p.name, str(p.faces), datetime.fromtimestamp(p.created).strftime("%Y-%m-%d %H:%M"))
        console.print(table)


def gallery_remove(name: str = typer.Argument(..., help="Person to remove."), gallery: Optional[str] = GalleryOpt):
    """Remove a person and all their faces."""
    with open_engine(gallery) as engine:
        n = engine.remove(name)
    console.print(f"removed {name} ({n} faces)")


def gallery_info(gallery: Optional[str] = GalleryOpt, recognizer: Optional[str] = RecognizerOpt,
                 as_json: bool = JsonOpt):
    """Where the gallery is, which model filled it, its size, search method and threshold."""
    with open_engine(gallery, recognizer=recognizer) as engine:
        info = engine.info()
    if as_json:
        print(json.dumps(info))
        return
    calibrated = info["calibrated_threshold"]
    table = Table(show_header=False, title="gallery")
    rows = [("file", info["gallery"]), ("model", str(info["model"])), ("persons", str(info["persons"])),
            ("faces", str(info["faces"])), ("embedding size", str(info["embedding_size"] or "-")),
            ("search", info["search"]),
            ("calibrated threshold", f"{calibrated:.3f}" if calibrated is not None else info["calibration"])]
    if info["threshold"] is not None:
        rows.append(("threshold used", f"{info['threshold']:.3f} ({info['threshold_source']})"))
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)

def gallery_reject(name: str = typer.Argument(..., help="The person the face is not."),
                   face: str = typer.Argument(..., help="A face id (from `facepipe cluster show` / --json) or a photo "
                                                        "(every face of it)."),
                   gallery: Optional[str] = GalleryOpt):
    """"Not this person": identify and later cluster runs never name this face NAME again."""
    with open_engine(gallery) as engine:
        removed = engine.reject(name, int(face) if face.isdigit() else Path(face))
    console.print(f"{face} is not {name}" + (f" ({removed} enrolled face(s) removed from {name})" if removed else ""))


def register(app: typer.Typer) -> None:
    gallery_app = typer.Typer(no_args_is_help=True, help="Look into and edit the gallery.")
    app.add_typer(gallery_app, name="gallery")
    gallery_app.command("list")(gallery_list)
    gallery_app.command("remove")(gallery_remove)
    gallery_app.command("info")(gallery_info)
    gallery_app.command("reject")(gallery_reject)

    @gallery_app.command("export")
    def gallery_export(file: Path = typer.Argument(..., help="The .npz file to write (see docs/milvus.md for its "
                                                             "arrays)."),
                       gallery: Optional[str] = GalleryOpt):
        """Write every face (person, embedding, source, hash, box, score) and the model fingerprint to FILE."""
        from facepipe.gallery import open_gallery
        from facepipe.gallery.npz import write_npz

        with open_gallery(gallery, create=False) as store:
            records = store.export_records()
        write_npz(file, records)
        console.print(f"exported {len(records)} faces of {len(records.names)} persons (model {records.model}) to "
                      f"{file}")

    @gallery_app.command("import")
    def gallery_import(file: Path = typer.Argument(..., help="A .npz written by `facepipe gallery export`."),
                       gallery: Optional[str] = GalleryOpt):
        """Add the faces of FILE; faces already present (same photo hash) are skipped; all or nothing."""
        from facepipe.gallery import open_gallery
        from facepipe.gallery.npz import read_npz

        records = read_npz(file)  # checked in full before the gallery is touched
        with open_gallery(gallery) as store, progress() as bar:
            task = bar.add_task("importing", total=len(records), status="")
            added, skipped = store.import_records(records, on_progress=lambda done: bar.update(task, completed=done))
        console.print(f"imported {added} faces from {file} ({skipped} already present, skipped)")

    @gallery_app.command("reindex")
    def gallery_reindex(gallery: Optional[str] = GalleryOpt,
                        fold: bool = typer.Option(False, "--fold", help="Only fold recent enrolls/removals into the "
                                                                        "trained index (no retraining).")):
        """Rebuild the gallery's ANN index now (it is otherwise rebuilt only when missing or stale)."""
        import time

        from facepipe.gallery import open_gallery

        with open_gallery(gallery, create=False) as store:
            t = time.perf_counter()
            tag = store.reindex(full=not fold)
        console.print(f"index rebuilt in {time.perf_counter() - t:.1f} s: {tag.count} faces" if tag else
                      "nothing to index")
