"""Wire formats: bytes <-> InferRequest / InferResponse."""
