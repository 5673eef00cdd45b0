"""One ONNX Runtime session per model version: providers, threads, warm-up, signature."""
