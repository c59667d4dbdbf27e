"""`facepipe serve`: the engine over HTTP (FastAPI + uvicorn), with API keys, upload limits and a web page."""
