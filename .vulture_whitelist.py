"""What `vulture serving .vulture_whitelist.py` would call unused, and who uses it.

Each line names an attribute that code outside this package reads (vulture sees only our code).
Dead code is deleted, not listed here.
"""
# ruff: noqa

_: object

_.formatter_class  # serving/cli/: argparse.ArgumentParser reads it to format --help
_.capture_signals  # serving/http/server.py: overrides uvicorn.Server.capture_signals
_.should_exit  # serving/http/server.py: uvicorn.Server's main loop reads it to stop
_.NUMERIC_DATATYPES  # serving/protocol/_reference.py: the compiled twin (ext/_jsondata.pxi) reads it
_.inter_op_num_threads  # serving/runtime/session.py: onnxruntime.SessionOptions, read by ORT
_.execution_mode  # serving/runtime/session.py: onnxruntime.SessionOptions, read by ORT
_.log_severity_level  # serving/runtime/session.py: onnxruntime.SessionOptions, read by ORT
_._later  # serving/payload/log.py: the compiled Tap (ext/_payload.pxi) calls it to schedule its flush
_.shed  # serving/monitoring/counters.py ShadowStats: metrics.py exports it by name (getattr) as serving_shadow_shed
_.dim_param  # serving/packaging/batchdim.py: an ONNX shape dimension (protobuf), read by onnx/ORT
_.feature_types  # serving/packaging/convert.py: xgboost's Booster property, read by the converter
_.data_received  # serving/grpc_api/connection.py: asyncio calls a Protocol's data_received
_.pause_writing  # serving/grpc_api/connection.py: asyncio calls it when the write buffer fills
_.resume_writing  # serving/grpc_api/connection.py: asyncio calls it when the buffer drains
_.header_table  # serving/grpc_api/headers.py: hpack's Decoder reads its table from it
# serving/grpc_api/status.py: StatusCode(exc.grpc) finds these by the number serving/errors.py's
# error classes carry (and their names travel in access logs and traces)
_.DEADLINE_EXCEEDED
_.NOT_FOUND
_.ALREADY_EXISTS
_.PERMISSION_DENIED
_.UNAVAILABLE
_.UNAUTHENTICATED
