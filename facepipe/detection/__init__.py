"""The trainable face detector: a CenterNet-style MobileNetV2 (CenterFace design) with 5 landmarks.

model.py    MobileNetV2 backbone + FPN neck to stride 4 + heads hm 1 / wh 2 / off 2 / lm 10
targets.py  ground truth -> heatmap and regression maps (and the exact inverse, for tests)
losses.py   penalty-reduced focal loss + masked L1
torch_detector.py  a checkpoint (.pt) run by PyTorch behind the runtime's Detector interface
(decode and the shared detect() of both backends live in facepipe/runtime/detectors/centernet*.py: run-time code)
checkpoint.py rebuilding a model from a checkpoint (kind, architecture name and arguments)
data.py     WIDER / RetinaFace label.txt / dlib imglab XML -> samples, and the training Dataset
augment.py  crops, flips, colour jitter, letterbox
train.py    the training loop; evaluate.py AP / PR curve / NME; export.py ONNX + parity check
pseudo_labels.py  dlib-made training labels for your own photos; cli.py the commands

Importing this package does not import torch.
"""
