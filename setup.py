"""Only what pyproject.toml cannot say: the top-level assets/ folder installs as the package facepipe.assets, and
models/ (facepipe's released ONNX models and their card) as facepipe.released."""
from setuptools import find_packages, setup

setup(packages=find_packages(include=["facepipe*"]) + ["facepipe.assets", "facepipe.released"],
      package_dir={"facepipe.assets": "assets", "facepipe.released": "models"})
