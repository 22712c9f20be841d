"""Servers the tests and benchmarks start: ports, readiness with a deadline, a group stop, what they cost.

Start/wait/stop are `ask serve`'s own (`ask_cli.processes`), so a test exercises the same code a user runs.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ask_cli.processes import ChildExited, answers, spawn, stop, wait_until_answers

ROOT = Path(__file__).resolve().parent.parent

__all__ = [
    "ROOT",
    "ChildExited",
    "Server",
    "answers",
    "closed_port_url",
    "free_port",
    "group_cpu_s",
    "listening",
    "log_tail",
    "python_module",
    "rss_bytes",
    "spawn",
    "stop",
    "wait_until_answers",
    "wait_until_refused",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port_url(suffix: str = "") -> str:
    """An address where nothing listens: connection refused."""
    return f"http://127.0.0.1:{free_port()}{suffix}"


def listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0


def wait_until_refused(url: str, deadline_s: float = 15.0) -> bool:
    """True once nothing accepts connections at `url`'s host and port; False if something still does after
    `deadline_s` seconds. A stopped server's socket closes a moment after its process exits: poll for that
    instead of sleeping."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    deadline = time.monotonic() + deadline_s
    while listening(port, parts.hostname or "127.0.0.1"):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def log_tail(path: Path, lines: int = 60) -> str:
    with contextlib.suppress(FileNotFoundError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user+sys) used so far by every process in a group: a server and any workers it forked."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:  # fields[0] is the state; the 5th field of stat is the group
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def rss_bytes(pid: int) -> int | None:
    """Resident memory of one process: /proc on Linux, `ps` elsewhere (macOS); None once it is gone."""
    if Path("/proc/self/status").exists():
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return None
    try:
        out = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True, timeout=2)
        return int(out.stdout.strip()) * 1024 if out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


@dataclass
class Server:
    """One child server with its log file: `start()` returns once `ready_url` answers, `stop()` ends its group."""

    name: str
    cmd: Sequence[str]
    log: Path
    ready_url: str
    env: Mapping[str, str] | None = None
    cwd: Path = ROOT
    ready: Callable[[str, float], bool] = answers
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        """`http://host:port`, from the readiness URL."""
        parts = urlsplit(self.ready_url)
        return f"{parts.scheme}://{parts.netloc}"

    def launch(self) -> Server:
        """Start without waiting: several servers can load at once, then `wait()` for each."""
        with self.log.open("wb") as out:
            self.proc = spawn(self.cmd, self.env, self.cwd, stdout=out)
        return self

    def wait(self, timeout: float = 120.0) -> Server:
        assert self.proc is not None, "launch() first"
        try:
            if wait_until_answers(self.ready_url, timeout, [(self.name, self.proc)], ready=self.ready):
                return self
        except ChildExited as exc:
            raise RuntimeError(f"{exc}:\n{log_tail(self.log)}") from None
        self.stop()
        raise RuntimeError(f"{self.name} not ready at {self.ready_url} in {timeout:.0f} s:\n{log_tail(self.log)}")

    def start(self, timeout: float = 120.0) -> Server:
        return self.launch().wait(timeout)

    def cpu_s(self) -> float:
        return group_cpu_s(self.proc.pid) if self.proc else 0.0

    def stop(self, grace_s: float = 15.0) -> None:
        if self.proc is not None:
            stop([self.proc], grace_s)


def python_module(module: str, *args: str) -> list[str]:
    """The command that runs `python -m module args` with this interpreter."""
    return [sys.executable, "-m", module, *args]
