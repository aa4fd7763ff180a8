"""The package's layers hold: transports reach the engine through `rnnserve.engine` only, the
engine holds no wire format, nothing imports in a cycle (not even under TYPE_CHECKING), and no
server module outgrows one sitting. Read from the source with `ast`, so a change that breaks
a rule fails here with the file and the import named."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "service" / "rnnserve"
TRANSPORTS = ("http", "grpc", "console")
WIRE_FORMATS = {"orjson", "fastapi", "starlette", "uvicorn", "grpc", "google.protobuf"}
"""What transports speak. (The engine reads model.json files with the standard json module: a
file format of the model repository, not a wire format.)"""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))
            if "generated" not in p.parts}


def imports_of(path: Path) -> set[str]:
    """Every module an import statement in the file names, wherever it stands (under
    TYPE_CHECKING too); `from a import b` counts as a.b when a.b is a module, else as a."""
    names: set[str] = set()
    known = sources()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                names.add(full if full in known else node.module)
    return names


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_transports_import_the_engine_through_its_one_door(transport: str) -> None:
    for name, path in sources().items():
        if not name.startswith(f"rnnserve.{transport}"):
            continue
        below = sorted(i for i in imports_of(path)
                       if i.startswith(("rnnserve.engine.", "rnnserve.state")))
        assert not below, f"{path} imports {below}: import from rnnserve.engine instead"


def test_the_engine_holds_no_wire_format() -> None:
    for name, path in sources().items():
        if not name.startswith("rnnserve.engine"):
            continue
        wire = sorted(i for i in imports_of(path) if i.split(".")[0] in WIRE_FORMATS
                      or i in WIRE_FORMATS or i.startswith("rnnserve.http")
                      or i.startswith("rnnserve.grpc"))
        assert not wire, f"{path} imports {wire}: transports decode, the engine takes arrays"


def test_no_import_cycles() -> None:
    modules = sources()
    graph = {name: {i for i in imports_of(path) if i in modules and i != name}
             for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for nxt in graph[name]:
            if state.get(nxt) == 1:
                cycle = trail[trail.index(nxt):] + [nxt] if nxt in trail else [name, nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_no_server_module_over_400_lines() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if "generated" not in p.parts and (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_nothing_points_outside_the_repository() -> None:
    root = PACKAGE.parents[1]
    texts = [*PACKAGE.rglob("*.py"), *(root / "export").rglob("*.py"),
             *(root / "docs").glob("*.md"), root / "README.md"]
    outside = [str(p.relative_to(root)) for p in texts
               if "../shared" in p.read_text() or "DESIGN.md" in p.read_text()]
    assert not outside, f"docs or docstrings point outside the repository: {outside}"
