"""Import rules of DESIGN.md, checked on the source: no cycle among the imports that run at import time, and
no library module imports the command line."""

from __future__ import annotations

from _imports import imported, modules


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _parents(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_no_import_cycle_at_import_time() -> None:
    # a submodule importing its own package's __init__ is how Python imports it anyway: not a cycle
    graph = {m: imported(m, top_level_only=True) - _parents(m) - {m} for m in modules()}
    assert sum(len(v) for v in graph.values()) > 100  # the walk sees the package's imports
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph) or [])}"


def test_cycle_finder_finds_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_library_module_imports_the_cli() -> None:
    offenders = {m: sorted(i for i in imported(m) if i == "pipeline.cli" or i.startswith("pipeline.cli."))
                 for m in modules() if not m.startswith("pipeline.cli")}
    assert {m: v for m, v in offenders.items() if v} == {}


def test_the_training_code_and_the_oscd_harness_share_one_scores_module() -> None:
    assert "pipeline.evaluate.metrics" in imported("pipeline.train.oscd", top_level_only=True)
    assert "pipeline.evaluate.oscd" not in imported("pipeline.train.oscd")  # the old cycle is gone
