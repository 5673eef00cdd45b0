"""Microbenchmarks: each compiled kernel against its Python twin and against what it replaces.

    python benchmarks/bench_kernels.py [--repeat 9]      (pin it: taskset -c 1 python ...)

(a) A V2 request carrying a 64x64 FP32 tensor, its `data` nested or flat: orjson.loads + a
    numpy.asarray(float32) of the list, against split_tensor_data + orjson.loads(skeleton) +
    decode_json_numbers (the results are checked bit for bit before timing).
(b) 64 one-row requests gathered into a batch and the batch's outputs scattered back: the
    compiled row kernels against the numpy twins (and against a bare numpy loop, no checks).

Each time is the best of --repeat runs of an auto-sized loop (timeit), in microseconds per call.
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Idle BLAS worker threads spin on the pinned core and steal time from the loop being timed.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serving import _kernels
from serving.batching import _reference as rows_ref
from serving.protocol import _reference as json_ref

BATCH = 64  # one-row requests per batch
FEATURES = 64  # float32 inputs per row
OUTPUTS = 10  # float32 outputs per row


def best_us(fn: Callable[[], Any], repeat: int) -> float:
    """Best per-call time of `fn` in microseconds."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()  # enough calls for ~0.2 s per run
    number = max(1, number // 4)
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e6


def v2_body(data: Any) -> bytes:
    return orjson.dumps(
        {
            "id": "42",
            "inputs": [{"name": "input", "shape": [64, 64], "datatype": "FP32", "data": data}],
            "outputs": [{"name": "output"}],
        }
    )


def json_cases(rng: np.random.Generator) -> list[tuple[str, Callable[[], Any], Callable[[], Any]]]:
    """(a): (name, reference, compiled) for the JSON kernels and the request path they serve."""
    tensor = rng.standard_normal((64, 64)).astype(np.float32)
    cases = []
    for layout, data in [("nested", tensor.tolist()), ("flat", tensor.ravel().tolist())]:
        body = v2_body(data)

        def baseline(body: bytes = body) -> np.ndarray:
            doc = orjson.loads(body)
            return np.asarray(doc["inputs"][0]["data"], dtype=np.float32)

        def compiled(body: bytes = body) -> np.ndarray:
            split = _kernels.split_tensor_data(body)
            assert split is not None
            skeleton, [(_, start, end)] = split
            orjson.loads(skeleton)  # the rest of the request still goes through orjson
            return _kernels.decode_json_numbers(body, start, end, "FP32")[0]

        expected = baseline()
        got = compiled()
        assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes(), layout
        assert json_ref.split_tensor_data(body) == _kernels.split_tensor_data(body)
        split = _kernels.split_tensor_data(body)
        assert split is not None
        _, [(_, start, end)] = split
        ref_arr, ref_shape = json_ref.decode_json_numbers(body, start, end, "FP32")
        fast_arr, fast_shape = _kernels.decode_json_numbers(body, start, end, "FP32")
        assert ref_shape == fast_shape and ref_arr.tobytes() == fast_arr.tobytes()

        kb = len(body) / 1024
        cases += [
            (
                f"split_tensor_data, {layout} ({kb:.0f} KiB)",
                lambda body=body: json_ref.split_tensor_data(body),
                lambda body=body: _kernels.split_tensor_data(body),
            ),
            (
                f"decode_json_numbers 64x64 FP32, {layout}",
                lambda body=body, s=start, e=end: json_ref.decode_json_numbers(body, s, e, "FP32"),
                lambda body=body, s=start, e=end: _kernels.decode_json_numbers(body, s, e, "FP32"),
            ),
            (f"(a) V2 body -> FP32 64x64, {layout} [orjson+asarray]", baseline, compiled),
        ]
    return cases


def row_cases(rng: np.random.Generator) -> list[tuple[str, Callable[[], Any], Callable[[], Any]]]:
    """(b): (name, reference, compiled) for the batch gather and scatter."""
    requests = [rng.standard_normal((1, FEATURES)).astype(np.float32) for _ in range(BATCH)]
    parts = [r.reshape(len(r), -1).view(np.uint8) for r in requests]
    batch = np.empty((BATCH, FEATURES), np.float32)
    out = batch.view(np.uint8)
    outputs = rng.standard_normal((BATCH, OUTPUTS)).astype(np.float32)
    counts = [1] * BATCH

    def bare_gather() -> int:
        row = 0
        for part in parts:
            out[row : row + len(part)] = part
            row += len(part)
        return row

    def bare_scatter() -> list[np.ndarray]:
        pieces, row = [], 0
        for n in counts:
            pieces.append(outputs[row : row + n])
            row += n
        return pieces

    assert _kernels.gather_rows(parts, out) == BATCH
    assert np.array_equal(batch, np.concatenate(requests))
    fast, slow = _kernels.scatter_rows(outputs, counts), rows_ref.scatter_rows(outputs, counts)
    assert all(np.array_equal(a, b) and a.shape == b.shape for a, b in zip(fast, slow, strict=True))

    def round_trip(impl: Any) -> list[np.ndarray]:
        impl.gather_rows(parts, out)
        return impl.scatter_rows(outputs, counts)

    return [
        (
            "gather_rows 64 x 1 row",
            lambda: rows_ref.gather_rows(parts, out),
            lambda: _kernels.gather_rows(parts, out),
        ),
        (
            "gather_rows 64 x 1 row [bare numpy loop]",
            bare_gather,
            lambda: _kernels.gather_rows(parts, out),
        ),
        (
            "scatter_rows 64 x 1 row",
            lambda: rows_ref.scatter_rows(outputs, counts),
            lambda: _kernels.scatter_rows(outputs, counts),
        ),
        (
            "scatter_rows 64 x 1 row [bare numpy loop]",
            bare_scatter,
            lambda: _kernels.scatter_rows(outputs, counts),
        ),
        (
            "(b) gather 64 requests + scatter outputs",
            lambda: round_trip(rows_ref),
            lambda: round_trip(_kernels),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=9, help="timed runs per case (best wins)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cases = json_cases(rng) + row_cases(rng)
    width = max(len(name) for name, _, _ in cases)
    print(f"{'case':<{width}}  {'reference us':>12}  {'compiled us':>11}  {'speedup':>8}")
    print("-" * (width + 38))
    for name, reference, compiled in cases:
        ref_us = best_us(reference, args.repeat)
        fast_us = best_us(compiled, args.repeat)
        print(f"{name:<{width}}  {ref_us:>12.1f}  {fast_us:>11.1f}  {ref_us / fast_us:>7.1f}x")
    print(
        "\n[...] rows compare against the code the kernel replaces instead of its twin; "
        "speedup = reference time / compiled time."
    )


if __name__ == "__main__":
    main()
