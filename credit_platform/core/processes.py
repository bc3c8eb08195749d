"""Processes of this machine, through psutil.

Whether one lives, who it is (pid and start time, so a reused pid is told apart), what
runs below it, and stopping a tree of them.

The prediction service's workers run in sessions of their own (BentoML starts them so), so
a process group does not reach them: their parent link does, which psutil follows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import psutil


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped by its parent, does not)."""
    if pid <= 0:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # alive, owned by someone else
        return True


def process_identity(pid: int) -> str:
    """ "<pid>-<start time in 1/100 s since the epoch>": unique even when a pid is reused (a
    container restart gives a server the same pid, and a stale state must not be adopted);
    "<pid>-0" when no such process runs."""
    try:
        started = psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return f"{pid}-0"
    return f"{pid}-{round(started * 100)}"


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, its children's children included."""
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _processes(pids: Iterable[int]) -> list[psutil.Process]:
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            found.append(psutil.Process(pid))
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL to `pid` and everything below it at once (no drain, as on power loss)."""
    for process in _processes([pid, *descendants(pid)]):
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def terminate_tree(pid: int, identity: str | None = None, wait_seconds: float = 30.0) -> bool:
    """SIGTERM to `pid` (a server that stops its own workers), waiting up to `wait_seconds`
    for it and what ran below it to exit; SIGKILL to whatever is left then. With `identity`
    (from `process_identity`), a process that is not that one (its pid reused) is left
    alone. Returns whether the process was running."""
    if not pid_alive(pid) or (identity is not None and process_identity(pid) != identity):
        return False
    tree = _processes([pid, *descendants(pid)])
    if not tree or tree[0].pid != pid:
        return False
    try:
        tree[0].terminate()
    except psutil.NoSuchProcess:
        return False
    _, alive = psutil.wait_procs(tree, timeout=wait_seconds)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=5)
    return True
