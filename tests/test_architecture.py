"""The package's layering, as docs/ARCHITECTURE.md writes it, checked on the real import graph.

Every `import` in `serving/` counts, at module level or inside a function (a lazy import hides a
cycle; it does not remove it), and so do imports under `if TYPE_CHECKING:` (a type-only import is
still a dependency the reader has to hold in mind).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "serving"

# Lower numbers sit lower. A module may import its own package (same prefix) and anything of a
# strictly lower layer. The longest matching prefix decides a module's layer.
LAYERS: dict[str, int] = {
    "serving": 0,  # serving/__init__.py: the version string only
    "serving.errors": 0,
    "serving.types": 0,
    "serving._kernels": 0,
    "serving.client": 0,  # the HTTP client of the CLI and demos (standard library only)
    "serving.logging_config": 0,  # model.toml's [logging] table, which config.py includes
    "serving.signature": 1,
    "serving.model_config": 1,  # model.toml's settings (ModelConfig)
    "serving.config": 2,  # ServerConfig (reads booleans as model.toml does)
    "serving.tracing": 1,  # the tracer the request path and the batcher call (OTel: export.py)
    "serving.protocol": 2,
    "serving.registry": 2,
    "serving.monitoring.counters": 2,
    "serving.monitoring.drift": 2,
    "serving.monitoring.categorical": 1,  # a leaf (numpy only) that drift.py imports
    "serving.runtime": 3,
    "serving.payload": 3,  # payload log, its writer thread and sinks, feedback, live quality
    "serving.batching": 4,
    "serving.routing": 4,
    "serving.lifecycle": 5,
    "serving.dataplane": 6,
    "serving.packaging": 6,
    "serving.monitoring": 7,  # metrics.py (the Prometheus collector), statistics, multiprocess
    "serving.grpc_api": 8,  # the gRPC service; http (its lifespan) starts it
    "serving.http": 9,
    "serving.supervisor": 10,
    "serving.cli": 11,
    "serving.__main__": 12,
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_key(module: str) -> str:
    """The LAYERS entry that owns `module` (longest dotted prefix)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return key
    raise KeyError(module)


def package_of(module: str) -> str:
    """The unit inside which imports may go either way: a layer key that is a package."""
    return layer_key(module)


def imports_of(path: Path, modules: set[str], this: str | None = None) -> set[str]:
    """The serving modules `path` (module `this`) imports, resolved to modules that exist."""
    tree = ast.parse(path.read_text(), str(path))
    this = this or module_name(path)
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                pkg = this.split(".")
                if path.name != "__init__.py":
                    pkg = pkg[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for name in names:
            if not name.startswith("serving"):
                continue
            # `from serving.x import y`: y may be a module or a name inside serving.x
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != this:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = [p for p in PACKAGE.rglob("*.py")]
    modules = {module_name(p) for p in files} | {"serving._kernels"}
    return {module_name(p): imports_of(p, modules) for p in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of modules, or None (iterative DFS, three colours)."""
    state: dict[str, int] = {}
    for start in sorted(graph):
        if state.get(start):
            continue
        stack: list[tuple[str, list[str]]] = [(start, sorted(graph.get(start, ())))]
        state[start] = 1
        path = [start]
        while stack:
            node, todo = stack[-1]
            if not todo:
                stack.pop()
                path.pop()
                state[node] = 2
                continue
            nxt = todo.pop()
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, sorted(graph.get(nxt, ()))))
    return None


def test_every_module_has_a_layer() -> None:
    missing = [m for m in import_graph() if not any(
        m == k or m.startswith(k + ".") for k in LAYERS if k != "serving"
    ) and m != "serving"]
    assert not missing, f"modules without a layer in LAYERS (and ARCHITECTURE.md): {missing}"


def test_imports_point_down() -> None:
    wrong = []
    for module, deps in import_graph().items():
        own = package_of(module)
        for dep in deps:
            theirs = package_of(dep)
            if theirs == own:
                continue
            if LAYERS[theirs] >= LAYERS[own]:
                wrong.append(
                    f"{module} (layer {LAYERS[own]}) imports {dep} (layer {LAYERS[theirs]})"
                )
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("source, expected", [
    ("import serving.http.app\n", {"serving.http.app"}),
    (
        "def f():\n    from serving.lifecycle import manager\n",
        {"serving.lifecycle", "serving.lifecycle.manager"},
    ),
    ("from serving.errors import BadRequest\n", {"serving.errors"}),
    ("from .errors import BadRequest\n", {"serving.errors"}),
])
def test_the_graph_sees_every_kind_of_import(
    tmp_path: Path, source: str, expected: set[str]
) -> None:
    """The checker itself: lazy, relative and `from x import name` imports are all found."""
    modules = {"serving.http.app", "serving.lifecycle.manager", "serving.lifecycle",
               "serving.errors"}
    fake = tmp_path / "dataplane.py"
    fake.write_text(source)
    assert imports_of(fake, modules, this="serving.dataplane") == expected


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


MAX_LINES = 400


def test_every_module_stays_readable_in_one_sitting() -> None:
    """No Python file of ours reaches 400 lines (protoc's generated messages excepted): past
    that, a module holds more than one idea and should be split along it."""
    long = []
    for folder in ("serving", "tests", "benchmarks", "loadtests"):
        for path in (ROOT / folder).rglob("*.py"):
            if "proto" in path.relative_to(ROOT).parts:
                continue
            lines = len(path.read_text().splitlines())
            if lines >= MAX_LINES:
                long.append(f"{path.relative_to(ROOT)}: {lines}")
    assert not long, f"files of {MAX_LINES} lines or more: {long}"
