"""`inference.GRPCInferenceService`: the Open Inference Protocol's gRPC calls and Triton's
extensions, as thin adapters over the data plane (the same queues, routing, counters and errors
as HTTP). Handlers are registered by hand under the service's wire name (see proto/)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from time import perf_counter
from typing import Any, Protocol

from google.protobuf import json_format

from serving.dataplane import DataPlane, Refused, Served
from serving.errors import BadRequest, ServingError
from serving.grpc_api import codec
from serving.grpc_api.call import Call, Methods
from serving.grpc_api.proto import grpc_service_pb2 as pb
from serving.grpc_api.proto import model_config_pb2 as mc
from serving.grpc_api.status import Aborted, StatusCode
from serving.lifecycle.health import Readiness
from serving.monitoring.access import access_log_line
from serving.monitoring.metrics import ServingMetrics
from serving.tracing import RequestTrace, active
from serving.tracing.semconv import grpc_server, serving_attributes

SERVICE = "inference.GRPCInferenceService"
log = logging.getLogger("serving.grpc")
Code = StatusCode


class Repository(Protocol):
    """Model control as serving.http.admin.ModelControl provides it (guard and fan-out)."""

    def index(self, authorization: str, ready_only: bool) -> list[dict[str, str]]: ...

    async def load(self, name: str, authorization: str) -> None: ...

    async def unload(self, name: str, authorization: str) -> None: ...


def status_code(exc: BaseException) -> StatusCode:
    """The gRPC code of an error (each of the error tree carries its own); others: INTERNAL."""
    return StatusCode(exc.grpc) if isinstance(exc, ServingError) else Code.INTERNAL


def _details(exc: BaseException) -> str:
    """The status details: the error's message (unknown errors are logged, never shown)."""
    if isinstance(exc, ServingError):
        return str(exc)
    log.error("unhandled error", exc_info=exc)
    return f"internal error: {type(exc).__name__}"


def _metadata(context: Call, key: str) -> str:
    for k, v in context.invocation_metadata():
        if k == key:
            return v if isinstance(v, str) else v.decode("latin-1")
    return ""


def _version(v: str) -> str | None:
    return v or None


def _peer(peer: str | None) -> tuple[str, int] | None:
    """grpc's peer string ("ipv4:127.0.0.1:5000", "ipv6:[::1]:5000") as (address, port)."""
    kind, _, rest = (peer or "").partition(":")
    address, _, port = rest.rpartition(":")
    if kind not in ("ipv4", "ipv6") or not port.isdigit():
        return None
    return address.strip("[]"), int(port)


def _end_trace(
    trace: RequestTrace, peer: str | None, version: str, route: str, code: StatusCode,
    info: Served | None, details: str,
) -> None:
    """Export a sampled ModelInfer call's spans (the answer has gone)."""
    name, attrs, failed = grpc_server("ModelInfer", code.name, peer=_peer(peer))
    attrs.update(serving_attributes(
        trace.model, version, route, info.request_id if info is not None else None,
        info.batch_size if info is not None else None,
    ))
    attrs["serving.protocol"] = "grpc"
    trace.end(name, attrs, info, details if failed else None)


