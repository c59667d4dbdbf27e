"""The `facepipe serve` verb: check the safety rules, load the models, run uvicorn."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from facepipe.cli.options import DetectorOpt, DeviceOpt, GalleryOpt, RecognizerOpt


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        gallery: Optional[str] = GalleryOpt,
        detector: Optional[str] = DetectorOpt,
        recognizer: Optional[str] = RecognizerOpt,
        device: str = DeviceOpt,
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. Anything but loopback needs "
                                                             "--api-key-file."),
        port: int = typer.Option(8000, "--port", min=0, max=65535),
        workers: int = typer.Option(1, "--workers", min=1, help="Server processes; each loads its own models."),
        api_key_file: Optional[Path] = typer.Option(None, "--api-key-file", help="File holding the bearer key that "
                                                                                 "every /v1 call must send (mode "
                                                                                 "600)."),
        max_upload_mb: float = typer.Option(20, "--max-upload-mb", min=0.001, help="Largest request body accepted (413 "
                                                                                   "above)."),
        cors_origin: Optional[list[str]] = typer.Option(None, "--cors-origin", help="Allow browser calls from this "
                                                                                    "origin (repeatable); none by "
                                                                                    "default."),
        allowed_host: Optional[list[str]] = typer.Option(
            None, "--allowed-host", help="A Host name clients may use besides loopback (repeatable; * for any)."),
        max_concurrent: int = typer.Option(2, "--max-concurrent", min=1, help="Engine calls at once (per worker)."),
        max_queue: int = typer.Option(16, "--max-queue", min=0, help="Requests waiting for a turn; more get 503."),
        body_timeout: float = typer.Option(30, "--body-timeout", min=0.1, help="Seconds a client may take to send "
                                                                               "its request body (408 after)."),
        max_image_mb: float = typer.Option(768, "--max-image-mb", min=1, help="Memory budget for decoding one "
                                                                              "uploaded image (422 above)."),
    ):
        """Serve identify/detect/verify/enroll over HTTP, with a web page at /."""
        import uvicorn

        from facepipe.serve.app import configure_logging, create_app
        from facepipe.serve.auth import check_bind, read_api_key
        from facepipe.serve.settings import ENV_VAR, ServeSettings

        if api_key_file is not None:
            read_api_key(api_key_file)  # refuse a missing, short or world-readable key before loading anything
        check_bind(host, api_key_file is not None)
        settings = ServeSettings(
            gallery=gallery, detector=detector, recognizer=recognizer, device=device,
            api_key_file=str(api_key_file) if api_key_file else None,
            max_upload_bytes=int(max_upload_mb * 2**20), cors_origins=list(cors_origin or []),
            allowed_hosts=[*(allowed_host or []), *([host] if host not in ("0.0.0.0", "::") else [])],
            max_concurrent=max_concurrent, max_queue=max_queue, body_timeout_s=body_timeout,
            max_image_bytes=int(max_image_mb * 2**20))
        configure_logging()
        if workers == 1:
            target, options = create_app(settings), {}  # model or gallery errors stop here, as one line
        else:
            os.environ[ENV_VAR] = settings.to_env()
            # Each worker loads its models before it answers the supervisor's health pings: give it time.
            target = "facepipe.serve.app:app_from_environment"
            options = {"factory": True, "workers": workers, "timeout_worker_healthcheck": 120}
        # uvicorn's own cap on open connections and tasks (503 beyond): far above the engine queue, so that only
        # a flood of connections meets it; keep-alive connections idle for 5 s are closed.
        connections = 4 * (max_concurrent + max_queue) + 64
        uvicorn.run(target, host=host, port=port, log_level="info", server_header=False,
                    limit_concurrency=connections, timeout_keep_alive=5, **options)
