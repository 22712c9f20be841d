"""Serving behaviour a user notices: keep_alive per hop, headers on cache hits, bad requests, real tokens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.fake_ollama import FakeOllama
from harness.fake_openai import FakeOpenAI
from harness.stack import Proxy, closed_port_url, running_proxy

NINE_B, THREE_B = "qwen3.5:9b", "llama3.2:3b"


def keep_alives(fake: FakeOllama) -> list[tuple[str, object]]:
    return [(r.model, (r.body or {}).get("keep_alive")) for r in fake.chat_requests()]


@pytest.mark.parametrize(
    ("tier", "tag", "policy"),
    [
        ("fast-9b", NINE_B, "15m"),
        ("fast-3b", THREE_B, "5m"),
        ("fast-1b", "gemma3:1b", "2m"),
        ("think-9b", NINE_B, "15m"),
        ("coder-30b", "qwen3-coder:30b", "30s"),
    ],
)
def test_each_ollama_tier_sends_its_keep_alive(
    proxy: Proxy, healthy: FakeOllama, tier: str, tag: str, policy: str
) -> None:
    assert proxy.chat(tier, f"keep {tier}").headers["x-served-by"] == tier
    assert keep_alives(healthy) == [(tag, policy)]


def test_coder_is_evicted_from_ollama_ps_quickly(proxy: Proxy, healthy: FakeOllama) -> None:
    """What the 30 s policy buys: /api/ps shows the coder expiring within seconds. On the 24 GB Mac the 9B does
    not fit next to it, so asking for the 9B evicts the idle coder first (Ollama's scheduler, as the fake
    emulates it) and /api/ps is left with the 9B for 15 minutes."""
    import json
    import urllib.request
    from datetime import datetime

    def seconds_left() -> dict[str, float]:
        with urllib.request.urlopen(f"{healthy.url}/api/ps") as resp:
            loaded = {m["name"]: m["expires_at"] for m in json.load(resp)["models"]}
        now = datetime.now().astimezone()
        return {name: (datetime.fromisoformat(at) - now).total_seconds() for name, at in loaded.items()}

    assert proxy.chat("coder-30b", "evict me").headers["x-served-by"] == "coder-30b"
    assert 0 < seconds_left()["qwen3-coder:30b"] <= 30
    assert proxy.chat("fast-9b", "keep me").headers["x-served-by"] == "fast-9b"
    left = seconds_left()
    assert "qwen3-coder:30b" not in left
    assert 14 * 60 < left[NINE_B] <= 15 * 60
    assert [(e["model"], e["reason"]) for e in healthy.events() if e["event"] == "evict"] == [
        ("qwen3-coder:30b", "memory")
    ]


def test_client_keep_alive_wins_on_every_ollama_hop(proxy: Proxy, healthy: FakeOllama) -> None:
    healthy.set_fault(NINE_B, "http_500")
    resp = proxy.chat("fast-9b", "stay warm", keep_alive="1h")
    assert resp.headers["x-served-by"] == "fast-3b"
    assert keep_alives(healthy) == [(NINE_B, "1h"), (THREE_B, "1h")]


def test_non_ollama_backends_never_receive_keep_alive(
    proxy: Proxy, healthy: FakeOllama, fake_llama_swap: FakeOpenAI
) -> None:
    """think-9b → heavy (llama.cpp): the 9B gets the client's keep_alive, llama-swap gets none."""
    healthy.set_fault(NINE_B, "http_500")
    resp = proxy.chat("think-9b", "heavy lifting", keep_alive="1h")
    assert resp.headers["x-served-by"] == "heavy"
    assert keep_alives(healthy) == [(NINE_B, "1h")]
    assert [b.get("keep_alive") for b in fake_llama_swap.bodies] == [None]
    assert "keep_alive" not in fake_llama_swap.bodies[0]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_cache_hit_still_says_who_served(proxy: Proxy, healthy: FakeOllama, stream: bool) -> None:
    prompt = f"cache me {stream}"
    first = proxy.stream("fast-3b", prompt) if stream else proxy.chat("fast-3b", prompt)
    second = proxy.stream("fast-3b", prompt) if stream else proxy.chat("fast-3b", prompt)
    assert "x-litellm-cache-key" in second.headers
    assert first.headers["x-served-by"] == second.headers["x-served-by"] == "fast-3b"
    assert len(healthy.chat_requests()) == 1


def test_demoted_answer_is_not_served_from_cache_for_the_tier_asked_for(proxy: Proxy, healthy: FakeOllama) -> None:
    """A fast-9b request answered by fast-3b is cached as fast-3b's answer only: once the 9B is back,
    the same question reaches the 9B."""
    healthy.set_fault(NINE_B, "http_500")
    assert proxy.chat("fast-9b", "same question").headers["x-served-by"] == "fast-3b"
    healthy.set_fault(NINE_B, None)
    again = proxy.chat("fast-9b", "same question")
    assert again.headers["x-served-by"] == "fast-9b" and "x-demoted-from" not in again.headers
    assert "x-litellm-cache-key" not in again.headers


def test_tiers_do_not_share_cached_answers(proxy: Proxy, healthy: FakeOllama) -> None:
    """fast-9b and think-9b are the same Ollama tag: a cached fast-9b answer is never think-9b's."""
    proxy.chat("fast-9b", "one model, two tiers")
    think = proxy.chat("think-9b", "one model, two tiers")
    assert think.headers["x-served-by"] == "think-9b" and "x-litellm-cache-key" not in think.headers
    assert [(r.body or {}).get("think") for r in healthy.chat_requests(NINE_B)] == [False, True]


