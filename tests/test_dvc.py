"""`dvc repro` of the real dvc.yaml on two small sites: everything runs, reruns are skipped, a detect
parameter reruns only detect and what follows it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from small_project import SMALL_SITES, small_params, write_sites

from pipeline.publish.mappage import install_web_assets

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SITES = [s[0] for s in SMALL_SITES]
PER_SITE = ("fetch", "tile", "detect", "flag")
_RAN = re.compile(r"^Running stage '([^']+)'", re.M)


def _dvc(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")  # `python` = this venv
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )


def _repro(project: Path) -> set[str]:
    proc = _dvc(project, "repro")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return set(_RAN.findall(proc.stdout + proc.stderr))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project's pipeline (dvc.yaml, .dvc/config, pipeline/, the frozen stages' outputs and
    deps) with two small sites."""
    root = tmp_path / "proj"
    root.mkdir()
    shutil.copy(REPO / "dvc.yaml", root)
    shutil.copy(REPO / ".dvcignore", root)
    shutil.copytree(REPO / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    # the frozen stages' outputs, in git (evaluate_oscd, evaluate_cases), and their deps outside pipeline/,
    # which DVC checks exist even for a frozen stage (evaluate_cases: the Dabancheng configuration)
    for name in ("oscd_metrics.json", "oscd_f1.png", "dabancheng_metrics.json", "taizhou_metrics.json",
                 "configs/dabancheng.yaml", "configs/dabancheng_sites.geojson",
                 "configs/dabancheng_footprints.geojson"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, root / name)
    (root / "web").mkdir()
    for name in ("package.json", "package-lock.json"):
        shutil.copy(REPO / "web" / name, root / "web" / name)
    install_web_assets(REPO / "web")  # the map page copies MapLibre from web/node_modules
    (root / "web" / "node_modules").symlink_to(REPO / "web" / "node_modules", target_is_directory=True)
    write_sites(root / "configs" / "sites.geojson")
    params = small_params(REPO / "params.yaml", "configs/sites.geojson", SITES)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    init = _dvc(root, "init", "--no-scm", "-q")
    assert init.returncode == 0, init.stderr
    config = (REPO / ".dvc" / "config").read_text()
    (root / ".dvc" / "config").write_text(config + "\n[core]\n    no_scm = True\n" if "[core]" not in config
                                          else config.replace("[core]", "[core]\n    no_scm = True", 1))
    return root


def test_repro_then_up_to_date_then_partial_rerun(project: Path) -> None:
    everything = {f"{stage}@{site}" for stage in PER_SITE for site in SITES} | {"publish", "evaluate"}

    # 1. fresh project (no data/): every stage runs
    assert not (project / "data").exists()
    assert _repro(project) == everything
    metrics = json.loads((project / "metrics.json").read_text())
    assert metrics["per_site"].keys() == set(SITES)
    assert metrics["n_flags"] >= 1 and metrics["control_site_flags"] == 0  # small-control: no construction
    assert (project / "data" / "out" / "flags.geojson").is_file()
    assert (project / "data" / "eval" / "pr_curve.csv").read_text().startswith("threshold,precision,recall")
    assert (project / "dvc.lock").is_file()

    # 2. nothing changed: nothing runs and dvc status is clean
    assert _repro(project) == set()
    status = _dvc(project, "status")
    assert status.returncode == 0 and "up to date" in status.stdout

    # 3. a detect parameter: detect and everything after it rerun, fetch and tile do not
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["detect"]["min_score"] = float(params["detect"]["min_score"]) - 1.0
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = _repro(project)
    assert {f"detect@{s}" for s in SITES} | {f"flag@{s}" for s in SITES} | {"publish", "evaluate"} == ran
    assert not any(name.startswith(("fetch@", "tile@")) for name in ran)
