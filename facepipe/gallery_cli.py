"""`facepipe gallery export / import / reindex`: move a gallery between machines and backends, rebuild its index."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

GalleryOpt = typer.Option(None, "--gallery", help="Gallery: a SQLite file (default: your user data folder), "
                                                  "milvus://HOST:PORT/COLLECTION or milvus-lite:///path/file.db.")


def register(gallery_app: typer.Typer) -> None:
    from facepipe.cli import _progress, console

    @gallery_app.command("export")
    def gallery_export(file: Path = typer.Argument(..., help="The .npz file to write (see docs/milvus.md for its arrays)."),
                       gallery: Optional[str] = GalleryOpt):
        """Write every face (person, embedding, source, hash, box, score) and the model fingerprint to FILE."""
        from facepipe.gallery import open_gallery
        from facepipe.gallery.npz import write_npz

        with open_gallery(gallery, create=False) as g:
            records = g.export_records()
        write_npz(file, records)
        console.print(f"exported {len(records)} faces of {len(records.names)} persons (model {records.model}) to {file}")

    @gallery_app.command("import")
    def gallery_import(file: Path = typer.Argument(..., help="A .npz written by `facepipe gallery export`."),
                       gallery: Optional[str] = GalleryOpt):
        """Add the faces of FILE; faces already present (same photo hash) are skipped; all or nothing."""
        from facepipe.gallery import open_gallery
        from facepipe.gallery.npz import read_npz

        records = read_npz(file)  # checked in full before the gallery is touched
        with open_gallery(gallery) as g, _progress() as bar:
            task = bar.add_task("importing", total=len(records), status="")
            added, skipped = g.import_records(records, on_progress=lambda done: bar.update(task, completed=done))
        console.print(f"imported {added} faces from {file} ({skipped} already present, skipped)")

    @gallery_app.command("reindex")
    def gallery_reindex(gallery: Optional[str] = GalleryOpt,
                        fold: bool = typer.Option(False, "--fold", help="Only fold recent enrolls/removals into the "
                                                                        "trained index (no retraining).")):
        """Rebuild the gallery's ANN index now (it is otherwise rebuilt only when missing or stale)."""
        import time

        from facepipe.gallery import open_gallery

        with open_gallery(gallery, create=False) as g:
            t = time.perf_counter()
            tag = g.reindex(full=not fold)
        console.print(f"index rebuilt in {time.perf_counter() - t:.1f} s: {tag.count} faces" if tag else
                      "nothing to index")
