"""Open-set identification: person scores under the model's metric (matching) and the threshold that says
"unknown", calibrated from the gallery's own impostor scores (calibration)."""
