"""The options every verb shares, declared once. A gallery is a string spec (a SQLite file, milvus://…,
milvus-lite:///…), never a Path: a Path would turn `milvus://host:19530/c` into a local file name."""
from __future__ import annotations

import typer

GALLERY_HELP = ("Gallery: a SQLite file (default: your user data folder), milvus://HOST:PORT/COLLECTION "
                "or milvus-lite:///path/file.db.")
DETECTOR_HELP = ("A named model (yunet), a third-party or facepipe ONNX file, or a .pt checkpoint; "
                 "default: dlib HOG + 68 landmarks.")
RECOGNIZER_HELP = ("A named model (sface), a third-party or facepipe ONNX file, or a .pt checkpoint; "
                   "default: dlib ResNet via ONNX Runtime.")

# Photo and folder arguments are typer.Argument(..., readable=False): reading them is the library's (one line naming
# the folder or file and why, exit 1), not click's ("Invalid value for 'paths'", exit 2).
GalleryOpt = typer.Option(None, "--gallery", help=GALLERY_HELP)
DetectorOpt = typer.Option(None, "--detector", help=DETECTOR_HELP)
RecognizerOpt = typer.Option(None, "--recognizer", help=RECOGNIZER_HELP)
DeviceOpt = typer.Option("cpu", "--device", help="cpu, cuda or auto. Asking for cuda warns loudly if it is not used.")
WorkersOpt = typer.Option(1, "--workers", min=1, help="Worker processes (dlib's detector uses one core each); with "
                          "--ray, actors (default: one per CPU of the cluster, or per GPU on cuda).")
RayOpt = typer.Option(None, "--ray", help="Run as a Ray Data job: --ray (a local cluster, or $RAY_ADDRESS), --ray auto "
                      "(the running cluster), --ray HOST:PORT or ray://HOST:PORT. Needs Ray, the ray extra of "
                      "facepipe (docs/ray.md).")
BatchOpt = typer.Option(8, "--batch-size", min=1, help="With --ray: photos per actor call.")
JsonOpt = typer.Option(False, "--json", help="JSON on stdout (one object per line) instead of a table.")
SecondChanceOpt = typer.Option(True, "--second-chance/--no-second-chance",
                               help="Photos where the default detector finds no face get a second chance (dlib's "
                                    "CNN and rotated passes; costs time only on those photos, most on crowds of "
                                    "tiny faces).")
# Video track events (started, named, renamed, ended) out to automation: facepipe/video/events.py.
WebhookOpt = typer.Option(None, "--webhook", help="Videos: POST each track event as JSON to this URL.")
MqttOpt = typer.Option(None, "--mqtt", help="Videos: publish each track event to mqtt://HOST[:PORT]/TOPIC.")
EventCropsOpt = typer.Option(False, "--event-crops", help="Videos: events carry the face as a base64 JPEG.")


def open_engine(gallery: str | None = None, detector: str | None = None, recognizer: str | None = None,
                device: str = "cpu", detect_threshold: float | None = None, second_chance: bool = True):
    """The Engine the shared options describe (models load on first use)."""
    from facepipe.engine import Engine

    return Engine(gallery, detector, recognizer, device, detect_threshold=detect_threshold,
                  second_chance=second_chance)
