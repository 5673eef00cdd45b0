"""A minimal MLServer runtime that serves an ONNX file with ONNX Runtime.

MLServer ships no ONNX runtime, so the side-by-side benchmark (`report.py --mlserver`) serves
the example models' `model.onnx` through this class, never a scikit-learn pickle: both servers
then run the same graph in the same ONNX Runtime, one intra-op and one inter-op thread, and
what differs is the serving stack. It imports only MLServer, ONNX Runtime and numpy, and runs
in the MLServer virtualenv (`benchmarks/setup_mlserver.sh`), not the project's.

A model's `model-settings.json`:

    {"name": "iris", "implementation": "mlserver_onnx.OnnxModel",
     "parameters": {"uri": "/path/to/iris/1/model.onnx", "version": "1"}}

with this folder's parent (`benchmarks/`) on MLServer's PYTHONPATH.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

__all__ = ["OnnxModel"]


class OnnxModel(MLModel):
    """Runs `session.run` on the request's tensors, decoded and encoded by MLServer's codec."""

    async def load(self) -> bool:
        path = await get_model_uri(self._settings, wellknown_filenames=["model.onnx"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self._output_names = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {inp.name: NumpyCodec.decode_input(inp) for inp in payload.inputs}
        results = self._session.run(None, feeds)
        outputs = [NumpyCodec.encode_output(name, np.asarray(r))
                   for name, r in zip(self._output_names, results, strict=True)]
        return InferenceResponse(model_name=self.name, model_version=self.version,
                                 outputs=outputs)
