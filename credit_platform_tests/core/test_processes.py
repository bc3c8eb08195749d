"""Process handling through psutil (core/processes.py) and the local service's pid record
(core/local_service.py), on real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from credit_platform.core import local_service, settings
from credit_platform.core.processes import (
    descendants,
    kill_tree,
    pid_alive,
    process_identity,
    terminate_tree,
)
from credit_platform.core.service_process import ephemeral_port_low, free_port

# A parent that starts a child in a session of its own (as BentoML starts its workers),
# prints the child's pid, and waits; with "stubborn" both ignore SIGTERM.
TREE = r"""
import os, signal, subprocess, sys, time
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
code = "import signal, sys, time\n"
if sys.argv[1] == "stubborn":
    code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
code += "print('ready', flush=True)\ntime.sleep(600)\n"
child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                         stdout=subprocess.PIPE, text=True)
child.stdout.readline()
print(child.pid, flush=True)
time.sleep(600)
"""


def _tree(kind: str) -> tuple[subprocess.Popen, int]:
    parent = subprocess.Popen([sys.executable, "-c", TREE, kind], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    return parent, child


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_pid_alive_tells_running_exited_and_zombie_apart() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(0) and not pid_alive(-1)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    # Not reaped yet: a zombie, dead for every purpose here.
    while pid_alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not pid_alive(child.pid)
    child.wait()
    assert not pid_alive(child.pid)


def test_identity_is_stable_and_tells_a_gone_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        first = process_identity(child.pid)
        assert first == process_identity(child.pid)
        assert first.startswith(f"{child.pid}-") and first != f"{child.pid}-0"
        assert first != process_identity(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert process_identity(child.pid) == f"{child.pid}-0"


def test_descendants_reach_a_child_in_a_session_of_its_own() -> None:
    parent, child = _tree("plain")
    try:
        assert os.getsid(child) != os.getsid(parent.pid)
        assert descendants(parent.pid) == [child]
    finally:
        kill_tree(parent.pid)
        parent.wait(10)
    assert _gone(child)


def test_terminate_tree_kills_what_ignores_sigterm_after_the_wait() -> None:
    parent, child = _tree("stubborn")
    started = time.monotonic()
    assert terminate_tree(parent.pid, wait_seconds=1.0)
    assert time.monotonic() - started >= 1.0  # it waited for SIGTERM first
    # It ignored SIGTERM, so only the SIGKILL ended it (psutil reaped it: the exit status
    # is psutil's, not Popen's, to read).
    assert _gone(parent.pid) and _gone(child)
    assert not terminate_tree(parent.pid)  # gone: nothing to stop


def test_terminate_tree_leaves_a_process_whose_identity_differs() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert not terminate_tree(child.pid, identity=f"{child.pid}-1")
        assert child.poll() is None
        assert terminate_tree(child.pid, identity=process_identity(child.pid), wait_seconds=5)
        assert _gone(child.pid)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.parametrize("reused", [False, True])
def test_the_pid_record_never_signals_a_reused_pid(reused: bool) -> None:
    """A pid file names a process only if that process was started before the file was
    written; a pid that another process took later (the file older than the process) is
    neither `started_here` nor stopped."""
    port = 1  # never listened on: only the record is read
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        path: Path = local_service.pid_file(port)
        path.write_text(str(child.pid))
        if reused:
            written = time.time() - 60  # written before this process existed
            os.utime(path, (written, written))
        url = f"http://127.0.0.1:{port}"
        assert local_service.started_here(url) is not reused
        assert local_service.stop_service(port, wait_seconds=5) is not reused
        assert not path.exists()
        if reused:
            assert child.poll() is None  # untouched
        else:
            assert _gone(child.pid)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_free_port_is_below_the_ephemeral_range_and_free() -> None:
    """Outgoing connections take ports of the ephemeral range: a service's port drawn there
    was taken before the service bound it (a CI run beside the Docker stack test)."""
    low = ephemeral_port_low()
    ports = {free_port() for _ in range(20)}
    for port in ports:
        assert settings.DEFAULT_API_PORT < port < low
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", port))
    assert len(ports) > 1