def test_unknown_model_lists_the_tiers(proxy: Proxy) -> None:
    resp = proxy.chat("gpt-17", "hello?")
    assert resp.status_code == 400
    message = resp.json()["error"]["message"]
    assert "unknown model 'gpt-17'" in message
    for tier in ("fast-9b", "fast-3b", "fast-1b", "think-9b", "coder-30b", "heavy", "tiny"):
        assert tier in message


def test_malformed_requests_are_400(proxy: Proxy) -> None:
    assert proxy.client.post("/v1/chat/completions", content=b'{"model": "fast-9b"').status_code == 400
    bad = proxy.client.post("/v1/chat/completions", json={"model": "fast-9b", "messages": "not a list"})
    assert bad.status_code == 400


def test_a_request_without_the_right_key_is_refused(proxy: Proxy, healthy: FakeOllama) -> None:
    import httpx

    body = {"model": "fast-9b", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{proxy.url}/v1/chat/completions", json=body).status_code == 401
    for route, headers in (  # the OpenAI clients' bearer, and the header Anthropic clients send
        ("/v1/chat/completions", {"Authorization": "Bearer sk-wrong"}),
        ("/v1/messages", {"x-api-key": "sk-wrong"}),
    ):
        wrong = httpx.post(f"{proxy.url}{route}", json={**body, "max_tokens": 5}, headers=headers)
        assert wrong.status_code == 401, wrong.text  # LiteLLM 1.106.2 alone: 400 "No connected db."
        assert "the key was refused: it is not this proxy's master key" in wrong.json()["error"]["message"]
    assert healthy.chat_requests() == []


def test_webhook_alert_on_demotion(tmp_path: Path, fake_ollama: FakeOllama, tiny_url: str) -> None:
    """One Slack-compatible alert for a burst of demotions (rate-limited), and the answers are unaffected."""
    with (
        FakeOpenAI("slack") as hook,
        running_proxy(
            tmp_path,
            OLLAMA_API_BASE=fake_ollama.url,
            TINY_API_BASE=tiny_url,
            DEMOTION_WEBHOOK_URL=hook.url + "/hook",
            DEMOTION_WEBHOOK_MIN_INTERVAL_S="300",
        ) as proxy,
    ):
        fake_ollama.reset()
        fake_ollama.set_fault(NINE_B, "http_500")
        for i in range(3):
            assert proxy.chat("fast-9b", f"alert {i}").headers["x-served-by"] == "fast-3b"
        import time

        deadline = time.monotonic() + 5
        while not hook.bodies and time.monotonic() < deadline:
            time.sleep(0.05)
        fake_ollama.reset()
    assert len(hook.bodies) == 1
    assert hook.bodies[0]["text"].startswith("fallback fired: used fast-3b because fast-9b failed")


@pytest.fixture(scope="module")
def no_ollama(tmp_path_factory: pytest.TempPathFactory, tiny_url: str) -> Iterator[Proxy]:
    """A fresh machine: nothing listens where Ollama should be; the embedded model is real."""
    with running_proxy(
        tmp_path_factory.mktemp("no-ollama"),
        OLLAMA_API_BASE=closed_port_url(),
        TINY_API_BASE=tiny_url,
        LLAMA_SWAP_API_BASE=closed_port_url("/v1"),
    ) as proxy:
        yield proxy


@pytest.mark.real_model
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_without_ollama_fast_9b_is_answered_by_tiny_with_real_tokens(no_ollama: Proxy, stream: bool) -> None:
    # SmolLM2 answers sensibly with a system prompt; without one its template's default derails it.
    ask = {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": f"What is the capital of France? ({stream})"},
        ],
        "max_tokens": 24,
        "temperature": 0,
    }
    if stream:
        result = no_ollama.stream("fast-9b", **ask)
        headers, text = result.headers, result.text
    else:
        resp = no_ollama.chat("fast-9b", **ask)
        headers, text = resp.headers, resp.json()["choices"][0]["message"]["content"]
        assert resp.json()["usage"]["completion_tokens"] > 0
    assert headers["x-served-by"] == "tiny" and headers["x-demoted-from"] == "fast-9b"
    assert "Paris" in text
    record = no_ollama.demotion(headers.get("x-litellm-call-id"))
    assert record["stream"] is stream
    assert record["failed"][0] == "fast-9b: connection refused"
    assert record["served"] == "tiny" and record["hops"] == 3
    assert "[degraded: fast-9b → tiny]" in no_ollama.log_text()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_anthropic_messages_endpoint_says_who_served(proxy: Proxy, healthy: FakeOllama, stream: bool) -> None:
    """Claude Code speaks /v1/messages: a demotion there must be as visible as on chat completions."""
    healthy.set_fault("qwen3-coder:30b", "http_500")
    body = {
        "model": "coder-30b",
        "max_tokens": 32,
        "stream": stream,
        "messages": [{"role": "user", "content": f"anthropic {stream}"}],
    }
    with proxy.client.stream("POST", "/v1/messages", json=body) as resp:
        resp.read()
    assert resp.status_code == 200
    assert resp.headers["x-served-by"] == "fast-9b" and resp.headers["x-demoted-from"] == "coder-30b"
