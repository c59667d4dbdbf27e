"""`facepipe cluster [run] PATH...` and `facepipe cluster list | show | name | merge | split`: group the people
nobody has named yet, look at the groups, name and correct them (the work is the Engine's; this parses and
renders)."""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from facepipe.cli.console import console, print_error, progress
from facepipe.cli.options import (
    BatchOpt,
    DetectorOpt,
    DeviceOpt,
    GalleryOpt,
    JsonOpt,
    RayOpt,
    RecognizerOpt,
    SecondChanceOpt,
    WorkersOpt,
    open_engine,
)

RUN = "run"  # `facepipe cluster PATH...` is short for `facepipe cluster run PATH...`


class _RunByDefault(TyperGroup):
    """`facepipe cluster PATH...` runs `facepipe cluster run PATH...`; `facepipe cluster list|show|name|merge|split`
    the others (a folder named like a verb: write ./name). `facepipe cluster --help` shows the sub-verbs, then
    run's own help: the options of clustering are where one looks first."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [RUN, *args]
        return super().parse_args(ctx, args)

    def format_help(self, ctx, formatter) -> None:
        super().format_help(ctx, formatter)
        run = self.commands[RUN]
        run.format_help(typer.Context(run, info_name=RUN, parent=ctx), formatter)


def cluster_photos(
    paths: list[Path] = typer.Argument(..., help="Photos or folders of photos.", readable=False),
    gallery: Optional[str] = GalleryOpt,
    detector: Optional[str] = DetectorOpt,
    recognizer: Optional[str] = RecognizerOpt,
    device: str = DeviceOpt,
    second_chance: bool = SecondChanceOpt,
    workers: int = WorkersOpt,
    as_json: bool = JsonOpt,
    save_dir: Optional[Path] = typer.Option(None, "--save-dir", help="Write one contact sheet PNG per cluster here."),
    ray: Optional[str] = RayOpt,
    batch_size: int = BatchOpt,
):
    """Group the faces of these photos by person (photos clustered before are not embedded again)."""
    from facepipe.runtime.image import list_images

    images, problems = list_images(paths)
    if not images:  # nothing to read: say why before a gallery or a model is opened
        for path, why in problems:
            print_error(f"{path}: {why}")
        raise typer.Exit(1)
    runner = None
    if ray is not None:  # embedding on Ray's actors; clustering here, at the gallery's one writer
        from facepipe.scaleout import require_ray

        require_ray()
        from facepipe.scaleout.verbs import embed_runner

        runner = embed_runner(ray, workers if workers > 1 else None, batch_size)

    total = len(images)
    with open_engine(gallery, detector, recognizer, device, second_chance=second_chance) as engine:
        with progress() as bar:
            task = bar.add_task("clustering", total=total, status="")
            report = engine.cluster(paths, workers, on_item=lambda p: bar.update(task, advance=1, status=p.name),
                                    runner=runner)
        for message in report.errors:
            print_error(message)
        if as_json:
            for image in report.images:
                sys.stdout.write(json.dumps(image.to_json(), ensure_ascii=False) + "\n")
        else:
            _summary(engine, report)
        if save_dir is not None:
            touched = sorted({c for image in report.images for c in image.clusters if c is not None})
            for cluster in touched:
                _save_sheet(engine, cluster, save_dir / f"cluster-{cluster}.png")
            if not as_json:
                console.print(f"{len(touched)} contact sheets in {save_dir}")
    if report.errors:
        raise typer.Exit(1)


def _summary(engine, report) -> None:
    from rich.table import Table

    if not report.images:  # none could be read: the error lines say why
        return
    examples: dict[int, list[str]] = defaultdict(list)
    identified = 0
    for image in report.images:
        for face, cluster in zip(image.result.faces, image.clusters):
            if cluster is not None and len(examples[cluster]) < 3:
                examples[cluster].append(image.result.path.name)
            identified += face.identity is not None
    sizes = dict(engine.clusters())
    table = Table(title=f"Clusters in {engine.gallery().path} holding these photos' faces (largest first)")
    for col in ("cluster", "faces", "example photos"):
        table.add_column(col, justify="right" if col == "faces" else "left")
    for cluster in sorted(examples, key=lambda c: (-sizes.get(c, 0), c)):
        table.add_row(str(cluster), str(sizes.get(cluster, 0)), ", ".join(examples[cluster]))
    console.print(table)
    faces = sum(len(i.result.faces) for i in report.images)
    alone = sum(1 for i in report.images for c, f in zip(i.clusters, i.result.faces) if c is None and not f.identity)
    console.print(f"{len(report.images)} photos ({report.embedded} embedded now, "
                  f"{len(report.images) - report.embedded} clustered before), {faces} faces: {identified} of "
                  f"enrolled persons, {faces - identified - alone} in clusters, {alone} alone; new clusters: "
                  f"{report.counts['new_clusters']}, faces that joined existing ones: {report.counts['joined']}")


def _save_sheet(engine, cluster: int, path: Path) -> None:
    from facepipe.pipeline.cluster_sheet import cluster_sheet, save_sheet

    faces = engine.cluster_faces(cluster)
    save_sheet(cluster_sheet(f"cluster {cluster}: {len(faces)} faces", faces), path)


def cluster_list(gallery: Optional[str] = GalleryOpt, as_json: bool = JsonOpt):
    """Every cluster with its size and example photos."""
    from rich.markup import escape
    from rich.table import Table

    with open_engine(gallery) as engine:
        rows = [(c, n, engine.cluster_faces(c)) for c, n in engine.clusters()]
        where = engine.gallery().path
    if as_json:
        print(json.dumps([{"cluster": c, "faces": n, "face_ids": [f.id for f in faces]} for c, n, faces in rows]))
        return
    if not rows:
        console.print(f"No clusters in {escape(str(where))} yet: `facepipe cluster PATH...` groups the faces of "
                      "photos or folders by person.", highlight=False, soft_wrap=True)
        return
    table = Table(title="Clusters (largest first)")
    for col in ("cluster", "faces", "example photos"):
        table.add_column(col)
    for c, n, faces in rows:
        table.add_row(str(c), str(n), ", ".join(Path(f.source).name for f in faces[:3]))
    console.print(table)


def cluster_show(cluster: int = typer.Argument(..., help="Cluster id."), gallery: Optional[str] = GalleryOpt,
                 save: Optional[Path] = typer.Option(None, "--save", help="Write its contact sheet PNG here.")):
    """The faces of one cluster (their ids, for split and reject)."""
    from rich.table import Table

    with open_engine(gallery) as engine:
        faces = engine.cluster_faces(cluster)
        if save is not None:
            _save_sheet(engine, cluster, save)
    table = Table(title=f"cluster {cluster}: {len(faces)} faces")
    for col in ("face", "photo", "box"):
        table.add_column(col)
    for f in faces:
        table.add_row(str(f.id), f.source, ", ".join(f"{v:.0f}" for v in f.box))
    console.print(table)


def cluster_name(cluster: int = typer.Argument(..., help="Cluster id."),
                 name: str = typer.Argument(..., help="The person's name (new, or someone enrolled)."),
                 gallery: Optional[str] = GalleryOpt, recognizer: Optional[str] = RecognizerOpt):
    """Enroll a cluster's faces as a person: identify names them from now on."""
    with open_engine(gallery, recognizer=recognizer) as engine:
        n = engine.name_cluster(cluster, name)
    console.print(f"cluster {cluster} is now {name} ({n} faces enrolled)")


