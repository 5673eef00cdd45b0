#!/usr/bin/env bash
# Creates the MLServer virtualenv that `benchmarks/report.py --mlserver` compares against.
#
#   bash benchmarks/setup_mlserver.sh [VENV_DIR]     # default: .venv-mlserver (repo root)
#
# MLServer 1.7.1 crashes with uvloop newer than 0.21.0, hence the pin. httptools gives its
# uvicorn the C HTTP parser (MLServer depends on plain uvicorn, which otherwise falls back to
# the pure-Python h11). MLServer has no ONNX runtime of its own: benchmarks/mlserver_onnx/ is a
# small custom runtime on onnxruntime.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-mlserver}"
python3 -m venv "$VENV"
"$VENV/bin/pip" install mlserver==1.7.1 uvloop==0.21.0 httptools onnxruntime numpy
"$VENV/bin/python" -c "import httptools, mlserver, onnxruntime, uvloop; \
print('mlserver', mlserver.__version__, 'onnxruntime', onnxruntime.__version__, \
'uvloop', uvloop.__version__, 'httptools', httptools.__version__)"
