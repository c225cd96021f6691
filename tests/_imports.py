"""Static walk of the ``pipeline`` package's imports (shared by the dependency and import-rule tests)."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def modules() -> list[str]:
    """Every module of the package, dotted (packages by their own name)."""
    out = []
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def module_file(module: str) -> Path | None:
    """The source file of a ``pipeline`` module (package: its ``__init__.py``), None when there is none."""
    base = REPO.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported(module: str, *, top_level_only: bool = False) -> set[str]:
    """``pipeline`` modules imported anywhere in ``module`` (skipping ``if TYPE_CHECKING:`` blocks); with
    ``top_level_only``, only the imports that run when the module is imported (none inside functions)."""
    path = module_file(module)
    assert path is not None, module
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if _is_type_checking(node):
            return
        if top_level_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "pipeline")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] == "pipeline":
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}") is not None)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


@cache
def runs(entry: str) -> frozenset[str]:
    """Every ``pipeline`` module (dotted) that running ``entry`` can import, parent packages included."""
    seen: set[str] = set()
    todo = [entry]
    while todo:
        mod = todo.pop()
        if mod in seen or module_file(mod) is None:
            continue
        seen.add(mod)
        parts = mod.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # packages run their __init__ first
        todo += sorted(imported(mod))
    return frozenset(seen)


