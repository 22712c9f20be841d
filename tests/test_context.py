"""Context accounting counts what the backend will see (plugins/context_window.py), through the real proxy.

Claude Code asks `max_tokens: 32000` of an 8,192-token tier and sends a dozen tool schemas with a short message:
the answer's limit is clamped and said, the tool schemas count, and a prompt that cannot fit escalates with
positive numbers in its reason.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest

from harness.fake_ollama import FakeOllama
from harness.fake_openai import FakeOpenAI
from harness.stack import Proxy
from plugins import context_window

NINE_B = "qwen3.5:9b"
NUM_CTX = 8192
CLAMPED = re.compile(r"^32000 -> (\d+)$")


def tool_schemas(count: int, words: int) -> list[dict[str, Any]]:
    """Tools in the OpenAI shape, each with a long description (Claude Code's are paragraphs)."""
    return [
        {
            "type": "function",
            "function": {
                "name": f"tool_{n}",
                "description": " ".join(f"describe{n} step {i}" for i in range(words)),
                "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
            },
        }
        for n in range(count)
    ]


def anthropic_tools(count: int, words: int) -> list[dict[str, Any]]:
    functions = [t["function"] for t in tool_schemas(count, words)]
    return [{"name": f["name"], "description": f["description"], "input_schema": f["parameters"]} for f in functions]


def sent_num_predict(fake: FakeOllama) -> list[int | None]:
    return [(r.body or {}).get("options", {}).get("num_predict") for r in fake.chat_requests(NINE_B)]


def test_a_max_tokens_over_the_context_is_clamped_to_what_fits_and_said(proxy: Proxy, healthy: FakeOllama) -> None:
    prompt = f"{uuid.uuid4()} " + "summarise this line of the log. " * 300  # ~2,000 tokens: it fits
    resp = proxy.chat("fast-9b", prompt, max_tokens=32000)
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-served-by"] == "fast-9b" and "x-demoted-from" not in resp.headers
    clamped = CLAMPED.match(resp.headers["x-max-tokens-clamped"])
    assert clamped, resp.headers["x-max-tokens-clamped"]
    allowed = int(clamped.group(1))
    assert context_window.MIN_ANSWER_TOKENS <= allowed < NUM_CTX - 2000
    assert sent_num_predict(healthy) == [allowed]  # what Ollama was asked for is what the header says


def test_a_max_tokens_that_fits_is_left_alone(proxy: Proxy, healthy: FakeOllama) -> None:
    resp = proxy.chat("fast-9b", f"{uuid.uuid4()} short", max_tokens=4096)
    assert resp.status_code == 200 and "x-max-tokens-clamped" not in resp.headers
    assert sent_num_predict(healthy) == [4096]


def test_tool_schemas_count_a_short_message_with_big_tools_escalates(
    proxy: Proxy, healthy: FakeOllama, fake_llama_swap: FakeOpenAI
) -> None:
    """12 tool schemas of ~1,000 tokens each and a one-line message: counting message text alone saw ~10 tokens
    and sent it to the 8,192-token model, which would have dropped most of it."""
    fake_llama_swap.reset()
    tools = tool_schemas(12, 250)
    resp = proxy.chat("fast-9b", f"{uuid.uuid4()} say hi", max_tokens=4096, tools=tools)
    assert resp.status_code == 200, resp.text
    assert (resp.headers["x-served-by"], resp.headers["x-demoted-from"]) == ("heavy", "fast-9b")
    assert healthy.chat_requests(NINE_B) == []  # never sent where it would be cut
    assert len(json.dumps(fake_llama_swap.bodies[-1]["tools"])) == len(json.dumps(tools))  # nothing stripped
    (failed,) = proxy.demotion(resp.headers["x-litellm-call-id"])["failed"]
    numbers = re.fullmatch(r"fast-9b: prompt over num_ctx \((\d+) > (\d+) tokens\), escalated", failed)
    assert numbers, failed
    needed, room = map(int, numbers.groups())
    assert needed > room == NUM_CTX - context_window.MIN_ANSWER_TOKENS  # never a negative budget


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_claude_codes_request_on_v1_messages_is_clamped_not_refused(
    proxy: Proxy, healthy: FakeOllama, stream: bool
) -> None:
    """Claude Code's shape: system blocks, tools with input_schema, max_tokens 32000 (it got 400 'Prompt is too
    long' every turn, the log saying 'prompt over num_ctx (2244 > -23808 tokens)')."""
    body = {
        "model": "fast-9b",
        "max_tokens": 32000,
        "stream": stream,
        "system": [{"type": "text", "text": "You are Claude Code. " * 50}],
        "tools": anthropic_tools(4, 100),
        "messages": [{"role": "user", "content": [{"type": "text", "text": f"{uuid.uuid4()} say hi"}]}],
    }
    if stream:
        with proxy.client.stream("POST", "/v1/messages", json=body) as resp:
            assert resp.status_code == 200, resp.read()
            events = [line for line in resp.iter_lines() if line.startswith("data:")]
            headers = resp.headers
        assert any('"message_stop"' in e for e in events)
    else:
        resp = proxy.client.post("/v1/messages", json=body)
        assert resp.status_code == 200, resp.text
        headers = resp.headers
    assert headers["x-served-by"] == "fast-9b"
    clamped = CLAMPED.match(headers["x-max-tokens-clamped"])
    assert clamped, headers["x-max-tokens-clamped"]
    assert sent_num_predict(healthy) == [int(clamped.group(1))]


def test_images_count_at_their_token_cost() -> None:
    text_only = {"messages": [{"role": "user", "content": [{"type": "text", "text": "what is this?"}]}]}
    pixels = "iVBORw0KGgo" * 20_000  # 220 KB of base64: its bytes are not its cost
    with_image = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{pixels}"}},
                ],
            }
        ]
    }
    text, images = context_window.rendered(with_image)
    assert images == 1 and pixels not in text
    plain = context_window.estimate("ollama_chat/qwen3.5:9b", *context_window.rendered(text_only))
    seen = context_window.estimate("ollama_chat/qwen3.5:9b", text, images)
    assert context_window.IMAGE_TOKENS <= seen - plain < context_window.IMAGE_TOKENS + 20


def test_a_schema_with_a_property_named_type_is_counted() -> None:
    """Codex's tool schemas have properties named `type` whose value is a schema (a dict): counting crashed on
    them, and the crash failed the attempt with no reason on record."""
    tool = {
        "type": "function",
        "name": "shell",
        "parameters": {"type": "object", "properties": {"type": {"type": "string", "enum": ["a", "b"]}}},
    }
    text, images = context_window.rendered({"input": "hi", "tools": [tool]})
    assert images == 0 and '"enum": ["a", "b"]' in text
