"""The worker process of `serve --workers N`: `python -P -m serving.supervisor.worker`, with its
spec and configuration in the environment."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys

from serving.config import ServerConfig
from serving.http.server import run_server
from serving.http.siblings import WorkerSpec

SPEC_ENV = "SERVING_WORKER_SPEC"


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the supervisor dies, even of SIGKILL, so no orphan
    keeps serving the port."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def worker_main() -> int:
    """Serve as the worker the environment describes; the exit status."""
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        return 1
    doc = json.loads(os.environ.pop(SPEC_ENV))
    spec = WorkerSpec(**doc["spec"])
    config = ServerConfig(**doc["config"])
    logging.basicConfig(
        level=config.log_level.upper(),
        format=f"%(asctime)s %(levelname)s worker-{spec.index} %(name)s: %(message)s",
    )
    return run_server(config, spec)


if __name__ == "__main__":
    sys.exit(worker_main())
