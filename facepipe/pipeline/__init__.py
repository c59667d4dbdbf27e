"""Detect -> align -> embed over one image (face_pipeline) or many (batch, in one process pool: parallel);
enrolling folders into a gallery (enroll); annotated copies (annotate)."""
