"""The response cache in a real redis-server: shared, with an explicit TTL, and never a reason to fail.

The proxy runs the config `ask serve` derives when REDIS_HOST is set (`stack_config.with_redis_cache`).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ask_cli import stack_config
from tests.fake_ollama import FakeOllama
from tests.stack import CONFIG, Proxy, free_port, running_proxy

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed"),
]


class Redis:
    """A real redis-server on loopback, no persistence; restartable on the same port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Redis:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while self.cli("ping") != "PONG":
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def cli(self, *args: str) -> str:
        out = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True)
        return out.stdout.strip()

    def cache_keys(self) -> list[str]:
        return [k for k in self.cli("--scan").splitlines() if k and "daily_metrics" not in k]


def assert_redis_warning(proxy: Proxy) -> None:
    """LiteLLM logs the lost connection (from its background writer, so not always before the answer)."""
    deadline = time.monotonic() + 10
    while not any("redis" in line.lower() and ("refused" in line or "closed" in line.lower())
                  for line in proxy.log_text().splitlines()):
        assert time.monotonic() < deadline, "no warning about the lost Redis connection"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def redis() -> Iterator[Redis]:
    server = Redis(free_port()).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_proxy(tmp_path_factory: pytest.TempPathFactory, redis: Redis, fake_ollama: FakeOllama,
                tiny_url: str) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("redis-proxy")
    config = stack_config.write_private(stack_config.with_redis_cache(stack_config.load(CONFIG)),
                                        tmp / "litellm-config.redis.yaml")
    with running_proxy(tmp, config=config, OLLAMA_API_BASE=fake_ollama.url, TINY_API_BASE=tiny_url,
                       REDIS_HOST="127.0.0.1", REDIS_PORT=str(redis.port)) as proxy:
        yield proxy


def test_answers_are_cached_in_redis_with_an_explicit_ttl(redis_proxy: Proxy, redis: Redis,
                                                          fake_ollama: FakeOllama) -> None:
    fake_ollama.reset()
    first = redis_proxy.chat("fast-3b", "redis cached")
    second = redis_proxy.chat("fast-3b", "redis cached")
    key = second.headers["x-litellm-cache-key"]
    assert second.headers["x-served-by"] == "fast-3b"
    content = first.json()["choices"][0]["message"]["content"]
    assert second.json()["choices"][0]["message"]["content"] == content
    assert len(fake_ollama.chat_requests()) == 1
    assert content in redis.cli("get", key)
    assert 60 < int(redis.cli("ttl", key)) <= 3600


def test_redis_down_then_back(redis_proxy: Proxy, redis: Redis, fake_ollama: FakeOllama) -> None:
    """Redis dropped mid-run: requests are still served, with a warning. Back: caching resumes."""
    fake_ollama.reset()
    redis.stop()
    try:
        down = redis_proxy.chat("fast-3b", "while redis is down")
        assert down.status_code == 200 and down.headers["x-served-by"] == "fast-3b"
        assert_redis_warning(redis_proxy)
    finally:
        redis.start()
    deadline = time.monotonic() + 20
    while True:
        prompt = f"after redis came back {time.monotonic()}"
        redis_proxy.chat("fast-1b", prompt)
        if any(True for _ in redis.cache_keys()):
            break
        assert time.monotonic() < deadline, "caching did not resume in Redis"
        time.sleep(0.5)


def test_unreachable_redis_at_start_still_serves(tmp_path: Path, fake_ollama: FakeOllama, tiny_url: str) -> None:
    config = stack_config.write_private(stack_config.with_redis_cache(stack_config.load(CONFIG)),
                                        tmp_path / "litellm-config.redis.yaml")
    with running_proxy(tmp_path, config=config, OLLAMA_API_BASE=fake_ollama.url, TINY_API_BASE=tiny_url,
                       REDIS_HOST="127.0.0.1", REDIS_PORT=str(free_port())) as proxy:
        fake_ollama.reset()
        for _ in range(2):
            resp = proxy.chat("fast-3b", "no redis at all")
            assert resp.status_code == 200 and resp.headers["x-served-by"] == "fast-3b"
        assert_redis_warning(proxy)
