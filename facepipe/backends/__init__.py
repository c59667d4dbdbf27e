"""Detector and recognizer implementations behind one small interface (see base.py)."""
