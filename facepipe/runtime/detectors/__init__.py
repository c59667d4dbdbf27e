"""Face detectors at run time: dlib HOG, facepipe's CenterNet (ONNX), and the third-party YuNet and SCRFD layouts."""
