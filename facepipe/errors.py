"""Errors a user can act on. The CLI prints them as one line; everything else is a bug."""


class FacepipeError(Exception):
    """A problem with the user's input, files or models, explained in one line."""


class ImageError(FacepipeError):
    """An image that cannot be read safely."""


class ModelError(FacepipeError):
    """A model file that cannot be used."""


class DataError(FacepipeError):
    """Training or evaluation data (annotations, image folders, RecordIO, pair lists) that cannot be used."""


class GalleryError(FacepipeError):
    """A gallery that cannot be opened or written as asked."""


class ModelMismatchError(GalleryError):
    """The gallery was filled by another model than the one asked for."""
