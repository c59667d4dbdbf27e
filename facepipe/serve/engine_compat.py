"""TEMPORARY: the engine if it has landed, the shim otherwise. Delete with _engine_shim.py."""
try:
    from facepipe import open as open_engine  # noqa: F401
    from facepipe.errors import ModelMismatchError  # noqa: F401
except ImportError:
    from facepipe.serve._engine_shim import ModelMismatchError, open_engine  # noqa: F401
