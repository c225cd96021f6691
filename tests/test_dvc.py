"""`dvc repro` of the real dvc.yaml on two small sites: everything runs, reruns are skipped, a detect
parameter reruns only detect and what follows it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from small_project import SMALL_SITES, make_dvc_project

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
    return make_dvc_project(tmp_path / "proj")


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
