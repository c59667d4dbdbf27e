"""Only what pyproject.toml cannot say: the top-level assets/ folder installs as the package facepipe.assets."""
from setuptools import find_packages, setup

setup(packages=find_packages(include=["facepipe*"]) + ["facepipe.assets"], package_dir={"facepipe.assets": "assets"})
