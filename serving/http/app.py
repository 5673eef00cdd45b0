"""create_app(): the Starlette app for health, metadata and admin, behind a fast inference path."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from serving.config import ServerConfig
from serving.dataplane import DataPlane
from serving.errors import ServingError
from serving.http.admin import AdminGuard, ModelControl, admin_routes
from serving.http.errors import http_exception_handler, json_response, serving_error_handler
from serving.http.feedback import feedback_routes
from serving.http.infer import InferEndpoint, match_infer
from serving.http.rollout import rollout_routes
from serving.http.siblings import WorkerSpec
from serving.lifecycle.background import supervise
from serving.lifecycle.health import Readiness
from serving.lifecycle.leadership import Leadership
from serving.lifecycle.manager import ModelManager
from serving.lifecycle.prometheus import FleetMetrics
from serving.lifecycle.rollout import RolloutController
from serving.lifecycle.sources import InProcessSource
from serving.monitoring.metrics import ServingMetrics
from serving.monitoring.multiprocess import MultiProcessView, write_snapshot
from serving.payload.desk import FeedbackDesk
from serving.payload.log import PayloadLog
from serving.registry.lease import open_lease_store

log = logging.getLogger("serving.http")
SNAPSHOT_INTERVAL_S = 1.0
GRPC_GRACE_S = 30.0  # at shutdown: how long in-flight gRPC calls may take
# The API's description, kept beside the routes (tests/http/test_openapi.py holds them together)
OPENAPI = importlib.resources.files("serving.http").joinpath("openapi.json").read_bytes()


def _mv(request: Request) -> tuple[str, str | None]:
    p = request.path_params
    return p["model"], p.get("version")


def _health_routes(dp: DataPlane, readiness: Readiness) -> list[Route]:
    async def live(request: Request) -> Response:
        return json_response({"live": True})

    async def ready(request: Request) -> Response:
        ok, why = readiness.check()
        return json_response({"ready": True} if ok else {"ready": False, "reason": why},
                             200 if ok else 503)

    async def model_ready(request: Request) -> Response:
        ok = dp.model_ready(*_mv(request))
        name, version = _mv(request)
        doc: dict[str, Any] = {"name": name, "ready": ok}
        if version:
            doc["version"] = version
        return json_response(doc, 200 if ok else 503)

    get = ["GET"]
    return [
        Route("/v2/health/live", live, methods=get),
        Route("/v2/health/ready", ready, methods=get),
        Route("/v2/models/{model}/ready", model_ready, methods=get),
        Route("/v2/models/{model}/versions/{version}/ready", model_ready, methods=get),
    ]


def _metadata_routes(dp: DataPlane) -> list[Route]:
    async def server_metadata(request: Request) -> Response:
        return json_response(dp.server_metadata())

    async def model_metadata(request: Request) -> Response:
        return json_response(dp.model_metadata(*_mv(request)))

    async def model_config(request: Request) -> Response:
        return json_response(dp.model_config(*_mv(request)))

    async def v1_status(request: Request) -> Response:
        return json_response(dp.v1_status(*_mv(request)))

    async def openapi(request: Request) -> Response:
        return Response(OPENAPI, media_type="application/json")

    get = ["GET"]
    return [
        Route("/v2", server_metadata, methods=get),
        Route("/v2/openapi.json", openapi, methods=get),
        Route("/v2/models/{model}", model_metadata, methods=get),
        Route("/v2/models/{model}/versions/{version}", model_metadata, methods=get),
        Route("/v2/models/{model}/config", model_config, methods=get),
        Route("/v2/models/{model}/versions/{version}/config", model_config, methods=get),
        Route("/v1/models/{model}", v1_status, methods=get),
        Route("/v1/models/{model}/versions/{version}", v1_status, methods=get),
    ]


def _routes(dp: DataPlane, metrics: ServingMetrics, readiness: Readiness) -> list[Route]:
    async def stats(request: Request) -> Response:
        name, version = _mv(request) if "model" in request.path_params else (None, None)
        return json_response(metrics.triton_stats(name, version))

    async def drift(request: Request) -> Response:
        return json_response(dp.drift(*_mv(request)))

    get = ["GET"]
    # The statistics and drift routes come before /v2/models/{model}, which would match them
    return [
        Route("/v2/models/stats", stats, methods=get),
        Route("/v2/models/{model}/drift", drift, methods=get),
        Route("/v2/models/{model}/versions/{version}/drift", drift, methods=get),
        Route("/v2/models/{model}/stats", stats, methods=get),
        Route("/v2/models/{model}/versions/{version}/stats", stats, methods=get),
        *_health_routes(dp, readiness),
        *_metadata_routes(dp),
    ]


def _labels(manager: ModelManager, model: str, version: str) -> tuple[str, ...]:
    """A version's class names (feedback may name a class instead of its index)."""
    m = manager.models.get(model)
    mv = m.by_str.get(version) if m is not None else None
    return mv.manifest.labels if mv is not None and mv.manifest is not None else ()


