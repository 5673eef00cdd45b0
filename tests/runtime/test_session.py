"""The runtime session over real ONNX Runtime sessions: the one adapter around ORT's private run
binding, and string tensors batched through the scheduler."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import onnxruntime as ort

from serving.batching.policy import BatchPolicy
from serving.batching.scheduler import Scheduler
from serving.runtime.session import Session, fast_run
from serving.signature import Signature
from serving.types import TensorSpec
from tests.e2e.models import identity_model


def _ort(datatypes: list[str]) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(identity_model(datatypes), opts,
                                providers=["CPUExecutionProvider"])


def test_the_private_run_binding_is_still_there() -> None:
    """Fails when an onnxruntime upgrade removes or changes `InferenceSession._sess.run`: the
    server still works (the public run takes over) but every batch pays the Python wrapper."""
    sess = _ort(["FP32"])
    run, private = fast_run(sess)
    assert private, (f"onnxruntime {ort.__version__}: InferenceSession._sess.run is gone; "
                     "serving falls back to the public run (see runtime/session.py fast_run)")
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    got = run(["y_FP32"], {"x_FP32": x}, None)
    np.testing.assert_array_equal(got[0], sess.run(["y_FP32"], {"x_FP32": x})[0])


class _PublicOnly:
    """An InferenceSession as a future onnxruntime might have it: no `_sess`."""

    def __init__(self, sess: ort.InferenceSession) -> None:
        self._inner = sess

    def run(self, names: list[str], feeds: dict[str, np.ndarray], options: object = None
            ) -> list[np.ndarray]:
        return self._inner.run(names, feeds, options)  # type: ignore[no-any-return]


def test_without_the_private_binding_the_public_run_serves() -> None:
    run, private = fast_run(_PublicOnly(_ort(["INT64"])))  # type: ignore[arg-type]
    assert not private
    x = np.array([[1, 2]], np.int64)
    np.testing.assert_array_equal(run(["y_INT64"], {"x_INT64": x}, None)[0], x)


def test_string_requests_batched_together_each_get_their_own_strings() -> None:
    spec_in, spec_out = TensorSpec("x_BYTES", "BYTES", (-1, 2)), TensorSpec("y_BYTES", "BYTES",
                                                                            (-1, 2))
    session = Session(_ort(["BYTES"]), Signature([spec_in], [spec_out]))
    sched = Scheduler(session, BatchPolicy(max_batch_size=16, max_request_rows=16), "s:1")
    texts = [[["a", "héllo"]], [["", "x y z"], ["b", "c"]], [["d", "e"]]]

    async def scenario() -> list[Any]:
        futures = [sched.submit({"x_BYTES": np.array(t, dtype=object)}, len(t)) for t in texts]
        return list(await asyncio.gather(*futures))

    results = asyncio.run(scenario())
    sched.close()
    for t, (outputs, batch_rows, *_) in zip(texts, results, strict=True):
        assert batch_rows == 4  # all three shared one batch
        assert outputs["y_BYTES"].tolist() == t
