"""facepipe's released models (installed as facepipe.released): ONNX files made by its own trainers, see
MODEL_CARD.md beside them. Data only; nothing to import."""