def cluster_merge(into: int = typer.Argument(..., help="The cluster that stays."),
                  other: int = typer.Argument(..., help="The cluster whose faces move into it."),
                  gallery: Optional[str] = GalleryOpt):
    """Two clusters are one person: move every face of the second into the first."""
    with open_engine(gallery) as engine:
        n = engine.merge_clusters(into, other)
    console.print(f"cluster {other} merged into {into} ({n} faces moved)")


def cluster_split(cluster: int = typer.Argument(..., help="Cluster id."),
                  faces: list[int] = typer.Argument(..., help="Face ids to take out (see `facepipe cluster show`)."),
                  gallery: Optional[str] = GalleryOpt):
    """Take faces out of a cluster: two or more form a new cluster; none of them comes back to this one."""
    with open_engine(gallery) as engine:
        new = engine.split_cluster(cluster, faces)
    console.print(f"{len(faces)} faces out of cluster {cluster}" + (f": now cluster {new}" if new else ""))


def register(app: typer.Typer) -> None:
    cluster_app = typer.Typer(cls=_RunByDefault, no_args_is_help=True,
                              help="`facepipe cluster PATH...` (short for `facepipe cluster run PATH...`): group "
                                   "the faces of photos by person (the people you have not named yet); then look "
                                   "at the groups, name, merge and split them. A folder named like a sub-verb: "
                                   "write ./list.")
    app.add_typer(cluster_app, name="cluster")
    cluster_app.command(RUN)(cluster_photos)
    cluster_app.command("list")(cluster_list)
    cluster_app.command("show")(cluster_show)
    cluster_app.command("name")(cluster_name)
    cluster_app.command("merge")(cluster_merge)
    cluster_app.command("split")(cluster_split)

