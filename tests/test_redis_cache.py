"""The response cache in a real redis-server: shared, with an explicit TTL, and never a reason to fail.

The proxy runs the config `ask serve` derives when REDIS_HOST is set (`stack_config.with_redis`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ask_cli import stack_config
from harness.fake_ollama import FakeOllama
from harness.processes import stop
from harness.redis_server import Redis, assert_redis_warning
from harness.stack import CONFIG, KEY, ROOT, Proxy, free_port, running_proxy, stack_env

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed"),
]


@pytest.fixture(scope="module")
def redis() -> Iterator[Redis]:
    server = Redis(free_port()).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_proxy(
    tmp_path_factory: pytest.TempPathFactory, redis: Redis, fake_ollama: FakeOllama, tiny_url: str
) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("redis-proxy")
    config = stack_config.write_private(
        stack_config.with_redis(stack_config.load(CONFIG)), tmp / "litellm-config.redis.yaml"
    )
    with running_proxy(
        tmp,
        config=config,
        OLLAMA_API_BASE=fake_ollama.url,
        TINY_API_BASE=tiny_url,
        REDIS_HOST="127.0.0.1",
        REDIS_PORT=str(redis.port),
    ) as proxy:
        yield proxy


def test_answers_are_cached_in_redis_with_an_explicit_ttl(
    redis_proxy: Proxy, redis: Redis, fake_ollama: FakeOllama
) -> None:
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
    """Redis dropped mid-run: requests are still served, with a warning. Back: caching resumes within seconds,
    though the requests meanwhile opened LiteLLM's Redis circuit breaker (5 refused calls), which by itself skips
    Redis for 60 s (`stack_config.REDIS_ENV`)."""
    fake_ollama.reset()
    redis.stop()
    try:
        for n in range(8):
            down = redis_proxy.chat("fast-3b", f"while redis is down {n}")
            assert down.status_code == 200 and down.headers["x-served-by"] == "fast-3b"
        assert_redis_warning(redis_proxy)
    finally:
        redis.start()
    deadline = time.monotonic() + 3 * float(stack_config.REDIS_ENV["REDIS_CIRCUIT_BREAKER_RECOVERY_TIMEOUT"])
    while True:
        prompt = f"after redis came back {time.monotonic()}"
        redis_proxy.chat("fast-1b", prompt)
        if any(True for _ in redis.cache_keys()):
            break
        assert time.monotonic() < deadline, "caching did not resume in Redis within seconds"
        time.sleep(0.2)


def test_unreachable_redis_at_start_still_serves(tmp_path: Path, fake_ollama: FakeOllama, tiny_url: str) -> None:
    config = stack_config.write_private(
        stack_config.with_redis(stack_config.load(CONFIG)), tmp_path / "litellm-config.redis.yaml"
    )
    with running_proxy(
        tmp_path,
        config=config,
        OLLAMA_API_BASE=fake_ollama.url,
        TINY_API_BASE=tiny_url,
        REDIS_HOST="127.0.0.1",
        REDIS_PORT=str(free_port()),
    ) as proxy:
        fake_ollama.reset()
        for _ in range(2):
            resp = proxy.chat("fast-3b", "no redis at all")
            assert resp.status_code == 200 and resp.headers["x-served-by"] == "fast-3b"
        assert_redis_warning(proxy)


@pytest.mark.parametrize("case", ["wrong password", "unreachable"])
def test_ask_serve_says_once_what_is_wrong_with_redis_and_serves(
    tmp_path: Path, fake_ollama: FakeOllama, tiny_url: str, case: str
) -> None:
    """`ask serve` with a Redis it cannot use: one clear line that names the problem and the fix, then answers."""
    server = Redis(free_port(), password="the-right-one").start() if case == "wrong password" else None
    port = server.port if server else free_port()
    env = stack_env(
        tmp_path,
        OLLAMA_API_BASE=fake_ollama.url,
        TINY_API_BASE=tiny_url,
        REDIS_HOST="127.0.0.1",
        REDIS_PORT=str(port),
        REDIS_PASSWORD="a-wrong-one",
    )
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "ask_cli",
                "serve",
                "--no-embedded",
                "--port",
                str(free_port()),
                "--ask",
                "Say hello.",
                "--exit",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        if server:
            server.stop()
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("Hello from qwen3.5:9b")
    ours = [line for line in result.stderr.splitlines() if line.startswith("warning: redis at")]
    assert len(ours) == 1, result.stderr[-2000:]
    assert ours[0].startswith(f"warning: redis at 127.0.0.1:{port}: ")
    assert ours[0].endswith(
        "set REDIS_PASSWORD to the server's password)" if server else "or unset REDIS_HOST to cache in the proxy)"
    )
    assert "a-wrong-one" not in result.stderr  # the password is never printed


def test_ask_serve_says_once_when_redis_drops_and_once_when_it_is_back(
    tmp_path: Path, fake_ollama: FakeOllama, tiny_url: str
) -> None:
    server = Redis(free_port()).start()
    env = stack_env(
        tmp_path,
        OLLAMA_API_BASE=fake_ollama.url,
        TINY_API_BASE=tiny_url,
        REDIS_HOST="127.0.0.1",
        REDIS_PORT=str(server.port),
    )
    for name in stack_config.REDIS_ENV:
        del env[name]  # `ask serve` sets them itself
    said = tmp_path / "serve.err"
    port = free_port()
    cmd = [sys.executable, "-m", "ask_cli", "serve", "--no-embedded", "--no-warm", "--port", str(port)]
    with said.open("w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)

    def until(text: str, within_s: float = 60) -> None:
        deadline = time.monotonic() + within_s
        while text not in said.read_text():
            assert proc.poll() is None, said.read_text()[-2000:]
            assert time.monotonic() < deadline, f"never said {text!r}: {said.read_text()[-2000:]}"
            time.sleep(0.1)

    try:
        until("proxy listening on")
        server.stop()
        until("serving without the shared cache until it answers")
        for n in range(6):  # enough refused calls to open LiteLLM's Redis circuit breaker
            assert ask_proxy(port, f"while redis is down {n}").status_code == 200
        server.start()
        until("the shared cache is back")
        deadline = time.monotonic() + 3 * float(stack_config.REDIS_ENV["REDIS_CIRCUIT_BREAKER_RECOVERY_TIMEOUT"])
        while not server.cache_keys():  # `ask serve` gave the proxy the breaker's short recovery
            assert ask_proxy(port, f"redis is back {time.monotonic()}").status_code == 200
            assert time.monotonic() < deadline, "caching did not resume within seconds of Redis coming back"
            time.sleep(0.2)
    finally:
        stop([proc], grace_s=30)  # type: ignore[list-item]
        server.stop()
    text = said.read_text()
    assert text.count("serving without the shared cache") == 1 and text.count("the shared cache is back") == 1


def ask_proxy(port: int, prompt: str) -> httpx.Response:
    body = {"model": "fast-3b", "messages": [{"role": "user", "content": prompt}]}
    headers = {"Authorization": f"Bearer {KEY}"}
    return httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, headers=headers, timeout=60)
