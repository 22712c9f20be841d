"""Shared real parts: one fake Ollama, the real embedded model and one real proxy per test session.

The proxy takes 8-17 s to start, so the fault tests share one; each test resets the fake and waits out
LiteLLM's cooldown on the tier it breaks (see `healthy`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.fake_ollama import FakeOllama
from harness.fake_openai import FakeOpenAI
from harness.stack import Proxy, embedded_server, running_proxy

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: a test importing litellm must not fetch it


@pytest.fixture(autouse=True)
def _private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the real user's ~/.config/ask or ~/.local/share/ask."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("LITELLM_MASTER_KEY", raising=False)


@pytest.fixture(scope="session")
def fake_ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as fake:
        yield fake


@pytest.fixture(scope="session")
def tiny_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real embedded llama.cpp model (SmolLM2-135M) in its own process."""
    server = embedded_server(tmp_path_factory.mktemp("tiny") / "tiny.log")
    try:
        yield f"{server.start(60).url}/v1"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def fake_llama_swap() -> Iterator[FakeOpenAI]:
    """Stands in for llama-swap (tier `heavy`): an OpenAI-compatible server that records bodies."""
    with FakeOpenAI("gemma-3-27b-it-qat") as fake:
        yield fake


@pytest.fixture(scope="session")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllama, fake_llama_swap: FakeOpenAI, tiny_url: str
) -> Iterator[Proxy]:
    """The real proxy with the project's config: Ollama and llama-swap → fakes, tiny → the real model."""
    tmp = tmp_path_factory.mktemp("proxy")
    with running_proxy(
        tmp, OLLAMA_API_BASE=fake_ollama.url, TINY_API_BASE=tiny_url, LLAMA_SWAP_API_BASE=fake_llama_swap.url
    ) as running:
        yield running


@pytest.fixture
def healthy(proxy: Proxy, fake_ollama: FakeOllama, fake_llama_swap: FakeOpenAI) -> FakeOllama:
    """A fake with no faults, and a proxy whose tiers are out of cooldown (LiteLLM's cooldown is 5 s)."""
    fake_ollama.reset()
    deadline = time.monotonic() + 30
    for tier in ("fast-9b", "fast-3b", "think-9b"):
        while proxy.chat(tier, "warm?", max_tokens=4).headers.get("x-served-by") != tier:
            assert time.monotonic() < deadline, f"{tier} stayed in cooldown"
            time.sleep(0.5)
    fake_ollama.reset()
    fake_llama_swap.reset()
    return fake_ollama
