"""Find dlib's model files inside the `face_recognition_models` package without importing it.

Its __init__ imports pkg_resources, which recent setuptools removed; the files are plain data.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from facepipe.errors import ModelError

DETECTOR_CNN = "mmod_human_face_detector.dat"
LANDMARKS_68 = "shape_predictor_68_face_landmarks.dat"
LANDMARKS_5 = "shape_predictor_5_face_landmarks.dat"
RESNET = "dlib_face_recognition_resnet_model_v1.dat"


def dlib_model_path(filename: str) -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the package face_recognition_models is not installed (pip install face_recognition_models)")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / filename
        if path.is_file():
            return path
    raise ModelError(f"{filename} is missing from the face_recognition_models package")
