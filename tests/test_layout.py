"""The layout: environments, the wire (server, client), Gymnasium, agents, learning; no import circles.

Every import counts, at module level, inside functions and under ``TYPE_CHECKING``: a circle
hidden in a function is still two modules that cannot be read (or moved) one without the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "stratagem"
# What each part may import from stratagem (besides itself); dependencies point one way.
ALLOWED = {
    "envs": {"sandbox"},
    "sandbox": set(),
    "server": {"envs", "sandbox", "viz"},  # viz: the /web page's frames come from the viewer's render path
    "client": {"envs", "server"},  # server.protocol only: the messages both ends speak
    "gym": {"envs", "client"},
    "viz": {"envs"},
    "agents": {"envs", "client", "kernels", "rollout", "sandbox", "viz"},
    "kernels": set(),
    "rollout": {"kernels"},  # sampling: below agents (policy.sample is it), above the kernels it runs
    "rl": {"agents", "envs", "kernels", "rollout", "sandbox", "viz"},
    "dashboard": {"agents", "rl", "viz", "server", "sandbox"},  # a run directory, read; only the CLI imports it
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets.add(node.module)
                targets |= {f"{node.module}.{alias.name}" for alias in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    graph = imports()
    # A package's __init__ re-exporting its own modules is not a circle between modules.
    for name in graph:
        graph[name] = {t for t in graph[name] if not (name.startswith(t + ".") and t in graph)}
    assert cycles(graph) == []


def test_dependencies_point_one_way():
    wrong = []
    for name, targets in imports().items():
        part = name.split(".")[1] if "." in name else ""
        if part not in ALLOWED:
            continue
        for target in targets:
            other = target.split(".")[1] if "." in target else ""
            if other and other != part and other not in ALLOWED[part]:
                wrong.append(f"{name} -> {target}")
    assert wrong == []


def test_the_client_needs_only_the_protocol_of_the_server():
    graph = imports()
    used = {t for name, targets in graph.items() if name.startswith("stratagem.client") for t in targets}
    assert {t for t in used if t.startswith("stratagem.server")} <= {"stratagem.server.protocol"}
