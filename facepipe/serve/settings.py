"""What a server was asked for, in one record that can travel to worker processes (as JSON)."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

ENV_VAR = "FACEPIPE_SERVE_SETTINGS"  # how `--workers N` hands the settings to each worker process


@dataclass(frozen=True)
class ServeSettings:
    gallery: str | None = None
    detector: str | None = None
    recognizer: str | None = None
    device: str = "cpu"
    api_key_file: str | None = None  # read by each worker: the key itself never goes into the environment
    max_upload_bytes: int = 20 * 1024 * 1024
    cors_origins: list[str] = field(default_factory=list)
    allowed_hosts: list[str] = field(default_factory=list)  # Host names besides loopback ("*": any)
    max_concurrent: int = 2           # engine calls at once; dlib's detector runs one at a time anyway
    max_queue: int = 16               # requests waiting for one of them; beyond: 503 + Retry-After
    queue_timeout_s: float = 30.0     # the longest a request waits in that queue
    body_timeout_s: float = 30.0      # the longest a client may take to send its body (408 after)
    max_image_bytes: int = 768 * 1024 * 1024  # decoding budget of one image (2 at once: about 1.5 GB at worst)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> "ServeSettings":
        raw = os.environ.get(ENV_VAR)
        if not raw:
            raise RuntimeError(f"{ENV_VAR} is not set (start the server with `facepipe serve`)")
        return cls(**json.loads(raw))
