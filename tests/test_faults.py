"""Faults and determinism, end to end through ``compoundwatch run`` (real processes, real ``dvc repro``).

One test, two projects of one small site:

* a clean, uninterrupted run;
* the same project started afresh and killed with SIGKILL (the whole process group: compoundwatch, dvc and
  the stage process, as a crash or the OOM killer would) as DVC starts fetch, then detect, then publish; after
  each kill the next ``compoundwatch run`` clears DVC's stale lock (one ``note:`` line) and goes on; the last
  one completes. Its published layers are byte-identical to the clean run's and ``dvc status`` is clean.
* Determinism: the two projects ran in different folders and processes (the interrupted one partly several
  times, its detect stage on 2 dask worker processes, the clean one's on local threads), yet every published
  file and per-site layer is byte-identical.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from small_project import SMALL_SITES, make_dvc_project

pytestmark = pytest.mark.slow

SITE = SMALL_SITES[0]
EXE = str(Path(sys.executable).parent / "compoundwatch")
#: Published layers compared byte for byte (everything under data/out that the run writes).
LAYERS = ("flags.geojson", "flags.fgb", "flags.parquet", f"sites/{SITE[0]}.geojson", "site_summary.geojson",
          "site_summary.fgb", "site_summary.parquet", "compoundwatch.pmtiles", "index.html", "stac/catalog.json")
#: Temporary files of pipeline._files.atomic_path (".<stem>.<random><suffix>"), which no finished run may leave.
_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.(geojson|fgb|parquet|png|json|csv|pmtiles|html|npy|tif)$")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("PYTHONPATH", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, "run", *args], cwd=project, env=_env(), capture_output=True, text=True,
                          timeout=400)


def _run_and_kill(project: Path, stage_prefix: str) -> tuple[int, list[str]]:
    """Start ``compoundwatch run --verbose``; SIGKILL its process group as soon as DVC starts a stage whose
    name starts with ``stage_prefix``. Returns the exit status (negative: the signal) and the lines seen."""
    proc = subprocess.Popen([EXE, "run", "--verbose"], cwd=project, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line.rstrip("\n"))
        if f"Running stage '{stage_prefix}" in line:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    else:
        proc.wait()
        raise AssertionError(f"stage {stage_prefix}… never started:\n" + "\n".join(seen))
    proc.stdout.close()
    return proc.wait(timeout=60), seen  # reaped: the pid is dead, not a zombie


def _dvc_status(project: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=project, env=_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _clean_run(root: Path) -> Path:
    """A clean, uninterrupted run."""
    project = make_dvc_project(root, (SITE,))
    proc = _run(project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return project


def _interrupted_run(root: Path) -> tuple[Path, list[str]]:
    """The same project killed during fetch, detect and publish, each time run again; the notes it printed.
    Its detect stage runs on a local dask cluster of 2 worker processes (the clean run: local threads)."""
    import yaml

    project = make_dvc_project(root, (SITE,))
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["dask"] = {**(params.get("dask") or {}), "n_workers": 2}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    notes = []
    for stage in ("fetch@", "detect@", "publish"):
        status, lines = _run_and_kill(project, stage)
        assert status == -signal.SIGKILL
        notes += [line for line in lines if line.startswith("note:")]
        rwlock = project / ".dvc" / "tmp" / "rwlock"
        stale = json.loads(rwlock.read_text()) if rwlock.is_file() else {}
        assert stale.get("write") or stale.get("read"), "the killed run left no DVC lock entry to clear"
    final = _run(project)
    assert final.returncode == 0, final.stdout + final.stderr
    notes += [line for line in final.stderr.splitlines() if line.startswith("note:")]
    return project, notes


def _layers(root: Path) -> dict[Path, bytes]:
    """Every published file (chips included) and the per-site flag and truth layers."""
    return {p.relative_to(root): p.read_bytes() for folder in ("out", "flags", "truth")
            for p in (root / "data" / folder).rglob("*") if p.is_file()}


def test_kill_rerun_and_determinism(tmp_path: Path) -> None:
    """One test (both projects are needed by both checks; as two tests, pytest -n 2 would build them twice)."""
    reference = _clean_run(tmp_path / "clean" / "proj")
    project, notes = _interrupted_run(tmp_path / "killed" / "proj")

    # 1. kill and rerun: each run after a kill (the 2nd, the 3rd and the last) cleared the dead run's DVC lock
    #    entries and went on; the last completed with the clean run's layers, dvc status clean, nothing left over
    assert len(notes) == 3, notes
    assert all("cleared stale DVC lock entries of dead process(es)" in n for n in notes), notes
    for name in LAYERS:
        ours, theirs = project / "data" / "out" / name, reference / "data" / "out" / name
        assert ours.read_bytes() == theirs.read_bytes(), name
    assert json.loads((project / "metrics.json").read_text()) == json.loads((reference / "metrics.json").read_text())
    assert "up to date" in _dvc_status(project)
    leftovers = [p for p in (project / "data").rglob("*") if p.name.endswith((".tmp", ".old")) or _TEMP.match(p.name)]
    assert not leftovers, leftovers

    # 2. determinism: two runs in different folders and processes, detect on local threads vs 2 dask worker
    #    processes, wrote byte-identical files, every one
    ours, theirs = _layers(project), _layers(reference)
    assert ours.keys() == theirs.keys()
    assert [str(k) for k in ours if ours[k] != theirs[k]] == []
    assert len(ours) >= len(LAYERS)


def test_a_failing_stage_is_one_line_and_the_rerun_goes_on(tmp_path: Path) -> None:
    """A stage that stops on an expected error (here: no Sentinel Hub credentials) ends ``compoundwatch run``
    with that stage's own line, not DVC's output, and leaves no lock behind: the next run starts cleanly."""
    import yaml

    project = make_dvc_project(tmp_path / "proj", (SITE,))
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["fetch"]["source"] = "sentinelhub"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {k: v for k, v in _env().items() if not k.startswith("SH_")}
    env["SH_PROFILE"] = "cw-no-such-profile"
    env["XDG_CONFIG_HOME"] = str(tmp_path / "no-config")
    for _ in range(2):
        proc = subprocess.run([EXE, "run"], cwd=project, env=env, capture_output=True, text=True, timeout=300)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith(f"error: stage fetch@{SITE[0]} failed: no credentials for Sentinel Hub"), lines
    assert not (project / "data" / "raw").exists()
