"""``compoundwatch run``'s guards (pipeline.cli._project) and its ``--params`` install, without running DVC."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from small_project import SMALL_SITES, small_params, write_sites
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.cli import demo as demo_cli
from pipeline.cli._project import ProjectBusyError, clear_stale_dvc_locks, pid_alive, project_lock

REPO = Path(__file__).resolve().parents[1]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid no longer exists
    return proc.pid


def test_pid_alive() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(_dead_pid()) and not pid_alive(0) and not pid_alive(-5)


@pytest.fixture
def live_dvc() -> Iterator[int]:
    """A live process whose command line mentions dvc, as a running ``dvc repro`` would (ended after the test)."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()", "dvc", "repro"],
                            stdin=subprocess.PIPE)
    yield proc.pid
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=30)


def test_stale_entries_are_cleared_live_ones_kept(tmp_path: Path, live_dvc: int) -> None:
    dead, live, reused = _dead_pid(), live_dvc, os.getpid()  # reused: alive, but not a dvc process
    rwlock = tmp_path / ".dvc" / "tmp" / "rwlock"
    rwlock.parent.mkdir(parents=True)
    doc = {"write": {"data/detect/a.zarr": {"pid": dead, "cmd": "dvc repro"},
                     "data/detect/b.zarr": {"pid": live, "cmd": "dvc repro"},
                     "data/detect/c.zarr": {"pid": reused, "cmd": "dvc repro"}},
           "read": {"data/tiles/a.zarr": [{"pid": dead, "cmd": "dvc repro"}, {"pid": live, "cmd": "dvc repro"}],
                    "params.yaml": [{"pid": dead, "cmd": "dvc repro"}]}}
    rwlock.write_text(json.dumps(doc))
    note = clear_stale_dvc_locks(tmp_path)
    assert note is not None and f"dead process(es) {', '.join(map(str, sorted({dead, reused})))} " in note
    assert json.loads(rwlock.read_text()) == {
        "write": {"data/detect/b.zarr": {"pid": live, "cmd": "dvc repro"}},
        "read": {"data/tiles/a.zarr": [{"pid": live, "cmd": "dvc repro"}]}}
    assert clear_stale_dvc_locks(tmp_path) is None  # nothing left to clear: no note
    rwlock.write_text('{"write": {"data/x": {"pid"')  # cut short by a kill
    assert "unreadable" in (clear_stale_dvc_locks(tmp_path) or "")
    assert json.loads(rwlock.read_text()) == {}
    assert clear_stale_dvc_locks(tmp_path / "elsewhere") is None


def test_project_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    with project_lock(tmp_path):
        with pytest.raises(ProjectBusyError, match=r"another compoundwatch run \(pid \d+\)"), project_lock(tmp_path):
            pass
    with project_lock(tmp_path):  # released: a new run gets it
        pass


def test_run_params_installs_atomically_and_keeps_a_backup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proj = tmp_path / "proj"
    (proj / ".dvc").mkdir(parents=True)
    (proj / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    write_sites(proj / "configs" / "sites.geojson")
    params = small_params(REPO / "params.yaml", "configs/sites.geojson", [s[0] for s in SMALL_SITES])
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    old = (proj / "params.yaml").read_bytes()
    params["detect"]["min_score"] = 5.5
    new = tmp_path / "elsewhere" / "tuned.yaml"
    new.parent.mkdir()
    new.write_text("# tuned\n" + yaml.safe_dump(params, sort_keys=False))
    ran: list[Path] = []
    monkeypatch.setattr(demo_cli, "repro", lambda project, **kw: ran.append(project) or [])
    monkeypatch.setattr(demo_cli, "_report", lambda project: None)
    res = CliRunner().invoke(app, ["run", "-C", str(proj), "--params", str(new)])
    assert res.exit_code == 0, res.output
    assert ran == [proj]
    assert (proj / "params.yaml").read_bytes() == new.read_bytes()  # installed as given, comments and all
    assert (proj / "params.yaml.bak").read_bytes() == old
    assert new.read_bytes().startswith(b"# tuned\n")  # the user's file is only read
    assert sorted(p.name for p in proj.iterdir()) == [".dvc", "configs", "dvc.yaml", "params.yaml",
                                                      "params.yaml.bak"]


class _FakeDvc:
    """Stands in for the ``dvc repro`` child: prints ``lines``, exits with ``rc``."""

    def __init__(self, lines: list[str], rc: int) -> None:
        self.stdout = iter(line + "\n" for line in lines)
        self._rc = rc

    def wait(self) -> int:
        return self._rc

    def __enter__(self) -> _FakeDvc:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize(("lines", "expected"), [
    (["ERROR: Unable to acquire lock. Most likely another DVC process is running or was terminated abruptly."],
     r"^another DVC process is working in .*proj \(DVC: Unable to acquire lock\); wait for it"),
    (["Running stage 'fetch@a':", "> python -m pipeline.stages.fetch a data/raw/a.zarr data/truth/a.geojson",
      "error: python -m pipeline.stages.fetch: no credentials for Sentinel Hub: set SH_CLIENT_ID",
      "ERROR: failed to reproduce 'fetch@a': failed to run: python -m pipeline.stages.fetch …, exited with 1"],
     r"^stage fetch@a failed: no credentials for Sentinel Hub: set SH_CLIENT_ID$"),
])
def test_repro_failures_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str], lines: list[str], expected: str) -> None:

    proj = tmp_path / "proj"
    (proj / ".dvc").mkdir(parents=True)
    (proj / "dvc.yaml").write_text("stages: {}\n")
    fake = types.SimpleNamespace(PIPE=subprocess.PIPE, STDOUT=subprocess.STDOUT,
                                 Popen=lambda *a, **k: _FakeDvc(lines, 1))
    monkeypatch.setattr(demo_cli, "subprocess", fake)
    with pytest.raises(demo_cli.CompoundwatchError) as err:
        demo_cli.repro(proj)
    assert re.search(expected, str(err.value)), str(err.value)
    assert capsys.readouterr().err == ""  # DVC's own lines are not dumped on stderr
