"""The baseline the benchmark carries: the obvious server a team would write in an afternoon.

A plain Starlette route that decodes the V2 body with orjson and calls `session.run` inline,
no batching, no validation beyond what numpy does. Usage: python naive_server.py REGISTRY PORT
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "BYTES": object}


def make_app(registry: Path) -> Starlette:
    sessions = {}
    for model_dir in sorted(p for p in registry.iterdir() if p.is_dir()):
        versions = sorted(int(v.name) for v in model_dir.iterdir() if v.name.isdigit())
        if not versions:
            continue
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        path = model_dir / str(versions[-1]) / "model.onnx"
        sessions[model_dir.name] = ort.InferenceSession(
            str(path), opts, providers=["CPUExecutionProvider"]
        )

    async def infer(request: Request) -> Response:
        name = request.path_params["model"]
        sess = sessions[name]
        doc = orjson.loads(await request.body())
        feeds = {
            t["name"]: np.asarray(t["data"], dtype=DTYPES[t["datatype"]]).reshape(t["shape"])
            for t in doc["inputs"]
        }
        results = sess.run(None, feeds)
        outputs = [
            {"name": o.name, "datatype": "FP32", "shape": list(r.shape), "data": r.ravel()}
            for o, r in zip(sess.get_outputs(), results, strict=True)
        ]
        body = {"model_name": name, "model_version": "1", "outputs": outputs}
        return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
                        media_type="application/json")

    return Starlette(routes=[Route("/v2/models/{model}/infer", infer, methods=["POST"])])


if __name__ == "__main__":
    uvicorn.run(make_app(Path(sys.argv[1])), host="127.0.0.1", port=int(sys.argv[2]),
                loop="uvloop", http="httptools", access_log=False, log_level="warning")
