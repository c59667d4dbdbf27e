"""Shared by tests/test_models_*.py: the real YuNet file, found through FACEPIPE_MODELS (default ../shared/models)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
YUNET_FILE = "face_detection_yunet_2023mar.onnx"


def models_root() -> Path:
    return Path(os.environ.get("FACEPIPE_MODELS", REPO.parent / "shared" / "models"))


@pytest.fixture(scope="session")
def yunet_file() -> Path:
    path = models_root() / YUNET_FILE
    if not path.is_file():
        pytest.skip(f"YuNet file not found at {path} (set FACEPIPE_MODELS to the folder holding {YUNET_FILE})")
    return path
