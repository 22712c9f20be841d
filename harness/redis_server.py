"""A real redis-server for tests: loopback, no persistence, restartable on the same port, optionally a password."""

from __future__ import annotations

import subprocess
import time

from harness.processes import spawn, stop
from harness.stack import Proxy


class Redis:
    """A real redis-server on loopback, no persistence; restartable on the same port."""

    def __init__(self, port: int, password: str | None = None) -> None:
        self.port = port
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Redis:
        auth = ["--requirepass", self.password] if self.password else []
        self.proc = spawn(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                *auth,
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while self.cli("ping") != "PONG":
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop([self.proc], grace_s=10)

    def cli(self, *args: str) -> str:
        auth = ["--no-auth-warning", "-a", self.password] if self.password else []
        out = subprocess.run(["redis-cli", "-p", str(self.port), *auth, *args], capture_output=True, text=True)
        return out.stdout.strip()

    def cache_keys(self) -> list[str]:
        return [k for k in self.cli("--scan").splitlines() if k and "daily_metrics" not in k]


def assert_redis_warning(proxy: Proxy) -> None:
    """LiteLLM logs the lost connection (from its background writer, so not always before the answer)."""
    deadline = time.monotonic() + 10
    while not any(
        "redis" in line.lower() and ("refused" in line or "closed" in line.lower())
        for line in proxy.log_text().splitlines()
    ):
        assert time.monotonic() < deadline, "no warning about the lost Redis connection"
        time.sleep(0.2)
