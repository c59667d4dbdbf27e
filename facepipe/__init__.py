"""facepipe: detect -> align -> recognize, with trainable detector and recognizer."""

__version__ = "0.1.0"