class InferenceService:
    """The service's handlers; `methods()` is what the gRPC server serves."""

    def __init__(
        self, dataplane: DataPlane, metrics: ServingMetrics, readiness: Readiness,
        repository: Repository, routing_header: str = "x-routing-key", access_log: bool = False,
    ) -> None:
        self.dp = dataplane
        self.record = metrics.record
        self.metrics = metrics
        self.readiness = readiness
        self.repository = repository
        self.routing_header = routing_header.lower()
        self.access_log = access_log
        self.tracer = active()  # None unless --tracing: then one test per call

    def methods(self) -> Methods:
        """Each call's :path -> (its handler, its request message's parser)."""
        calls: dict[str, tuple[Callable[..., Coroutine[Any, Any, Any]], Any]] = {
            "ServerLive": (self.server_live, pb.ServerLiveRequest),
            "ServerReady": (self.server_ready, pb.ServerReadyRequest),
            "ModelReady": (self.model_ready, pb.ModelReadyRequest),
            "ServerMetadata": (self.server_metadata, pb.ServerMetadataRequest),
            "ModelMetadata": (self.model_metadata, pb.ModelMetadataRequest),
            "ModelInfer": (self.model_infer, pb.ModelInferRequest),
            "ModelConfig": (self.model_config, pb.ModelConfigRequest),
            "ModelStatistics": (self.model_statistics, pb.ModelStatisticsRequest),
            "RepositoryIndex": (self.repository_index, pb.RepositoryIndexRequest),
            "RepositoryModelLoad": (self.repository_load, pb.RepositoryModelLoadRequest),
            "RepositoryModelUnload": (self.repository_unload, pb.RepositoryModelUnloadRequest),
        }
        return {
            f"/{SERVICE}/{name}": (call, request_type.FromString)
            for name, (call, request_type) in calls.items()
        }

    # ---- inference -------------------------------------------------------------------------

    async def model_infer(self, msg: Any, context: Call) -> Any:
        started = perf_counter()
        model = msg.model_name
        served, route, info = msg.model_version, "primary", None
        outcome, code, details = "success", Code.OK, ""
        out = None
        trace = None if self.tracer is None else self.tracer.start_request(
            context.invocation_metadata(), model, msg.model_version or None, "grpc")
        try:
            answer = await self._infer(msg, context, started, trace)
            if isinstance(answer, Refused):  # routed, then refused: counts for that version
                served, route = answer.version, answer.route
                raise answer.error
            out, _, info = answer
            served, route = info.version, info.route
        except asyncio.CancelledError:  # the client went away or its deadline passed
            self.record(model, served, route, "cancelled", perf_counter() - started, None, "grpc")
            raise
        except Exception as exc:
            outcome, code, details = getattr(exc, "reason", "server_error"), status_code(exc), \
                _details(exc)
        elapsed = perf_counter() - started
        self.record(model, served, route, outcome, elapsed, info, "grpc")
        if self.access_log:
            access_log_line(model, served, route, code.name, elapsed, info, "grpc")
        if trace is not None:  # after this call returns, off the response's path
            asyncio.get_running_loop().call_soon(
                _end_trace, trace, context.peer(), served, route, code, info, details)
        if code is not Code.OK:
            raise Aborted(code, details)
        return out

    def _infer(
        self, msg: Any, context: Call, started: float, trace: RequestTrace | None,
    ) -> Awaitable[tuple[Any, int | None, Served] | Refused]:
        """Decode and route a call; the data plane's coroutine to await (a plain function, as
        `DataPlane.infer_v2`: no coroutine frame of its own per call)."""
        version = _version(msg.model_version)
        first = self.dp.manager.get_version(msg.model_name, version)
        assert first.session is not None
        _, _, req = codec.decode_request(msg, first.session.signature)
        remaining = context.time_remaining()
        deadline_us = None if remaining is None else max(0, int(remaining * 1e6))
        key = _metadata(context, self.routing_header)[:256] or None
        return self.dp.infer(
            first, version, req, started, codec.encode_response, context.gone, key,
            deadline_us, trace,
        )

    # ---- health and metadata ---------------------------------------------------------------

    async def server_live(self, msg: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, msg: Any, context: Any) -> Any:
        ok, _why = self.readiness.check()
        return pb.ServerReadyResponse(ready=ok)

    async def model_ready(self, msg: Any, context: Any) -> Any:
        return pb.ModelReadyResponse(ready=self.dp.model_ready(msg.name, _version(msg.version)))

    async def server_metadata(self, msg: Any, context: Any) -> Any:
        return json_format.ParseDict(self.dp.server_metadata(), pb.ServerMetadataResponse())

    async def model_metadata(self, msg: Any, context: Any) -> Any:
        doc = self.dp.model_metadata(msg.name, _version(msg.version))
        return json_format.ParseDict(doc, pb.ModelMetadataResponse(), ignore_unknown_fields=True)

    async def model_config(self, msg: Any, context: Any) -> Any:
        doc = self.dp.model_config(msg.name, _version(msg.version))
        config = json_format.ParseDict(doc, mc.ModelConfig(), ignore_unknown_fields=True)
        return pb.ModelConfigResponse(config=config)

    async def model_statistics(self, msg: Any, context: Any) -> Any:
        doc = self.metrics.triton_stats(msg.name or None, _version(msg.version))
        return json_format.ParseDict(doc, pb.ModelStatisticsResponse(),
                                     ignore_unknown_fields=True)

    # ---- model control (Triton's repository extension) --------------------------------------

    async def repository_index(self, msg: Any, context: Any) -> Any:
        if msg.repository_name:
            raise BadRequest("this server has one repository: leave repository_name empty")
        entries = self.repository.index(_metadata(context, "authorization"), msg.ready)
        return json_format.ParseDict({"models": entries}, pb.RepositoryIndexResponse(),
                                     ignore_unknown_fields=True)

    async def repository_load(self, msg: Any, context: Any) -> Any:
        await self.repository.load(msg.model_name, _metadata(context, "authorization"))
        return pb.RepositoryModelLoadResponse()

    async def repository_unload(self, msg: Any, context: Any) -> Any:
        await self.repository.unload(msg.model_name, _metadata(context, "authorization"))
        return pb.RepositoryModelUnloadResponse()
