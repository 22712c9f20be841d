"""Cloud lanes through the real proxy: fake OpenAI- and Anthropic-shaped providers on loopback, no real keys.

The proxy runs the config `ask serve --cloud` derives (`stack_config.with_cloud`): litellm-config.yaml plus
litellm-config.cloud.yaml, minus the deployments whose key is not in the environment (here: OpenRouter's).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ask_cli import stack_config
from harness.fake_ollama import FakeOllama
from harness.fake_openai import FakeOpenAI
from harness.stack import CONFIG, ROOT, Proxy, free_port, stack_env

OVERLAY = ROOT / stack_config.CLOUD_NAME
PROVIDERS = ("cerebras", "groq", "gemini", "anthropic")  # OpenRouter gets no key: its lane entry is absent
LOCAL_TAGS = ("qwen3.5:9b", "llama3.2:3b", "gemma3:1b")


class Cloud:
    def __init__(self, fakes: dict[str, FakeOpenAI], ollama: FakeOllama, swap: FakeOpenAI, proxy: Proxy) -> None:
        self.fakes, self.ollama, self.swap, self.proxy = fakes, ollama, swap, proxy

    def calls(self) -> dict[str, int]:
        return {name: len(fake.bodies) for name, fake in self.fakes.items()}


def key_of(provider: str) -> str:
    return f"sk-test-{provider}-key"


@pytest.fixture(scope="module")
def cloud(
    tmp_path_factory: pytest.TempPathFactory,
    fake_ollama: FakeOllama,
    fake_llama_swap: FakeOpenAI,
    tiny_url: str,
    monkeypatch_module: pytest.MonkeyPatch,
) -> Iterator[Cloud]:
    tmp = tmp_path_factory.mktemp("cloud")
    fakes = {name: FakeOpenAI(f"{name}-model").__enter__() for name in PROVIDERS}
    try:
        keys = {f"{name.upper()}_API_KEY": key_of(name) for name in PROVIDERS}
        for name, value in keys.items():
            monkeypatch_module.setenv(name, value)
        monkeypatch_module.delenv("OPENROUTER_API_KEY", raising=False)
        config, dropped = stack_config.with_cloud(stack_config.load(CONFIG), OVERLAY)
        assert dropped == ["cloud-free: openrouter absent, set OPENROUTER_API_KEY"]
        path = stack_config.write_private(config, tmp / "derived.yaml")
        bases = {f"{name.upper()}_API_BASE": fake.url for name, fake in fakes.items()}
        bases["ANTHROPIC_API_BASE"] = fakes["anthropic"].url.removesuffix("/v1")
        env = stack_env(
            tmp,
            OLLAMA_API_BASE=fake_ollama.url,
            LLAMA_SWAP_API_BASE=fake_llama_swap.url,
            TINY_API_BASE=tiny_url,
            **keys,
            **bases,
        )
        proxy = Proxy(env=env, port=free_port(), log_path=tmp / "proxy.log", config=path).start()
        try:
            yield Cloud(fakes, fake_ollama, fake_llama_swap, proxy)
        finally:
            proxy.stop()
    finally:
        for fake in fakes.values():
            fake.__exit__()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture
def lanes(cloud: Cloud) -> Iterator[Cloud]:
    """No faults anywhere, and no provider still in LiteLLM's cooldown from a previous test's 429s."""
    for fake in [*cloud.fakes.values(), cloud.swap]:
        fake.reset()
    cloud.ollama.reset()
    deadline = time.monotonic() + 30
    while (
        cloud.proxy.chat("cloud-free", "ready?")
        .headers.get("x-litellm-model-api-base", "")
        .find(cloud.fakes["cerebras"].url.split("//")[1])
        < 0
    ):
        assert time.monotonic() < deadline, "cerebras stayed in cooldown"
        time.sleep(1)
    for fake in cloud.fakes.values():
        fake.reset()
    yield cloud


def local_down(cloud: Cloud) -> None:
    for tag in LOCAL_TAGS:
        cloud.ollama.set_fault(tag, "http_500")


def test_free_cloud_catches_what_the_local_chain_drops(lanes: Cloud) -> None:
    local_down(lanes)
    resp = lanes.proxy.chat("fast-9b", "local is down", cache={"no-cache": True})

    assert resp.status_code == 200, resp.text
    assert (resp.headers["x-served-by"], resp.headers["x-demoted-from"]) == ("cloud-free", "fast-9b")
    assert resp.headers["x-served-lane"] == "free-cloud"
    assert resp.json()["choices"][0]["message"]["content"] == "Hello from cerebras-model."
    assert lanes.fakes["cerebras"].keys == [key_of("cerebras")]
    assert [r.model for r in lanes.ollama.chat_requests()] == list(LOCAL_TAGS)  # local first, in order


def test_a_rate_limited_provider_is_passed_for_the_next(lanes: Cloud) -> None:
    local_down(lanes)
    lanes.fakes["cerebras"].fail_with = 429
    lanes.fakes["groq"].fail_with = 429
    resp = lanes.proxy.chat("fast-9b", "cerebras and groq are rate-limited", cache={"no-cache": True})

    assert resp.status_code == 200, resp.text
    assert resp.headers["x-served-by"] == "cloud-free"
    assert resp.json()["choices"][0]["message"]["content"] == "Hello from gemini-model."
    assert lanes.calls() == {"cerebras": 1, "groq": 1, "gemini": 1, "anthropic": 0}
    assert lanes.fakes["gemini"].keys == [key_of("gemini")]


def test_reasoning_stays_in_the_cloud_and_fails_rather_than_go_local(lanes: Cloud) -> None:
    ok = lanes.proxy.chat("reasoning", "think hard")
    assert ok.status_code == 200 and ok.headers["x-served-lane"] == "free-cloud"
    assert lanes.fakes["cerebras"].bodies[-1]["model"] == "gpt-oss-120b"

    for name in ("cerebras", "groq"):
        lanes.fakes[name].fail_with = 500
    failed = lanes.proxy.chat("reasoning", "think hard, clouds down", cache={"no-cache": True})
    assert failed.status_code >= 500
    assert lanes.ollama.chat_requests() == [] and lanes.swap.bodies == []
    assert lanes.fakes["anthropic"].bodies == []


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_premium_answers_when_named(lanes: Cloud, stream: bool) -> None:
    if stream:
        result = lanes.proxy.stream("premium", "the hard one")
        status, headers, text = result.status, result.headers, result.text
    else:
        resp = lanes.proxy.chat("premium", "the hard one")
        status, headers, text = resp.status_code, resp.headers, resp.json()["choices"][0]["message"]["content"]
    assert status == 200
    assert (headers["x-served-by"], headers["x-served-lane"]) == ("premium", "premium")
    assert text.strip() == "Hello from anthropic-model."
    assert lanes.fakes["anthropic"].keys == [key_of("anthropic")]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"fallbacks": ["premium"]}, "fallbacks names the premium lane 'premium'"),
        ({"fallbacks": [{"model": "premium"}]}, "fallbacks names the premium lane 'premium'"),
        ({"context_window_fallbacks": [{"fast-9b": ["premium"]}]}, "context_window_fallbacks names the premium lane"),
        ({"default_fallbacks": ["premium"]}, "default_fallbacks names the premium lane"),
    ],
    ids=["fallbacks", "fallbacks-dict", "context-window", "default"],
)
def test_a_request_cannot_route_itself_into_premium(lanes: Cloud, body: dict, message: str) -> None:
    local_down(lanes)
    resp = lanes.proxy.chat("fast-9b", "sneak into premium", **body)

    assert resp.status_code == 400
    assert message in resp.json()["error"]["message"]
    assert lanes.fakes["anthropic"].bodies == [] and lanes.ollama.chat_requests() == []


def test_premium_has_no_fallback_out(lanes: Cloud) -> None:
    refused = lanes.proxy.chat("premium", "with a way out", fallbacks=["fast-9b"])
    assert refused.status_code == 400 and "it has no fallback" in refused.json()["error"]["message"]

    lanes.fakes["anthropic"].fail_with = 529
    failed = lanes.proxy.chat("premium", "premium is down", cache={"no-cache": True})
    assert failed.status_code >= 500
    assert lanes.ollama.chat_requests() == [] and lanes.calls()["cerebras"] == 0


def test_a_lane_without_its_key_is_absent_not_a_500(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CEREBRAS", "GROQ", "GEMINI", "OPENROUTER", "ANTHROPIC"):
        monkeypatch.delenv(f"{name}_API_KEY", raising=False)
    monkeypatch.setenv("GROQ_API_KEY", "sk-only-groq")
    config, dropped = stack_config.with_cloud(stack_config.load(CONFIG), OVERLAY)

    tiers = {
        d["model_name"]: d["litellm_params"]["model"]
        for d in config["model_list"]
        if (d.get("model_info") or {}).get("lane")
    }
    assert tiers == {"cloud-free": "groq/llama-3.3-70b-versatile", "reasoning": "groq/openai/gpt-oss-120b"}
    assert "premium: anthropic absent, set ANTHROPIC_API_KEY" in dropped and len(dropped) == 5
    assert stack_config.routing_problems(config) == []

    monkeypatch.delenv("GROQ_API_KEY")
    bare, _ = stack_config.with_cloud(stack_config.load(CONFIG), OVERLAY)
    chains = {k: v for entry in bare["router_settings"]["fallbacks"] for k, v in entry.items()}
    assert chains["fast-9b"] == ["fast-3b", "fast-1b", "tiny"]  # no key at all: the local chain, unchanged
    assert "cloud-free" not in str(bare["router_settings"]["context_window_fallbacks"])


def test_asking_for_an_absent_lane_is_a_400_that_lists_the_tiers(proxy: Proxy) -> None:
    resp = proxy.chat("premium", "no cloud configured")  # the session proxy: the local config only

    assert resp.status_code == 400
    assert "premium" in resp.json()["error"]["message"] and "fast-9b" in resp.json()["error"]["message"]


def test_a_long_prompt_escalates_to_a_larger_context_and_says_so(lanes: Cloud) -> None:
    long_prompt = "word " * 9000  # ~9000 tokens: over the 9B's num_ctx of 8192
    resp = lanes.proxy.chat("fast-9b", long_prompt, cache={"no-cache": True})

    assert resp.status_code == 200, resp.text
    assert (resp.headers["x-served-by"], resp.headers["x-demoted-from"]) == ("cloud-free", "fast-9b")
    assert lanes.ollama.chat_requests() == []  # never sent to Ollama to be silently truncated
    record = lanes.proxy.demotion(resp.headers.get("x-litellm-call-id"))
    assert (record["requested"], record["served"]) == ("fast-9b", "cloud-free")
    [reason] = record["failed"]
    assert reason.startswith("fast-9b: prompt over num_ctx (") and reason.endswith(
        " > 7680 tokens), escalated"
    )  # 512 kept for the answer


def test_without_the_cloud_a_long_prompt_goes_to_heavy(
    proxy: Proxy, healthy: FakeOllama, fake_llama_swap: FakeOpenAI
) -> None:
    resp = proxy.chat("fast-3b", "word " * 9000, cache={"no-cache": True})

    assert resp.status_code == 200, resp.text
    assert (resp.headers["x-served-by"], resp.headers["x-demoted-from"]) == ("heavy", "fast-3b")
    assert healthy.chat_requests() == [] and len(fake_llama_swap.bodies) == 1
    short = proxy.chat("fast-3b", "word " * 100, cache={"no-cache": True})
    assert short.headers["x-served-by"] == "fast-3b"  # what fits stays local


def test_a_hand_edited_chain_into_premium_is_still_refused(tmp_path: Path, lanes: Cloud) -> None:
    """`ask serve` refuses this yaml; run by `litellm --config` directly, the per-attempt guard still holds."""
    config = stack_config.load(lanes.proxy.config)
    config["router_settings"]["fallbacks"] = [{"fast-9b": ["premium", "tiny"]}]
    assert stack_config.routing_problems(config)[0].startswith(
        "router_settings.fallbacks: 'fast-9b' falls back to the premium tier 'premium'"
    )
    path = stack_config.write_private(config, tmp_path / "edited.yaml")
    edited = Proxy(env=lanes.proxy.env, port=free_port(), log_path=tmp_path / "proxy.log", config=path).start()
    try:
        lanes.ollama.set_fault("qwen3.5:9b", "http_500")
        resp = edited.chat("fast-9b", "fall into premium?", cache={"no-cache": True})
        assert resp.status_code == 200 and resp.headers["x-served-by"] == "tiny"
        assert lanes.fakes["anthropic"].bodies == []
        record = edited.demotion(resp.headers.get("x-litellm-call-id"))
        assert "premium: refused: premium only when named" in record["failed"]
    finally:
        edited.stop()


def test_ask_premium_and_stats_by_lane(lanes: Cloud, tmp_path: Path) -> None:
    from tests.test_ask_cli import ask, telemetry_lines

    premium = ask("--premium", "--json", "worth paying for", proxy=lanes.proxy)
    assert premium.returncode == 0, premium.stderr
    out = json.loads(premium.stdout)
    assert (out["model"], out["served_by"], out["lane"]) == ("premium", "premium", "premium")
    local_down(lanes)
    demoted = ask("-m", "fast-1b", "cheap one", proxy=lanes.proxy)
    assert demoted.stderr.decode() == "[degraded: fast-1b → cloud-free]\n"
    lanes.ollama.reset()
    assert ask("-m", "fast-1b", "cheap one", proxy=lanes.proxy).returncode == 0  # cached by ask: not demoted

    assert [e["lane"] for e in telemetry_lines(tmp_path)] == ["premium", "free-cloud", "local"]
    stats = ask("stats", "--json", proxy=lanes.proxy)
    usage = json.loads(stats.stdout)["lanes"]
    assert {lane: u["calls"] for lane, u in usage.items()} == {"local": 1, "free-cloud": 1, "premium": 1, "cache": 0}