class ServingApp:
    """The ASGI app: inference routes go straight to InferEndpoint, the rest to Starlette."""

    def __init__(
        self, config: ServerConfig, manager: ModelManager, worker: WorkerSpec | None = None
    ) -> None:
        self.config = config
        self.manager = manager
        self.worker = worker
        self.payload = PayloadLog(config.payload_log, config.payload_sample,
                                  config.payload_buffer,
                                  buffer_bytes=config.payload_buffer_bytes)
        self.metrics = ServingMetrics(manager, payload=self.payload)
        self.readiness = Readiness(
            manager, config.strict_readiness, config.saturation_fraction,
            config.saturation_seconds,
        )
        # With worker processes, worker 0 runs rollouts; the others send rollout requests there.
        leads = worker is None or worker.index == 0
        # ...and, among replicas, the one holding the lease in the registry
        self.leadership = (
            Leadership(open_lease_store(config.registry), config.advertise_url,
                       config.controller_lease)
            if config.rollout_controller and leads else None
        )
        self.controller = (
            RolloutController(manager, InProcessSource(self.metrics), leadership=self.leadership,
                              fleet=FleetMetrics(config.rollout_metrics, config.prometheus_url))
            if self.leadership is not None
            else None
        )
        self._scrape_registry = self.metrics.registry
        if worker is not None:
            self._scrape_registry = MultiProcessView(
                self.metrics.registry, worker.metrics_dir, worker.index
            ).registry()
        self.dataplane = DataPlane(manager, self.metrics, self.payload)
        self.guard = AdminGuard(config.admin_token, config.admin_open)
        self._infer = InferEndpoint(
            self.dataplane, config.max_body_bytes, self.metrics, config.routing_header,
            config.access_log,
        )
        self.control = ModelControl(manager, self.guard, worker)
        self._loading: asyncio.Task[None] | None = None
        self.starlette = Starlette(
            routes=[
                *_routes(self.dataplane, self.metrics, self.readiness),
                *admin_routes(self.control),
                *rollout_routes(
                    self.controller, self.guard,
                    worker if worker is not None and not leads else None, self.leadership,
                ),
                *feedback_routes(FeedbackDesk(self.payload, lambda m, v: _labels(manager, m, v),
                                              lambda m: manager.get_model(m).config), self.guard),
                Route("/metrics", self._metrics, methods=["GET"]),
            ],
            exception_handlers={
                ServingError: serving_error_handler,
                HTTPException: http_exception_handler,
            },
            lifespan=self._lifespan,
        )

    async def _metrics(self, request: Request) -> Response:
        return Response(generate_latest(self._scrape_registry), media_type=CONTENT_TYPE_LATEST)

    async def _snapshots(self, worker: WorkerSpec) -> None:
        """Write this worker's metrics where its siblings' scrapes read them (a last time when
        cancelled at shutdown); a failed write ends the run, for `supervise` to log and restart."""
        try:
            while True:
                write_snapshot(self.metrics.registry, worker.metrics_dir, worker.index)
                await asyncio.sleep(SNAPSHOT_INTERVAL_S)
        except asyncio.CancelledError:
            try:
                write_snapshot(self.metrics.registry, worker.metrics_dir, worker.index)
            except OSError as exc:
                log.error("could not write the last metrics snapshot: %s", exc)
            raise

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # Load in the background: /v2/health/live answers while models load, ready says when.
        # Every background task is supervised: a failure is logged and the task started again
        # (with backoff), never left to die unseen while readiness waits on it.
        def start(name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
            return asyncio.create_task(supervise(name, run), name=name)

        self._loading = start("load models", self.manager.load_all)
        self.payload.start()
        tasks = [start("readiness watch", self.readiness.watch)]
        if self.config.poll > 0:
            poll = self.config.poll
            tasks.append(start("registry poll", lambda: self.manager.poll(poll)))
        if self.controller is not None and self.leadership is not None:
            with contextlib.suppress(Exception):  # else the lease task logs it, and retries
                await asyncio.to_thread(self.leadership.renew_now)  # before the first request
            tasks += [start("controller lease", self.leadership.run),
                      start("rollout controller", self.controller.run)]
        if self.worker is not None:
            worker = self.worker
            tasks.append(start("metrics snapshots", lambda: self._snapshots(worker)))
        grpc_server = await self._start_grpc() if self.config.grpc_port else None
        try:
            yield
        finally:
            if grpc_server is not None:  # lets in-flight calls finish, refuses new ones
                await grpc_server.stop(GRPC_GRACE_S)
            everything = [t for t in (self._loading, *tasks) if t is not None]
            for task in everything:
                task.cancel()
            # let them finish (the metrics task writes its last snapshot) before releasing
            await asyncio.gather(*everything, return_exceptions=True)
            if self.leadership is not None:  # the next holder need not wait the lease out
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.leadership.release)
            await self.manager.shutdown()
            self.payload.flush()  # the captures queued by the last pass, on this loop
            await asyncio.to_thread(self.payload.stop)  # the last records, open segments

    async def _start_grpc(self) -> Any:
        """The gRPC service on this loop, over the same data plane, counters and guard (None
        without the `grpc` extra, which is optional: hpack, protobuf)."""
        cfg = self.config
        try:
            from serving.grpc_api.server import start_grpc
            from serving.grpc_api.service import InferenceService
        except ImportError as exc:
            log.warning("gRPC is off: %s (pip install 'serving[grpc]'; --grpc-port 0 turns "
                        "gRPC off without this warning)", exc)
            return None
        service = InferenceService(
            self.dataplane, self.metrics, self.readiness, self.control, cfg.routing_header,
            cfg.access_log,
        )
        return await start_grpc(service, cfg.host, cfg.grpc_port, cfg.grpc_max_message_bytes,
                                shared=self.worker is not None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route = match_infer(scope["path"])
            if route is not None:
                await self._infer(scope, receive, send, route)
                return
        await self.starlette(scope, receive, send)


def create_app(
    config: ServerConfig, manager: ModelManager | None = None, worker: WorkerSpec | None = None
) -> ServingApp:
    """The server's ASGI application over the registry in `config`."""
    if manager is None:
        manager = ModelManager(config.registry, config.intra_op_threads, config.registry_cache)
    return ServingApp(config, manager, worker)
