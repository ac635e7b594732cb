"""Writing models for other runtimes: ONNX export, operator fusion and calibrated static int8
quantisation (``onnx``), and the texts its fidelity check and calibration read (``check``).

This package sits above the encoder and nothing in the library imports it back: loading an export
is ``Encoder.load(path, backend="onnx")`` (``e5kit.encoder.onnx_backend``).
"""
