"""Guards around ``dvc repro`` for ``compoundwatch run`` / ``demo``: one run per project, stale DVC locks.

* :func:`project_lock`: an exclusive ``flock`` on ``.dvc/tmp/compoundwatch.lock`` held for the whole run, so a
  second ``compoundwatch run`` on the same project stops at once with one line naming the first one's pid
  instead of racing it (the kernel drops the lock when its holder dies, even on SIGKILL: it never goes stale).
* :func:`clear_stale_dvc_locks`: DVC records the stages it runs in ``.dvc/tmp/rwlock`` (JSON: pid and
  command per locked path). A run killed with SIGKILL leaves its entries behind; when the pid is dead, a
  zombie, or now another program (pid reuse), the entry is removed with one log line, so the rerun completes
  without hand repair.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline._files import write_text_atomic
from pipeline.errors import CompoundwatchError

__all__ = ["ProjectBusyError", "project_lock", "clear_stale_dvc_locks", "pid_alive", "LOCK_NAME"]

LOCK_NAME = "compoundwatch.lock"
_RWLOCK = Path(".dvc") / "tmp" / "rwlock"


class ProjectBusyError(CompoundwatchError, BlockingIOError):
    """Another compoundwatch run holds the project."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a killed child its parent has not reaped yet)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust kill()
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _holds_dvc(pid: int) -> bool:
    """Whether live process ``pid`` can be the DVC run that wrote a lock entry: its command line mentions dvc
    (a pid reused by another program after the kill, common in containers, cannot hold DVC's lock)."""
    if not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return True  # cannot tell (no /proc, another user): assume it does
    return "dvc" in cmdline.lower()


@contextmanager
def project_lock(project: Path) -> Iterator[None]:
    """Hold the project's run lock; :class:`ProjectBusyError` at once when another run holds it."""
    tmp = project / ".dvc" / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise ProjectBusyError(
                f"another compoundwatch run (pid {holder}) is working in {project.resolve()}; wait for it to "
                f"finish (or stop it) and run again"
            ) from err
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def clear_stale_dvc_locks(project: Path) -> str | None:
    """Remove the entries of dead processes from ``.dvc/tmp/rwlock``; return one line saying so (or ``None``).

    Call it while holding :func:`project_lock` (no other compoundwatch run can be using DVC then). An
    unreadable lock file (cut short by the kill) is replaced by an empty one.
    """
    path = project / _RWLOCK
    if not path.is_file():
        return None
    try:
        doc: Any = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        write_text_atomic(path, "{}")
        return f"{path} was unreadable (a run was killed while writing it); replaced it by an empty lock"
    if not isinstance(doc, dict):
        return None
    dead: set[int] = set()
    write = doc.get("write") or {}
    read = doc.get("read") or {}
    kept_write = {}
    for locked, info in write.items():
        pid = int(info.get("pid", 0)) if isinstance(info, dict) else 0
        if _holds_dvc(pid):
            kept_write[locked] = info
        else:
            dead.add(pid)
    kept_read = {}
    for locked, infos in read.items():
        live = [i for i in infos if isinstance(i, dict) and _holds_dvc(int(i.get("pid", 0)))]
        dead.update(int(i.get("pid", 0)) for i in infos if isinstance(i, dict) and i not in live)
        if live:
            kept_read[locked] = live
    if not dead:
        return None
    write_text_atomic(path, json.dumps({"write": kept_write, "read": kept_read}))
    pids = ", ".join(map(str, sorted(dead)))
    return f"cleared stale DVC lock entries of dead process(es) {pids} in {path} (an earlier run was killed)"
