"""sklearn -> ONNX -> checked for parity -> published as an immutable registry version."""
