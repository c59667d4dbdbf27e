"""facepipe: detect -> align -> recognize, with trainable detector and recognizer.

    import facepipe
    with facepipe.open(gallery="people.db") as fp:
        fp.enroll_folder("people/")
        for face in fp.identify("photo.jpg"):
            print(face.identity, face.similarity)

Importing facepipe loads no model and changes no global state; `open()` loads models on first use.
"""

__version__ = "0.1.0"

from facepipe.engine import Engine, Verification, open  # noqa: E402,A004
from facepipe.errors import FacepipeError, GalleryError, ImageError, ModelError, ModelMismatchError  # noqa: E402
from facepipe.runtime.image import from_bgr, load_image  # noqa: E402
from facepipe.types import Candidate, Detection, Face  # noqa: E402

__all__ = ["open", "Engine", "Verification", "Face", "Detection", "Candidate", "from_bgr", "load_image",
           "FacepipeError", "ImageError", "ModelError", "GalleryError", "ModelMismatchError"]
