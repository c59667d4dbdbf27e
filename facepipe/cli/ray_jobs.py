"""`--ray` for enroll and identify: parse what the Ray job needs, call facepipe.scaleout, render its summary.

Ray itself is imported by facepipe.scaleout only; without it `--ray` is one line naming what to install."""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from facepipe.cli.console import console, err
from facepipe.cli.options import open_engine
from facepipe.errors import FacepipeError

_ADDRESS = re.compile(r"auto|local|ray://\S+|[\w.-]+:\d+")


def ray_flag_value(argv: list[str]) -> list[str]:
    """`--ray` may stand alone: it becomes `--ray=local` unless the next word is a cluster address (auto, local,
    HOST:PORT, ray://...), so `identify photos/ --ray` and `identify --ray auto photos/` both work."""
    out = []
    for i, arg in enumerate(argv):
        following = argv[i + 1] if i + 1 < len(argv) else ""
        out.append("--ray=local" if arg == "--ray" and not _ADDRESS.fullmatch(following) else arg)
    return out


def summary_table(summary, title: str, to: Optional[Console] = None) -> None:
    """The table every --ray job ends with, and where its problems are listed."""
    table = Table(title=title, show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    rows = [("photos", summary.photos), ("processed in this run", summary.processed),
            ("skipped: done before (resume)", summary.skipped)]
    if summary.known:
        rows.append(("skipped: already in the gallery", summary.known))
    rows += [("faces", summary.faces), ("no face", summary.no_face),
             ("[red]unreadable[/]" if summary.unreadable else "unreadable", summary.unreadable),
             ("wall time", f"{summary.seconds:.1f} s"), ("photos/s", f"{summary.rate:.2f}"),
             ("actors", summary.actors)]
    for what, value in rows:
        table.add_row(what, str(value))
    (to or console).print(table)
    if summary.unreadable or summary.problems:
        err.print(f"[yellow]{summary.unreadable + len(summary.problems)} problem(s), one line each in "
                  f"{summary.errors_file}[/]", highlight=False)


def enroll_ray(folder: str, gallery, detector, recognizer, device: str, workers: int, address: str,
               out: Optional[Path], batch_size: int, second_chance: bool = True) -> None:
    from facepipe.scaleout import require_ray

    require_ray()
    from facepipe.scaleout import verbs

    with open_engine(gallery, detector, recognizer, device, second_chance=second_chance) as fp:
        report, summary = verbs.enroll(fp, [folder], out, address, workers, batch_size)
        rec, g = fp.recognizer, fp.gallery()
        if len(report.persons) <= 50:  # an archive of 200,000 persons gets the totals only
            table = Table(title=f"Enrolled into {g.path}  (model {rec.name})")
            for col in ("person", "added", "already enrolled", "largest of several", "no face", "errors"):
                table.add_column(col, justify="left" if col == "person" else "right")
            for name, t in sorted(report.persons.items()):
                table.add_row(name, str(t.added), str(t.unchanged), str(t.largest_of_many), str(t.no_face),
                              f"[red]{t.errors}[/]" if t.errors else "0")
            console.print(table)
        added = sum(t.added for t in report.persons.values())
        summary_table(summary, f"enroll --ray: {added} faces added to {g.path}; job folder {summary.out}")
    if report.errors or summary.problems:
        raise typer.Exit(1)


def identify_ray(paths: list[str], gallery, detector, recognizer, device: str, threshold, top_k: int, as_json: bool,
                 workers: int, address: str, out: Optional[Path], out_format: str, batch_size: int,
                 local_only: bool, second_chance: bool = True) -> None:
    from facepipe.scaleout import require_ray

    if local_only:
        raise FacepipeError("--ray identifies photos into --out shards; --save-dir and --camera run without --ray")
    if out is None:
        raise FacepipeError("--ray writes its records to a folder: add --out DIR")
    if out_format not in ("jsonl", "parquet"):
        raise FacepipeError(f"--format {out_format!r}: expected jsonl or parquet")
    if not paths:
        raise FacepipeError("nothing to identify: give photos or folders (local paths or s3://, gs://, file:// URIs)")
    require_ray()
    from facepipe.scaleout import verbs

    def emit(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    with open_engine(gallery, detector, recognizer, device, second_chance=second_chance) as fp:
        summary, th = verbs.identify(fp, paths, out, out_format, threshold, top_k, address, workers, batch_size,
                                     on_record=emit if as_json else None)
    to = err if as_json else console  # with --json the records own stdout
    to.print(f"threshold {th.value:.3f} ({th.source}); records in {out}", highlight=False)
    summary_table(summary, "identify --ray", to)
    if summary.unreadable or summary.problems:
        raise typer.Exit(1)
