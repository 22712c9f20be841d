"""Real parts for tests: the `litellm` proxy process started with the project's own config.

Backends are pointed at fakes (or the real embedded model) through the environment only: the yaml is
never edited for a test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "litellm-config.yaml"
KEY = "sk-test-" + "0" * 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port_url(suffix: str = "") -> str:
    """An address where nothing listens: connection refused."""
    return f"http://127.0.0.1:{free_port()}{suffix}"


def litellm_command() -> str:
    return str(Path(sys.executable).parent / "litellm")


@dataclass
class Proxy:
    """A running `litellm --config litellm-config.yaml` process on loopback."""

    env: dict[str, str]
    port: int
    log_path: Path
    config: Path = CONFIG
    proc: subprocess.Popen[bytes] | None = None
    client: httpx.Client = field(init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> Proxy:
        cmd = [litellm_command(), "--config", str(self.config), "--host", "127.0.0.1", "--port", str(self.port)]
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.client = httpx.Client(base_url=self.url, timeout=60.0, headers={"Authorization": f"Bearer {KEY}"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health/liveliness", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"proxy not ready in {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if hasattr(self, "client"):
            self.client.close()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def env_path(self, name: str) -> Path:
        return Path(self.env[name])

    def demotion(self, call_id: str | None, timeout: float = 5.0) -> dict[str, Any]:
        """The demotion log line for one call: it is written just after the response, so wait for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in read_jsonl(self.env_path("DEMOTION_LOG")):
                if record["call_id"] == call_id:
                    return record
            time.sleep(0.05)
        raise AssertionError(f"no demotion record for call {call_id}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    # -- requests -------------------------------------------------------------------------------------
    def chat(self, model: str, content: str = "hi", **body: Any) -> httpx.Response:
        payload = {"model": model, "messages": [{"role": "user", "content": content}], **body}
        return self.client.post("/v1/chat/completions", json=payload)

    def stream(self, model: str, content: str = "hi", **body: Any) -> StreamResult:
        payload = {"model": model, "messages": [{"role": "user", "content": content}], "stream": True, **body}
        with self.client.stream("POST", "/v1/chat/completions", json=payload) as resp:
            result = StreamResult(status=resp.status_code, headers=resp.headers)
            if resp.status_code >= 400:
                result.body = resp.read().decode()
                return result
            for line in resp.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    result.done = True
                    break
                event = json.loads(data)
                result.events.append(event)
        return result


@dataclass
class StreamResult:
    status: int
    headers: httpx.Headers
    events: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    body: str = ""

    @property
    def text(self) -> str:
        return "".join((c.get("delta") or {}).get("content") or "" for e in self.events for c in e.get("choices") or [])

    @property
    def error(self) -> str | None:
        for e in self.events:
            if "error" in e:
                return json.dumps(e["error"])
        return None


def stack_env(tmp: Path, **backends: str) -> dict[str, str]:
    """The proxy's environment: a private home, the test key, the given backend addresses."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA", "LITELLM", "REDIS", "DEMOTION"))}
    env.update(
        LITELLM_MASTER_KEY=KEY,
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        XDG_DATA_HOME=str(tmp / "data"),
        XDG_CONFIG_HOME=str(tmp / "config"),
        DEMOTION_LOG=str(tmp / "demotions.jsonl"),
        PYTHONUNBUFFERED="1",
    )
    env.update(backends)
    return env


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@contextmanager
def running_proxy(tmp: Path, config: Path = CONFIG, **backends: str) -> Iterator[Proxy]:
    proxy = Proxy(env=stack_env(tmp, **backends), port=free_port(), log_path=tmp / "proxy.log", config=config).start()
    try:
        yield proxy
    finally:
        proxy.stop()
