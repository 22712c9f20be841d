"""Thinking only where the model thinks, tools only where it has them (plugins/capabilities.py), through the
real proxy; the emulated Ollama answers 400 to either on a model without the capability, as Ollama does
(harness/fake_ollama.py, after server/routes.go ChatHandler), and reports capabilities in /api/show.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from harness.fake_ollama import FakeOllama
from harness.stack import Proxy

CODER, ONE_B = "qwen3-coder:30b", "gemma3:1b"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file of the project.",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
        },
    }
]


def sent(fake: FakeOllama, tag: str) -> list[dict[str, Any]]:
    return [r.body or {} for r in fake.chat_requests(tag) if r.status == 200]


def test_thinking_asked_of_a_model_that_cannot_think_is_dropped_not_demoted(proxy: Proxy, healthy: FakeOllama) -> None:
    resp = proxy.chat("coder-30b", f"{uuid.uuid4()} write a docstring", max_tokens=64, reasoning_effort="high")
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-served-by"] == "coder-30b" and "x-demoted-from" not in resp.headers
    assert resp.headers["x-thinking-dropped"] == "coder-30b"
    (body,) = sent(healthy, CODER)
    assert "think" not in body  # Ollama would have answered 400 "does not support thinking"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_claude_codes_thinking_on_v1_messages_reaches_the_coder_without_it(
    proxy: Proxy, healthy: FakeOllama, stream: bool
) -> None:
    body = {
        "model": "coder-30b",
        "max_tokens": 1024,
        "stream": stream,
        "thinking": {"type": "enabled", "budget_tokens": 512},
        "messages": [{"role": "user", "content": f"{uuid.uuid4()} say hi"}],
    }
    with proxy.client.stream("POST", "/v1/messages", json=body) as resp:
        assert resp.status_code == 200, resp.read()
        resp.read()
        headers = resp.headers
    assert headers["x-served-by"] == "coder-30b" and "x-demoted-from" not in headers
    assert headers["x-thinking-dropped"] == "coder-30b"
    assert all("think" not in b for b in sent(healthy, CODER))


def test_thinking_on_a_model_that_thinks_is_sent(proxy: Proxy, healthy: FakeOllama) -> None:
    resp = proxy.chat("think-9b", f"{uuid.uuid4()} why?", max_tokens=64, reasoning_effort="high")
    assert resp.status_code == 200 and resp.headers["x-served-by"] == "think-9b"
    assert "x-thinking-dropped" not in resp.headers
    assert [b.get("think") for b in sent(healthy, "qwen3.5:9b")] == [True]


def test_tools_asked_of_models_without_them_are_never_sent_there_and_the_error_says_why(
    proxy: Proxy, healthy: FakeOllama
) -> None:
    """fast-1b (gemma3:1b) and the rest of its chain, tiny (SmolLM2), have no tools: the request reaches neither
    and fails with both reasons (before: Ollama's 400 for gemma, then tiny answered as if no tools were asked)."""
    resp = proxy.chat("fast-1b", f"{uuid.uuid4()} read setup.py", max_tokens=32, tools=TOOLS)
    assert resp.status_code >= 500, resp.text
    message = resp.json()["error"]["message"]
    assert "fast-1b: no tools capability (gemma3:1b)" in message
    assert "tiny: no tools capability (smollm2-135m-instruct)" in message
    assert healthy.chat_requests(ONE_B) == []  # never sent there: Ollama would have said 400
    record = proxy.demotion(resp.headers.get("x-litellm-call-id"))
    assert record["served"] is None and record["failed"] == [
        "fast-1b: no tools capability (gemma3:1b)",
        "tiny: no tools capability (smollm2-135m-instruct)",
    ]


def test_a_tools_request_on_a_tier_that_has_them_is_sent_with_them(proxy: Proxy, healthy: FakeOllama) -> None:
    resp = proxy.chat("fast-3b", f"{uuid.uuid4()} read setup.py", max_tokens=32, tools=TOOLS)
    assert resp.status_code == 200 and resp.headers["x-served-by"] == "fast-3b"
    assert [b.get("tools") for b in sent(healthy, "llama3.2:3b")] == [TOOLS]
