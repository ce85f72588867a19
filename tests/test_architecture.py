"""The package's layers, checked from its source: no import cycles, and no layer reaching
into one above it or into the client's internals.

data -> models -> defences -> scenarios (the client) -> labels / attacks (the server) ->
metrics -> runs / report / tasks. The attacker's side may import the Observation and the
public recipe (scenarios.base, scenarios.recipe), never the client (scenarios.fedsgd/fedavg)
nor the defences it applies: the attacker knows a defence from its public parameters only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "deepleak"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports(path: Path, known: set[str]) -> set[str]:
    """Every deepleak module ``path`` imports, at module level or inside a function
    (a function-level import closes a cycle just as well, only later)."""
    found: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # `from a import b` imports a.b when b is a module, else a name of a.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in known)
    found.discard(module_name(path))
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return result


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


# (layer, layers it must not import): a layer may import only layers below it.
FORBIDDEN = {
    "deepleak.data": ("deepleak.models", "deepleak.defences", "deepleak.scenarios", "deepleak.labels", "deepleak.attacks",
                      "deepleak.metrics", "deepleak.tasks", "deepleak.report"),
    "deepleak.models": ("deepleak.defences", "deepleak.scenarios", "deepleak.labels", "deepleak.attacks",
                        "deepleak.metrics", "deepleak.tasks", "deepleak.report"),
    "deepleak.defences": ("deepleak.scenarios", "deepleak.labels", "deepleak.attacks", "deepleak.metrics",
                          "deepleak.tasks", "deepleak.report"),
    "deepleak.scenarios": ("deepleak.labels", "deepleak.attacks", "deepleak.metrics", "deepleak.tasks",
                           "deepleak.report"),
    # The server's side: the Observation and the public recipe only, never the client.
    "deepleak.labels": ("deepleak.attacks", "deepleak.metrics", "deepleak.tasks", "deepleak.report",
                        "deepleak.scenarios.fedsgd", "deepleak.scenarios.fedavg", "deepleak.defences"),
    "deepleak.attacks": ("deepleak.metrics", "deepleak.tasks", "deepleak.report",
                         "deepleak.scenarios.fedsgd", "deepleak.scenarios.fedavg", "deepleak.defences",
                         "deepleak.scenarios.defended", "deepleak.scenarios.secure_aggregation"),
    "deepleak.metrics": ("deepleak.scenarios", "deepleak.labels", "deepleak.attacks", "deepleak.tasks",
                         "deepleak.report"),
    "deepleak.report": ("deepleak.scenarios", "deepleak.labels", "deepleak.attacks", "deepleak.tasks"),
}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_only_downwards(layer):
    offending = sorted(
        f"{source} imports {target}"
        for source, targets in graph().items() if _within(source, layer)
        for target in targets if any(_within(target, banned) for banned in FORBIDDEN[layer])
    )
    assert offending == []
