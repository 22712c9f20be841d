"""Start, wait for and stop child servers: the one copy `ask serve`, the tests and the benchmarks share.

Stdlib only, so `ask` can import it on its start-up path. Each child gets its own session (a terminal's
Ctrl-C reaches only us, and we stop the child's whole group), and on Linux it gets SIGTERM if we die first.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO

STOP_GRACE_S = 15.0
POLL_S = 0.1


class ChildExited(RuntimeError):
    """A child we were waiting for exited first: waiting longer cannot help."""

    def __init__(self, proc: subprocess.Popen[bytes], name: str = "") -> None:
        self.proc = proc
        code = proc.returncode
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        super().__init__(f"{name or Path(str(proc.args[0])).name} {how} while starting")  # type: ignore[index]


def die_with_parent() -> None:
    """On Linux, the child gets SIGTERM if its parent is killed (-9, OOM): no orphaned servers."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def spawn(
    cmd: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    stdout: int | IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `cmd` in a new session; stderr goes where stdout goes.

    It dies with us only when started from the main thread: Linux sends the parent-death signal when the
    *thread* that forked exits, so a child started from a worker thread would be stopped with that thread.
    """
    in_main = threading.current_thread() is threading.main_thread()
    return subprocess.Popen(
        list(cmd),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdout=stdout,
        stderr=subprocess.STDOUT if stdout is not None else None,
        start_new_session=True,
        preexec_fn=die_with_parent if in_main else None,
    )


def private_log(path: Path) -> IO[bytes]:
    """Open a fresh log at `path`, readable by the user alone (0600, in a 0700 directory); the previous run's
    log is kept once as `<name>.1`, so a service that restarted after a crash still has the crash's lines."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, path.with_name(path.name + ".1"))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)  # the umask may have narrowed it, never widened: this makes it exact
    return os.fdopen(fd, "ab", buffering=0)


_ERROR_LINE = re.compile(r"^(ERROR|CRITICAL|FATAL)\b|^[A-Za-z_][\w.]*(Error|Exception|Exit)\b")


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def why_it_stopped(path: Path, lines: int = 20) -> str:
    """What a log says about why its process stopped: its error lines (a logger's ERROR, the last line of each
    traceback), the last few of them; else its last `lines` lines (none with `lines=0`: a process killed by
    a signal wrote nothing about it, and its start screen is not a reason); "" if there is no log."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 256 * 1024))
            text = _ANSI.sub("", fh.read().decode(errors="replace")).splitlines()
    except OSError:
        return ""
    errors = list(dict.fromkeys(line.rstrip() for line in text if _ERROR_LINE.match(line)))
    return "\n".join(errors[-5:] if errors else text[-lines:] if lines else [])


def answers(url: str, timeout: float = 2.0) -> bool:
    """True when `url` answers with a success (an error status such as llama.cpp's 503 "loading" is not one)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback health checks
            return resp.status < 400
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until_answers(
    url: str,
    deadline_s: float,
    children: Iterable[tuple[str, subprocess.Popen[bytes]]] = (),
    ready: Callable[[str, float], bool] = answers,
) -> bool:
    """Poll `url` until it answers or `deadline_s` seconds pass; raise ChildExited if a child dies meanwhile.

    `ready(url, timeout)` decides what counts as an answer (llama.cpp's is `{"status": "ok"}`).
    """
    watched = list(children)
    deadline = time.monotonic() + deadline_s
    while True:
        for name, proc in watched:
            if proc.poll() is not None:
                raise ChildExited(proc, name)
        if ready(url, max(0.1, min(2.0, deadline - time.monotonic()))):
            return True
        if time.monotonic() + POLL_S >= deadline:
            return False
        time.sleep(POLL_S)


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


def stop(procs: Iterable[subprocess.Popen[bytes]], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM each process group, then SIGKILL whatever has not gone within `grace_s` seconds in all."""
    running = [p for p in procs if p is not None and p.poll() is None]
    for proc in running:
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in running:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
