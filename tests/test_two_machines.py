"""Two machines, one config: two real proxies on one real redis-server, a "remote" and a "local" Ollama.

The proxies run `litellm-config.two-machines.yaml` as `ask serve` runs it with REDIS_HOST set
(`stack_config.with_redis`): the remote machine's 9B first (`order: 1`), this machine's second, the response
cache and the router's cooldowns in Redis.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ask_cli import stack_config
from harness.fake_ollama import FakeOllama
from harness.redis_server import Redis, assert_redis_warning
from harness.stack import ROOT, Proxy, free_port, stack_env

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed"),
]
NINE_B = "qwen3.5:9b"
OVERLAY = ROOT / "litellm-config.two-machines.yaml"


class Machines:
    def __init__(self, remote: FakeOllama, local: FakeOllama, redis: Redis, one: Proxy, two: Proxy) -> None:
        self.remote, self.local, self.redis, self.one, self.two = remote, local, redis, one, two

    def nine_b(self, fake: FakeOllama) -> int:
        return len(fake.chat_requests(NINE_B))


def derived_config(tmp: Path) -> Path:
    return stack_config.write_private(stack_config.with_redis(stack_config.load(OVERLAY)), tmp / "derived.yaml")


def start_both(proxies: list[Proxy]) -> None:
    errors: list[BaseException] = []

    def start(p: Proxy) -> None:
        try:
            p.start()
        except BaseException as exc:  # reported below, after both have been tried
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(p,)) for p in proxies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for p in proxies:
            p.stop()
        raise errors[0]


@pytest.fixture(scope="module")
def machines(tmp_path_factory: pytest.TempPathFactory, tiny_url: str) -> Iterator[Machines]:
    tmp = tmp_path_factory.mktemp("two-machines")
    redis = Redis(free_port()).start()
    with FakeOllama() as remote, FakeOllama() as local:
        config = derived_config(tmp)
        proxies = []
        for name in ("one", "two"):
            (tmp / name).mkdir()
            env = stack_env(
                tmp / name,
                OLLAMA_API_BASE=local.url,
                REMOTE_OLLAMA_API_BASE=remote.url,
                TINY_API_BASE=tiny_url,
                LLAMA_SWAP_API_BASE=local.url,
                REDIS_HOST="127.0.0.1",
                REDIS_PORT=str(redis.port),
            )
            proxies.append(Proxy(env=env, port=free_port(), log_path=tmp / name / "proxy.log", config=config))
        start_both(proxies)
        try:
            yield Machines(remote, local, redis, *proxies)
        finally:
            for p in proxies:
                p.stop()
            redis.stop()


@pytest.fixture
def fresh(machines: Machines) -> Machines:
    """No faults, Redis up, and the remote out of any cooldown a previous test left in Redis."""
    machines.remote.reset()
    machines.local.reset()
    if machines.redis.proc is None or machines.redis.proc.poll() is not None:
        machines.redis.start()
    for key in machines.redis.cli("--scan", "--pattern", "*cooldown*").splitlines():
        machines.redis.cli("del", key)
    deadline = time.monotonic() + 40
    while True:  # the in-memory side of the cooldown cache also has to let go
        machines.remote.clear_requests()
        machines.one.chat("fast-9b", f"warm {time.monotonic()}", cache={"no-cache": True, "no-store": True})
        machines.two.chat("fast-9b", f"warm {time.monotonic()}", cache={"no-cache": True, "no-store": True})
        if machines.nine_b(machines.remote) == 2:
            break
        assert time.monotonic() < deadline, "the remote machine stayed in cooldown"
        time.sleep(1)
    machines.remote.reset()
    machines.local.reset()
    return machines


def test_the_remote_machine_serves_first(fresh: Machines) -> None:
    resp = fresh.one.chat("fast-9b", "who answers first?")

    assert resp.status_code == 200 and resp.headers["x-served-by"] == "fast-9b"
    assert (fresh.nine_b(fresh.remote), fresh.nine_b(fresh.local)) == (1, 0)


def test_an_answer_cached_through_one_proxy_is_a_hit_through_the_other(fresh: Machines) -> None:
    prompt = f"shared cache {time.time()}"
    first = fresh.one.chat("fast-9b", prompt)
    second = fresh.two.chat("fast-9b", prompt)

    assert first.status_code == second.status_code == 200
    assert "x-litellm-cache-key" not in first.headers and "x-litellm-cache-key" in second.headers
    assert second.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]
    assert second.headers["x-served-by"] == "fast-9b"
    assert fresh.nine_b(fresh.remote) + fresh.nine_b(fresh.local) == 1


def test_a_machine_down_is_skipped_by_every_proxy_and_the_tier_is_kept(fresh: Machines) -> None:
    fresh.remote.set_fault(NINE_B, "http_500")
    first = fresh.one.chat("fast-9b", "the mini is down", cache={"no-cache": True})

    assert first.status_code == 200
    assert first.headers["x-served-by"] == "fast-9b" and "x-demoted-from" not in first.headers  # same model
    assert (fresh.nine_b(fresh.remote), fresh.nine_b(fresh.local)) == (1, 1)
    assert fresh.redis.cli("--scan", "--pattern", "*cooldown*")  # the cooldown lives in Redis

    time.sleep(stack_config.REDIS_READ_INTERVAL_S + 0.2)  # how stale a proxy's memory of Redis may be
    second = fresh.two.chat("fast-9b", "proxy two, after proxy one saw it fail", cache={"no-cache": True})
    assert second.status_code == 200 and second.headers["x-served-by"] == "fast-9b"
    assert (fresh.nine_b(fresh.remote), fresh.nine_b(fresh.local)) == (1, 2)  # proxy two never tried it


def test_redis_killed_mid_run_then_back(fresh: Machines) -> None:
    fresh.redis.stop()
    for proxy in (fresh.one, fresh.two):
        resp = proxy.chat("fast-9b", f"redis is gone {time.time()}")
        assert resp.status_code == 200 and resp.headers["x-served-by"] == "fast-9b"
        assert_redis_warning(proxy)
    fresh.redis.start()
    deadline = time.monotonic() + 30
    while True:
        prompt = f"redis is back {time.time()}"
        fresh.one.chat("fast-9b", prompt)
        if fresh.two.chat("fast-9b", prompt).headers.get("x-litellm-cache-key"):
            break
        assert time.monotonic() < deadline, "the shared cache did not come back"
        time.sleep(1)
