"""Writing models for other runtimes: ONNX export, operator fusion and calibrated static int8
quantisation (``onnx``); OpenVINO IR with NNCF static int8 and a recorded inference precision
(``openvino``); every backend exported, measured on this machine and the fastest faithful one recorded
(``auto``); and the fidelity rule every export is held to, with the texts it reads (``check``).

This package sits above the encoder and nothing in the library imports it back: loading an export
is ``Encoder.load(path, backend="onnx" | "openvino" | "auto")`` (``e5kit.encoder.onnx_backend``,
``e5kit.encoder.openvino_backend``).
"""
