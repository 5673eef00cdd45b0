"""One error tree for the whole server: each error carries its HTTP status, its gRPC status
code (the number `grpc-status` carries) and a metric reason.

No Starlette import here: `serving/http/errors.py` maps these to responses once.
"""

from __future__ import annotations


class ServingError(Exception):
    """Base of every error the server answers on purpose."""

    status = 500
    reason = "server_error"
    grpc = 13  # INTERNAL
    headers: dict[str, str] = {}


class BadRequest(ServingError, ValueError):
    """The request is malformed or does not fit the model's signature."""

    status = 400
    reason = "client_error"
    grpc = 3  # INVALID_ARGUMENT


class Unauthorized(ServingError):
    """An admin endpoint was called without the configured token."""

    status = 401
    reason = "client_error"
    grpc = 16  # UNAUTHENTICATED
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(ServingError):
    """A change the server is not configured to allow (model control without a token)."""

    status = 403
    reason = "client_error"
    grpc = 7  # PERMISSION_DENIED


class NotFound(ServingError, LookupError):
    """No such model, version or route."""

    status = 404
    reason = "client_error"
    grpc = 5  # NOT_FOUND


class Conflict(ServingError):
    """The request repeats one already applied (feedback for an id that already has it)."""

    status = 409
    reason = "client_error"
    grpc = 6  # ALREADY_EXISTS


class MethodNotAllowed(ServingError):
    status = 405
    reason = "client_error"
    grpc = 12  # UNIMPLEMENTED


class PayloadTooLarge(ServingError):
    status = 413
    reason = "client_error"
    grpc = 8  # RESOURCE_EXHAUSTED


class Unavailable(ServingError):
    """The model (or server) exists but cannot serve right now."""

    status = 503
    reason = "unavailable"
    grpc = 14  # UNAVAILABLE


class Overloaded(Unavailable):
    """The queue is full: refused at once, never blocked."""

    reason = "queue_full"
    grpc = 8  # RESOURCE_EXHAUSTED
    headers = {"Retry-After": "1"}


class DeadlineExceeded(Unavailable, TimeoutError):
    """The request's deadline passed (or could not be met) before it ran."""

    reason = "timeout"
    grpc = 4  # DEADLINE_EXCEEDED
    headers = {"Retry-After": "1"}


class Cancelled(Unavailable):
    """The client went away before its request ran."""

    reason = "cancelled"
    grpc = 1  # CANCELLED


class ModelError(ServingError):
    """ONNX Runtime failed on a batch: the model's fault, not the client's."""

    status = 500
    reason = "model_error"
    grpc = 13  # INTERNAL
