"""dvc.yaml's ``deps`` name every module a stage runs (DESIGN.md: code changes rerun what they affect).

For each stage the modules it runs are found statically: the imports of its entry module, followed through
every ``pipeline`` module they reach (imports inside functions included, ``if TYPE_CHECKING:`` blocks
excluded), plus each imported module's package ``__init__.py``. A module is covered when ``deps`` lists
its file or a folder above it. CLI-run stages are entered at the library module the command calls (the CLI
module itself must be listed too); the CLI plumbing around it (consoles, other commands) shapes no output.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from _imports import REPO, imported, module_file, runs

#: ``compoundwatch`` commands of frozen stages → (the CLI module, the library modules the command runs).
CLI_ENTRIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "compoundwatch evaluate oscd": ("pipeline.cli.evaluate", ("pipeline.evaluate.oscd",)),
    "compoundwatch evaluate dabancheng": ("pipeline.cli.evaluate", ("pipeline.evaluate.cases",)),
    "compoundwatch evaluate taizhou": ("pipeline.cli.evaluate", ("pipeline.evaluate.cases",)),
}


def _stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _entries(cmd: str) -> tuple[list[str], list[str]]:
    """(modules whose imports are followed, CLI modules listed as files only) of one command line."""
    m = re.match(r"python -m (pipeline[\w.]*)", cmd)
    if m:
        return [m.group(1)], []
    for prefix, (cli, library) in CLI_ENTRIES.items():
        if cmd.startswith(prefix):
            return list(library), [cli]
    raise AssertionError(f"dvc.yaml command {cmd!r} has no known entry module; add it to CLI_ENTRIES")


def _covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(REPO)
    return any(rel == Path(d) or Path(d) in rel.parents for d in deps)


@pytest.mark.parametrize("name", sorted(_stages()))
def test_stage_deps_name_every_module_the_stageruns(name: str) -> None:
    stage = _stages()[name]
    body = stage.get("do", stage)
    cmds = body["cmd"] if isinstance(body["cmd"], list) else [body["cmd"]]
    deps = [str(d).split("#")[0].strip() for d in body.get("deps", []) if not str(d).startswith("${")]
    modules: set[str] = set()
    listed: list[str] = []
    for cmd in cmds:
        entries, cli = _entries(cmd)
        listed += cli
        for entry in entries:
            assert module_file(entry) is not None, f"{name}: {entry} does not exist"
            modules |= runs(entry)
    assert len(modules) >= 3, modules
    missing = sorted(
        str(p.relative_to(REPO)) for p in {module_file(m) for m in modules | set(listed)} if p and not _covered(p, deps)
    )
    assert not missing, f"dvc.yaml stage {name} runs these modules but its deps miss them: {missing}"


def test_deps_point_at_files_that_exist() -> None:
    for name, stage in _stages().items():
        body = stage.get("do", stage)
        items = stage.get("foreach") if isinstance(stage.get("foreach"), list) else [None]
        for dep in body.get("deps", []):
            for item in items:  # a literal foreach list: every item's dep must exist
                path = str(dep) if item is None else str(dep).replace("${item}", str(item))
                if path.startswith("pipeline/"):
                    assert (REPO / path).exists(), f"dvc.yaml stage {name}: dep {path} does not exist"


def test_the_walk_follows_imports_inside_functions() -> None:
    # scan_pair_files' reads import the compiled upsampling kernel inside a function
    assert "pipeline.detect._kernels" in runs("pipeline.scan.pair_files")
    # the flag stage runs the compiled blob tracer of the flag package
    assert "pipeline.flag._blobs" in runs("pipeline.stages.flag")
    assert "pipeline.sites" not in imported("pipeline.fetch")  # a TYPE_CHECKING import only
