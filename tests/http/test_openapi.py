"""The OpenAPI document (serving/http/openapi.json) and the app's routes describe the same API."""

from __future__ import annotations

import json
import re
from pathlib import Path

from starlette.routing import Route

from serving.config import ServerConfig
from serving.http.app import OPENAPI, create_app
from serving.http.infer import match_infer

DOC = json.loads(OPENAPI)
METHODS = {"get", "post", "put", "patch", "delete"}


def documented() -> set[tuple[str, str]]:
    return {(m.upper(), path) for path, ops in DOC["paths"].items() for m in ops if m in METHODS}


def app_routes(tmp_path: Path) -> set[tuple[str, str]]:
    """(method, path template) of every Starlette route, HEAD (implied by GET) left out."""
    app = create_app(ServerConfig(registry=str(tmp_path)))
    out = set()
    for route in app.starlette.routes:
        assert isinstance(route, Route), route
        out |= {(m, route.path) for m in route.methods or () if m != "HEAD"}
    return out


def _example(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def test_every_route_is_documented_and_every_documented_path_exists(tmp_path: Path) -> None:
    routes = app_routes(tmp_path)
    doc = documented()
    # The inference routes bypass Starlette (a raw ASGI path for speed): match_infer owns them.
    infer = {(m, p) for m, p in doc if match_infer(_example(p)) is not None}
    assert {m for m, _ in infer} == {"POST"}
    assert {p for _, p in infer} == {
        "/v2/models/{model}/infer", "/v2/models/{model}/versions/{version}/infer",
        "/v1/models/{model}:predict", "/v1/models/{model}/versions/{version}:predict",
    }
    assert routes - doc == set(), "routes missing from serving/http/openapi.json"
    assert doc - infer - routes == set(), "documented operations the app does not have"


def test_the_document_is_valid_openapi_3() -> None:
    import schemathesis

    schema = schemathesis.openapi.from_dict(DOC)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(documented())
    ids = [op.definition.raw["operationId"] for op in operations]
    assert len(set(ids)) == len(ids)
    for op in operations:  # every error answer is documented as {"error": ...}
        for status, response in op.definition.raw["responses"].items():
            if status.startswith("4"):
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/Error", (op.label, status)
