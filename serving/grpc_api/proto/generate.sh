#!/bin/sh
# Regenerate the committed Python modules from the .proto files (needs grpcio-tools; run from
# the repository root). Only message modules are generated: serving/grpc_api/service.py
# registers the service's handlers itself, under the wire name inference.GRPCInferenceService.
set -eu
python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. \
    serving/grpc_api/proto/model_config.proto serving/grpc_api/proto/grpc_service.proto
