"""facepipe: detect -> align -> recognize, with trainable detector and recognizer.

    import facepipe
    with facepipe.open(gallery="people.db") as fp:
        fp.enroll_folder("people/")
        for face in fp.identify("photo.jpg"):
            print(face.identity, face.similarity)

Importing facepipe loads no model and changes no global state; the names below are imported on first use,
so `import facepipe.train...` on a training machine does not pull in the runtime's image or model libraries.
"""

__version__ = "0.1.0"

_PUBLIC = {
    "open": "facepipe.engine", "Engine": "facepipe.engine", "Verification": "facepipe.engine",
    "Face": "facepipe.types", "Detection": "facepipe.types", "Candidate": "facepipe.types",
    "from_bgr": "facepipe.runtime.image", "load_image": "facepipe.runtime.image",
    "FacepipeError": "facepipe.errors", "ImageError": "facepipe.errors", "ModelError": "facepipe.errors",
    "GalleryError": "facepipe.errors", "ModelMismatchError": "facepipe.errors",
}
__all__ = list(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'facepipe' has no attribute {name!r}")
