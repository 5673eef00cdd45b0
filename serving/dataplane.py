"""One request layer shared by every protocol (MLServer's DataPlane seam): find the version,
validate, queue, and shape the answer. `serving/http/` only translates HTTP to these calls."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from time import perf_counter
from typing import Any, NamedTuple

import numpy as np

from serving import __version__
from serving.batching.scheduler import Result
from serving.errors import BadRequest, NotFound, ServingError, Unavailable
from serving.lifecycle.describe import triton_config
from serving.lifecycle.manager import Model, ModelManager
from serving.lifecycle.states import ModelVersion, State
from serving.monitoring.counters import CounterStore
from serving.payload.log import PayloadLog
from serving.protocol import v1, v2
from serving.registry.layout import parse_version
from serving.routing.shadow import watch
from serving.routing.table import PRIMARY
from serving.signature import Signature
from serving.tracing import RequestTrace
from serving.types import InferRequest, InferResponse, RequestedOutput, Tensor

EXTENSIONS = (
    "binary_tensor_data",
    "classification",
    "model_configuration",
    "model_repository",
    "schedule_policy",
    "statistics",
)

class Served(NamedTuple):
    """Who answered a request and where its time went (seconds)."""

    version: str
    route: str
    batch_size: int
    request_id: str | None
    decode_s: float
    queue_s: float
    run_s: float
    encode_s: float


@dataclass(frozen=True, slots=True)
class Refused:
    """A request that was routed, then refused or failed: the error to answer with, and the
    version and route it counts for (returned, not raised, so the caller knows both)."""

    error: ServingError
    version: str
    route: str


class DataPlane:
    """The inference, health and metadata operations behind both V2 and V1."""

    def __init__(
        self, manager: ModelManager, metrics: CounterStore, payload: PayloadLog | None = None
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self.payload = payload if payload is not None else PayloadLog()

    # ---- inference -------------------------------------------------------------------------

    def _route(
        self, model: str, version: str | None, key: str | None, request_id: str | None,
        mv: ModelVersion,
    ) -> tuple[ModelVersion, str, tuple[ModelVersion, ...]]:
        """(version, route, shadows to copy it to) by the model's routing table. `mv` is what
        the request addressed (the primary when unversioned); naming a version bypasses
        routing."""
        if version:
            return mv, PRIMARY, ()
        m = self.manager.models.get(model)
        if m is None:
            return mv, PRIMARY, ()
        table = m.table
        if table.canary is None and not table.shadows:  # the common case: two attribute reads
            return mv, PRIMARY, ()
        chosen, route = table.route(key or request_id)
        if route == PRIMARY:
            return mv, PRIMARY, table.mirror()
        return chosen or mv, route, ()

    def _mirror(
        self, name: str, shadows: tuple[ModelVersion, ...], feeds: dict[str, Any], rows: int,
        primary: asyncio.Future[Any], log_id: str | None,
    ) -> None:
        """Send copies to the shadows once the primary has answered, so the copies run after
        the client's response is on its way (the waiting request's wake-up is queued before the
        shadow's dispatch); shed first when a shadow's queue is busy."""
        loop = primary.get_loop()

        def send(done: asyncio.Future[Any]) -> None:
            if done.cancelled() or done.exception() is not None:
                return
            for smv in shadows:
                stats = self.metrics.shadow_stats(name, smv.version_str)
                sched = smv.scheduler
                if sched is None or sched.queued * 2 >= sched.policy.max_queue_size:
                    stats.shed += 1
                    continue
                try:
                    shadow = sched.submit(feeds, rows)
                except ServingError:
                    stats.shed += 1
                    continue
                watch(stats, done.result(), shadow)
                if log_id is not None:  # logged with the primary's id, to compare offline
                    shadow.add_done_callback(partial(
                        self.payload.capture_shadow, log_id, smv.name, smv.version_str, feeds,
                        rows, smv.config))

        # call_soon: behind the request's own wake-up, which the done-callback would precede
        primary.add_done_callback(lambda done: loop.call_soon(send, done))

    def drift(self, model: str, version: str | None) -> dict[str, Any]:
        """The drift and data-quality report of a version (default: the primary)."""
        mv = self.manager.find_version(model, version)
        if mv is None:
            if version:
                raise _no_version(model, version)
            raise Unavailable(f"model {model!r} has no loaded version")
        doc: dict[str, Any] = {"model": model, "version": mv.version_str}
        if mv.monitor is None:
            doc["available"] = False
            doc["reason"] = (
                "no reference data in the manifest (package it with sample data)"
                if not (mv.manifest and mv.manifest.reference)
                else "drift monitoring is off ([monitoring] drift = false)"
            )
            return doc
        doc["available"] = True
        doc.update(mv.monitor.report())
        return doc

    def _submit(
        self,
        mv: ModelVersion,
        shadows: tuple[ModelVersion, ...],
        inputs: list[Tensor],
        timeout: int | None = None,
        disconnected: Callable[[], bool] | None = None,
        requested: list[RequestedOutput] | None = None,
        trace: RequestTrace | None = None,
        log_id: str | None = None,
    ) -> tuple[Signature, dict[str, np.ndarray], int, float, asyncio.Future[Result]]:
        """What both protocols share once a request is decoded and routed: validate it for the
        chosen version, queue it and mirror it to the shadows. Returns the version's signature
        (taken now: a version retired while the request waits releases its session once its
        queue drains, while the request still has to encode), the inputs by name as the
        request shaped them and their rows (what the payload log keeps), when it was queued
        (perf_counter: the decode phase ends there) and the future to await. A plain function,
        not a coroutine: one frame less per request."""
        scheduler, session = mv.scheduler, mv.session
        assert scheduler is not None and session is not None
        sig = session.signature
        cfg = mv.config
        if cfg.reject_out_of_range and mv.monitor is not None:
            feeds, rows = sig.check_inputs(inputs, True)
            mv.monitor.enforce(feeds)
        else:
            feeds, rows = sig.check_inputs(inputs, cfg.allow_nonfinite)
        if requested is not None:
            for o in requested:
                sig.output(o.name)  # 400 for an output the model does not have
        future = scheduler.submit(feeds, rows, timeout, disconnected, trace)
        queued = perf_counter()
        if shadows:
            self._mirror(mv.name, shadows, feeds, rows, future, log_id)
        return sig, feeds, rows, queued, future

    def infer_v2(
        self, model: str, version: str | None, body: bytes, header_length: int | None,
        disconnected: Callable[[], bool] | None = None, routing_key: str | None = None,
        trace: RequestTrace | None = None,
    ) -> Awaitable[tuple[bytes, int | None, Served] | Refused]:
        """A V2 request's body in; the response body, its binary header length, and what served
        it (version, route, batch, phase timings) out, or Refused once it was routed. Errors
        before routing (a bad request, an unknown model) are raised, here. A plain function
        that returns `infer`'s coroutine: no extra coroutine frame per request. `trace`: a
        sampled request's (serving.tracing), which its batch stamps."""
        t0 = perf_counter()
        first = self.manager.get_version(model, version)
        assert first.session is not None
        req = v2.decode_request(body, header_length, first.session.signature)
        return self.infer(first, version, req, t0, v2.encode_response, disconnected, routing_key,
                          trace=trace)

    async def infer(
        self, first: ModelVersion, version: str | None, req: InferRequest, t0: float,
        encode: Callable[[InferResponse, set[str] | None], tuple[Any, int | None]],
        disconnected: Callable[[], bool] | None = None, routing_key: str | None = None,
        deadline_us: int | None = None, trace: RequestTrace | None = None,
    ) -> tuple[Any, int | None, Served] | Refused:
        """A decoded V2 request, from any protocol, for the version `first` it addressed:
        route, queue, await, shape the response and `encode` it (the protocol's encoder:
        response and binary outputs in, (body, binary header length) out). `t0`: when decoding
        began; `deadline_us`: the transport's own deadline (gRPC), of which and the request's
        `timeout` parameter the tighter applies."""
        requested = req.outputs
        timeout = req.parameters.get("timeout") if req.parameters else None
        if timeout is not None and (type(timeout) is not int or timeout < 0):
            raise BadRequest("parameter timeout must be a non-negative integer (microseconds)")
        if deadline_us is not None:
            timeout = deadline_us if timeout is None else min(timeout, deadline_us)

        mv, route, shadows = self._route(first.name, version, routing_key, req.id, first)
        log_id = self.payload.decide(mv.config, req.id, routing_key)
        try:
            sig, feeds, rows, queued, future = self._submit(
                mv, shadows, req.inputs, timeout, disconnected, requested, trace, log_id
            )
            outs, batch_size, queue_s, run_s = await future
        except ServingError as exc:
            return Refused(exc, mv.version_str, route)  # counts for the version routed to
        t2 = perf_counter()
        decode_s = queued - t0
        tensors: list[Tensor] = []
        binary: set[str] | None = None
        if requested is None:
            for spec in sig.outputs:
                arr = outs[spec.name]
                tensors.append(Tensor(spec.name, spec.datatype, arr.shape, arr))
            if req.binary_outputs:
                binary = set(sig.output_names)
        else:
            for o in requested:
                arr = outs[o.name]
                if o.classification:
                    labels = mv.manifest.labels if mv.manifest else ()
                    data, shape = v2.classify(arr, o.classification, labels, o.name)
                    tensors.append(Tensor(o.name, "BYTES", shape, data))
                else:
                    tensors.append(Tensor(o.name, sig.output(o.name).datatype, arr.shape, arr))
                if o.binary or (o.binary is None and req.binary_outputs):
                    if binary is None:
                        binary = set()
                    binary.add(o.name)
        response = InferResponse(
            mv.name, mv.version_str, tensors, req.id, {"batch_size": batch_size}
        )
        out, header_length = encode(response, binary)
        t3 = perf_counter()
        if log_id is not None:
            self.payload.capture(log_id, mv.name, mv.version_str, route, feeds, outs,
                                 t3 - t0, mv.config, rows)
        return out, header_length, Served(
            mv.version_str, route, batch_size, log_id or req.id, decode_s, queue_s, run_s,
            t3 - t2,
        )

    def predict_v1(
        self, model: str, version: str | None, body: bytes, routing_key: str | None = None,
        trace: RequestTrace | None = None,
    ) -> Awaitable[tuple[bytes, int | None, Served] | Refused]:
        """A V1 request: as infer_v2 (JSON only: no binary header length), through the same
        `infer` with V1's encoder (rows or columns, as the request came)."""
        t0 = perf_counter()
        first = self.manager.get_version(model, version)
        assert first.session is not None
        req, row_form = v1.decode_request(body, first.session.signature)

        def encode(response: InferResponse, _binary: set[str] | None) -> tuple[bytes, None]:
            return v1.encode_response(response.outputs, row_form), None

        return self.infer(first, version, req, t0, encode, routing_key=routing_key, trace=trace)

    # ---- health and metadata ---------------------------------------------------------------

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "serving", "version": __version__, "extensions": list(EXTENSIONS)}

    def model_ready(self, model: str, version: str | None) -> bool:
        mv = self.manager.find_version(model, version)
        if mv is None:
            if version:
                raise _no_version(model, version)
            return False
        return mv.state is State.READY

    def model_metadata(self, model: str, version: str | None) -> dict[str, Any]:
        m = self.manager.get_model(model)
        mv = self._described(m, model, version)
        doc: dict[str, Any] = {
            "name": model,
            "versions": [str(v) for v in sorted(m.versions)],
            "platform": "onnxruntime_onnx",
        }
        if mv is not None:
            doc["state"] = mv.state.value
            if mv.reason:
                doc["reason"] = mv.reason
            if mv.manifest is not None:
                doc["inputs"] = [t.to_json() for t in mv.manifest.inputs]
                doc["outputs"] = [t.to_json() for t in mv.manifest.outputs]
        elif m.reason:
            doc["state"], doc["reason"] = State.FAILED.value, m.reason
        return doc

    def model_config(self, model: str, version: str | None) -> dict[str, Any]:
        """Triton's model configuration extension, enough for perf_analyzer and tritonclient."""
        m = self.manager.get_model(model)
        mv = self._described(m, model, version)
        if mv is None or mv.manifest is None or mv.session is None:
            raise Unavailable(f"model {model!r} has no loaded version to describe")
        return triton_config(model, m.config, mv)

    def v1_status(self, model: str, version: str | None) -> dict[str, Any]:
        m = self.manager.get_model(model)
        versions = [m.versions[v] for v in sorted(m.versions, reverse=True)]
        if version:
            versions = [v for v in versions if v.version_str == version]
            if not versions:
                raise _no_version(model, version)
        states = {State.READY: "AVAILABLE", State.LOADING: "LOADING", State.FAILED: "END",
                  State.DRAINING: "UNLOADING", State.UNLOADED: "END"}
        return {
            "model_version_status": [
                {
                    "version": v.version_str,
                    "state": states[v.state],
                    "status": {
                        "error_code": "OK" if v.state is not State.FAILED else "UNKNOWN",
                        "error_message": v.reason,
                    },
                }
                for v in versions
            ]
        }

    def _described(self, m: Model, model: str, version: str | None) -> ModelVersion | None:
        if version:
            mv = m.by_str.get(version)
            if mv is None:
                raise _no_version(model, version)
            return mv
        return self.manager.find_version(model, None)


def _no_version(model: str, version: str) -> ServingError:
    parse_version(version)
    return NotFound(f"model {model!r} has no version {version}")

