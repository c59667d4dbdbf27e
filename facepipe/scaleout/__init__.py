"""Scale out: facepipe's per-photo work as a Ray Data job (`identify|enroll|prepare ... --ray [ADDRESS]`).

The only package of facepipe that imports Ray (an import-linter contract says so); Ray comes with
`pip install "facepipe[ray]"`. Without it, `--ray` says so in one line (`require_ray`).

- sources.py  where photos come from (local folders, pyarrow filesystems), listed lazily: no Ray
- job.py      the Ray Data job: read tasks that list, actors that hold the models, shards, the summary
- verbs.py    the driver's side of identify / enroll (what is written, what a rerun skips)
- prepare.py  prepare's chunks of work on the actors
"""
from __future__ import annotations

from facepipe.errors import FacepipeError

INSTALL_HINT = '--ray needs Ray: pip install "facepipe[ray]"'


def require_ray() -> None:
    """Raise one clear line when Ray (with Ray Data and pyarrow) is not installed."""
    try:
        import pyarrow  # noqa: F401
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise FacepipeError(f"{INSTALL_HINT} ({exc.name or exc} is missing)") from None
