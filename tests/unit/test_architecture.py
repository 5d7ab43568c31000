"""The import contract: lengthwise's packages form one-way layers, with no cycle anywhere.

Layers, lowest first (a package may import only from layers below it, or from itself):

    core → workload, engine → predict → gateway, sim → bench → testing → cli

`grimp` reads every import statement, those deferred into functions included, so a cycle
cannot hide behind a lazy import. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from collections.abc import Iterable

import grimp
import pytest

#: Highest layer first, as grimp wants them; packages on one line are independent of each other.
LAYERS = (
    "cli",
    "testing",
    "bench",
    "gateway | sim",
    "predict",
    "workload | engine",
    "core",
)

#: Runtime code never imports the test doubles.
RUNTIME = ("core", "workload", "engine", "predict", "gateway", "sim", "bench")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("lengthwise")


def _layers() -> list[grimp.Layer]:
    return [grimp.Layer(*(name.strip() for name in line.split("|")), independent=True) for line in LAYERS]


def test_packages_import_only_downwards(graph: grimp.ImportGraph) -> None:
    illegal = graph.find_illegal_dependencies_for_layers(layers=_layers(), containers={"lengthwise"})
    found = sorted(f"{d.importer} -> {d.imported}: {[list(r.chain) if hasattr(r, 'chain') else r for r in d.routes]}"
                   for d in illegal)
    assert not found, "imports against the layer order:\n" + "\n".join(found)


def test_every_package_is_in_a_layer(graph: grimp.ImportGraph) -> None:
    placed = {name.strip() for line in LAYERS for name in line.split("|")}
    top = {m.split(".")[1] for m in graph.modules if m.count(".") >= 1}
    assert top <= placed | {"__main__"}, f"packages in no layer: {sorted(top - placed)}"


def test_runtime_code_never_imports_test_doubles(graph: grimp.ImportGraph) -> None:
    users = graph.find_downstream_modules("lengthwise.testing", as_package=True)
    runtime_users = sorted(m for m in users if m.split(".")[1] in RUNTIME)
    assert not runtime_users, f"runtime modules that import lengthwise.testing: {runtime_users}"


def _cycles(nodes: Iterable[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node, or with a self-loop (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(nodes):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_back(graph: grimp.ImportGraph) -> None:
    modules = {m for m in graph.modules if m.startswith("lengthwise.")}
    edges = {m: {i for i in graph.find_modules_directly_imported_by(m) if i in modules} for m in modules}
    cycles = _cycles(modules, edges)
    assert not cycles, f"module cycles: {cycles}"


def test_no_package_cycle(graph: grimp.ImportGraph) -> None:
    """Subpackages too: e.g. predict.learned must not import predict.offline and back."""
    def package(module: str) -> str:
        return module if graph.find_children(module) else module.rpartition(".")[0]

    modules = {m for m in graph.modules if m.startswith("lengthwise.")}
    edges: dict[str, set[str]] = {}
    for m in modules:
        for imported in graph.find_modules_directly_imported_by(m):
            if imported in modules and package(imported) != package(m) \
                    and not package(m).startswith(package(imported) + ".") \
                    and not package(imported).startswith(package(m) + "."):
                edges.setdefault(package(m), set()).add(package(imported))
    cycles = _cycles({package(m) for m in modules}, edges)
    assert not cycles, f"package cycles: {cycles}"


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycles("abc", {"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]
    assert _cycles("ab", {"a": {"b"}}) == []
    assert _cycles("a", {"a": {"a"}}) == [["a"]]
