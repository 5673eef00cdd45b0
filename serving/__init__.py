"""A fast ONNX model serving runtime: Open Inference Protocol (V2), V1 predict, dynamic batching."""

__version__ = "0.1.0"
