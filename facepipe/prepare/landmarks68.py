"""dlib's 68-point landmarks for a face box any detector found (the Detector protocol gives only 5 points).

The predictor was trained on boxes from dlib's HOG detector, so with the default detector its points are
the very ones the detector reduced to 5; with another detector's boxes they are rougher (prepare then
uses the 5-point mask estimate unless told otherwise). The predictor itself is the runtime's.
"""
from facepipe.runtime.detectors.dlib_detector import Landmarks68  # noqa: F401
