"""Real parts for tests and benchmarks: the `litellm` proxy started with the project's own config, its backends.

Backends are pointed at fakes (or the real embedded model) through the environment only: the yaml is
never edited for a test.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from ask_cli import embedded, stack_config
from harness.processes import ROOT, Server, closed_port_url, free_port, log_tail, python_module

CONFIG = ROOT / "litellm-config.yaml"
KEY = "sk-test-" + "0" * 32

__all__ = [
    "CONFIG",
    "KEY",
    "ROOT",
    "Proxy",
    "StreamResult",
    "closed_port_url",
    "deep_merge",
    "derived_config",
    "embedded_server",
    "fake_ollama_server",
    "free_port",
    "isolated_env",
    "llama_metrics",
    "read_jsonl",
    "running_proxy",
    "stack_env",
]


def litellm_command() -> str:
    return str(Path(sys.executable).parent / "litellm")


@dataclass
class Proxy:
    """A running `litellm --config litellm-config.yaml` process on loopback."""

    env: dict[str, str]
    port: int
    log_path: Path
    config: Path = CONFIG
    extra_args: Sequence[str] = ()
    server: Server | None = field(default=None, init=False)
    client: httpx.Client = field(init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.server.proc if self.server else None

    def launch(self) -> Proxy:
        """Start the process only: the proxy takes 8-17 s, so start other servers meanwhile, then `wait()`."""
        cmd = [litellm_command(), "--config", str(self.config), "--host", "127.0.0.1", "--port", str(self.port)]
        self.server = Server(
            "proxy", [*cmd, *self.extra_args], self.log_path, f"{self.url}/health/liveliness", self.env
        )
        self.server.launch()
        self.client = httpx.Client(
            base_url=self.url, timeout=60.0, headers={"Authorization": f"Bearer {KEY}"}, trust_env=False
        )
        return self

    def wait(self, timeout: float = 120.0) -> Proxy:
        assert self.server is not None, "launch() first"
        self.server.wait(timeout)
        return self

    def start(self, timeout: float = 120.0) -> Proxy:
        return self.launch().wait(timeout)

    def cpu_s(self) -> float:
        return self.server.cpu_s() if self.server else 0.0

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if hasattr(self, "client"):
            self.client.close()

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)

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
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OLLAMA", "LITELLM", "REDIS", "DEMOTION", "RAM_BUDGET"))
    }
    env.update(
        LITELLM_MASTER_KEY=KEY,
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        XDG_DATA_HOME=str(tmp / "data"),
        XDG_CONFIG_HOME=str(tmp / "config"),
        DEMOTION_LOG=str(tmp / "demotions.jsonl"),
        DEMOTION_NOTIFY="off",  # no desktop notices from tests on a developer's desktop (tests/test_desktop.py)
        PYTHONUNBUFFERED="1",
        PYTHONFAULTHANDLER="1",  # a crash of the proxy (a segfault inside CPython was seen once) leaves its stack
        # A budget every tier fits in: what is resident is then the emulated Ollama's own doing (its scheduler),
        # whatever this machine's free RAM; tests of the budget set their own (tests/test_budget.py).
        RAM_BUDGET_GB="64",
        RAM_BUDGET_STATE=str(tmp / "budget.json"),
    )
    if "REDIS_HOST" in backends:
        env.update(stack_config.REDIS_ENV)  # as `ask serve` sets it
    env.update(backends)
    return env


def isolated_env(tmp: Path, **backends: str) -> dict[str, str]:
    """`stack_env` with every backend not given at a closed port (nothing falls through to a real one), and
    the proxy's log level as `ask serve` sets it: what a benchmark measures is the stack a user runs."""
    unused = {name: closed_port_url("/v1") for name in ("OLLAMA_API_BASE", "TINY_API_BASE", "LLAMA_SWAP_API_BASE")}
    return stack_env(tmp, **{**unused, "LITELLM_LOG": "ERROR", **backends})


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` over `base`, recursively for mappings; anything else in `extra` replaces."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        is_map = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = deep_merge(out[key], value) if is_map else copy.deepcopy(value)
    return out


def derived_config(path: Path, callbacks: Sequence[str] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """The project's yaml with only `callbacks` of ours kept (None: all), plus `extra` merged, written to `path`.

    Callbacks `extra` lists are added to ours. The proxy runs from the repository root, so `plugins.*`
    still resolve by normal import from a config outside it.
    """
    config = yaml.safe_load(CONFIG.read_text())
    ours = config.get("litellm_settings", {}).pop("callbacks", None) or []
    kept = ours if callbacks is None else [c for c in ours if c in callbacks]
    config = deep_merge(config, extra or {})
    if kept:
        settings = config.setdefault("litellm_settings", {})
        settings["callbacks"] = [*kept, *(settings.get("callbacks") or [])]
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every whole line of a JSONL file another process appends to: a last line still being written is not one
    yet (the callers poll)."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and not text.endswith("\n"):
        lines.pop()
    return [json.loads(line) for line in lines]


@contextmanager
def running_proxy(tmp: Path, config: Path = CONFIG, **backends: str) -> Iterator[Proxy]:
    """The proxy for the length of a `with`; its stop is armed before the 8-17 s start, so Ctrl-C stops it too."""
    proxy = Proxy(env=stack_env(tmp, **backends), port=free_port(), log_path=tmp / "proxy.log", config=config)
    try:
        yield proxy.start()
    finally:
        proxy.stop()


def embedded_server(log: Path, port: int | None = None, *args: str) -> Server:
    """The real embedded model (`python -m ask_cli.embedded`), ready when llama.cpp says `ok`."""
    port = port or free_port()
    cmd = python_module("ask_cli.embedded", "--host", "127.0.0.1", "--port", str(port), *args)
    return Server("embedded model", cmd, log, f"http://127.0.0.1:{port}/health", ready=embedded.health_ok)


def llama_metrics(url: str) -> dict[str, float]:
    """llama.cpp's counters (tokens generated, seconds generating, ...) from a server started with --metrics."""
    out = {}
    for line in httpx.get(f"{url}/metrics", timeout=10, trust_env=False).text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.split()[:2]
            out[name.removeprefix("llamacpp:")] = float(value)
    return out


def fake_ollama_server(log: Path, *args: str) -> Server:
    """The emulated Ollama in its own process, so its work does not share the client's GIL."""
    port = free_port()
    cmd = python_module("harness.fake_ollama", "--port", str(port), *args)
    return Server("fake ollama", cmd, log, f"http://127.0.0.1:{port}/api/version")
