"""A fixed batch dimension (an input of shape [1, ...], as hand conversions often leave it) made
symbolic at packaging time, when runs at several batch sizes answer as row-by-row runs do.

The outcome goes in the manifest's `batching` field, which the server may log:
  {"batchable": true}                                              nothing to do
  {"batchable": true, "rewritten": true, "checked_batch_sizes": [..]}   made batchable here
  {"batchable": false, "reason": "..."}                            served one request per run
"""

from __future__ import annotations

from typing import Any

import numpy as np

CHECK_SIZES = (1, 2, 7, 16)


def _first_dim_fixed(value: Any) -> bool:
    dims = value.type.tensor_type.shape.dim
    return bool(dims) and dims[0].HasField("dim_value")


def _free_first_dim(value: Any) -> None:
    dims = value.type.tensor_type.shape.dim
    if dims and dims[0].HasField("dim_value") and dims[0].dim_value == 1:
        dims[0].dim_param = "N"


def _probe_feeds(inputs: list[Any], rows: int) -> dict[str, np.ndarray]:
    """Rows for an input signature when no sample data is given."""
    from serving.protocol.datatypes import NUMPY_DTYPES, from_onnx

    rng = np.random.default_rng(0)
    feeds = {}
    for spec in inputs:
        tail = [d if isinstance(d, int) and d > 0 else 1 for d in (spec.shape or [1])[1:]]
        dtype = NUMPY_DTYPES[from_onnx(spec.type)]
        if dtype.kind in "OUS":
            feeds[spec.name] = np.full((rows, *tail), "a", dtype=object)
        else:
            feeds[spec.name] = rng.normal(size=(rows, *tail)).astype(dtype)
    return feeds


def _run(onnx_bytes: bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return [np.asarray(v) for v in sess.run(None, feeds)]


def _agree(batched: list[np.ndarray], single: list[list[np.ndarray]], n: int) -> bool:
    for k, out in enumerate(batched):
        if len(out) != n:
            return False
        rows = np.concatenate([s[k].reshape(1, *out.shape[1:]) for s in single])
        if out.dtype.kind in "OUS" or rows.dtype.kind in "OUS":
            if not np.array_equal(out.astype(str), rows.astype(str)):
                return False
        elif not np.allclose(out.astype(np.float64), rows.astype(np.float64), atol=1e-5):
            return False
    return True


def make_batchable(
    onnx_bytes: bytes, feeds: dict[str, np.ndarray] | None = None
) -> tuple[bytes, dict[str, Any]]:
    """The model with a symbolic batch dimension where that is sound, and what was done."""
    import onnx
    import onnxruntime as ort

    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    fixed = [v.name for v in (*graph.input, *graph.output) if _first_dim_fixed(v)]
    if not fixed:
        return onnx_bytes, {"batchable": True}
    if any(v.type.tensor_type.shape.dim[0].dim_value != 1 for v in graph.input
           if _first_dim_fixed(v)):
        return onnx_bytes, {"batchable": False, "reason": (
            f"input(s) {', '.join(fixed)} have a fixed first dimension other than 1")}
    for v in (*graph.input, *graph.output):
        _free_first_dim(v)
    del graph.value_info[:]  # intermediate shapes were inferred for batch 1
    candidate = model.SerializeToString()
    if feeds is None:
        sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        feeds = _probe_feeds(list(sess.get_inputs()), max(CHECK_SIZES))
    try:
        for n in CHECK_SIZES:
            part = {k: v[:n] for k, v in feeds.items()}
            if len(next(iter(part.values()))) < n:
                break
            single = [_run(onnx_bytes, {k: v[i : i + 1] for k, v in part.items()})
                      for i in range(n)]
            if not _agree(_run(candidate, part), single, n):
                raise ValueError(f"a batch of {n} rows answers differently from {n} single rows")
    except Exception as exc:
        return onnx_bytes, {"batchable": False, "reason": (
            f"fixed batch dimension 1 on {', '.join(fixed)}; a symbolic batch dimension "
            f"failed its check ({str(exc)[:200]})")}
    return candidate, {"batchable": True, "rewritten": True,
                       "checked_batch_sizes": [n for n in CHECK_SIZES
                                               if n <= len(next(iter(feeds.values())))]}
