"""The trainable recognizer: backbones, margins, Partial FC, data (folders, RecordIO), verification, training.

Each concept is one short file; models are plain nn.Modules built from explicit arguments
(`backbones.build_backbone(name, **args)`), and the trainer wires them together from one config dataclass.
"""
