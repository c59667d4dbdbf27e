"""Face recognizers at run time: dlib's ResNet (ONNX), facepipe ONNX exports, and third-party ArcFace/SFace files."""
