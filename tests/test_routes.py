"""Every route a client uses says the tier that answered, in its body as in its headers, and writes the same
demotion record for the same fault: clients that never show headers (llm, aider, OpenCode, Claude Code) show or
log the body's `model`.

Route × streamed or not × healthy, demoted and (where the route caches) a cache hit, through the real proxy and
the project's config.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from harness.fake_ollama import FakeOllama
from harness.fake_openai import FakeOpenAI
from harness.stack import Proxy

NINE_B = "qwen3.5:9b"
ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/messages", "/v1/responses")
KILLED = "fast-9b: HTTP 500: llama runner process has terminated: signal: killed"


def body_for(route: str, prompt: str, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "fast-9b", "stream": stream}
    if route == "/v1/completions":
        return {**body, "prompt": prompt, "max_tokens": 8}
    if route == "/v1/responses":
        return {**body, "input": prompt, "max_output_tokens": 16}
    return {**body, "messages": [{"role": "user", "content": prompt}], "max_tokens": 8}


def models_in_stream(route: str, lines: list[str]) -> list[str]:
    """Every `model` a stream's events carry (a /v1/messages stream names it once, in message_start)."""
    found = []
    for line in lines:
        if not line.startswith("data:") or line[5:].strip() == "[DONE]":
            continue
        event = json.loads(line[5:])
        holder = event.get("message") if route == "/v1/messages" else event.get("response", event)
        if isinstance(holder, dict) and "model" in holder:
            found.append(holder["model"])
    return found


def ask(proxy: Proxy, route: str, prompt: str, stream: bool) -> tuple[httpx.Headers, list[str]]:
    """One request; the response headers and every `model` its body (or its stream's events) named."""
    body = body_for(route, prompt, stream)
    if not stream:
        resp = proxy.client.post(route, json=body)
        assert resp.status_code == 200, resp.text
        return resp.headers, [resp.json()["model"]]
    with proxy.client.stream("POST", route, json=body) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        return resp.headers, models_in_stream(route, list(resp.iter_lines()))


CASES = [(route, stream) for route in ROUTES for stream in (False, True)]
IDS = [f"{route.removeprefix('/v1/').replace('/', '-')}-{'streamed' if stream else 'whole'}" for route, stream in CASES]


@pytest.mark.parametrize(("route", "stream"), CASES, ids=IDS)
def test_the_body_names_the_tier_that_answered(proxy: Proxy, healthy: FakeOllama, route: str, stream: bool) -> None:
    headers, models = ask(proxy, route, f"healthy {uuid.uuid4()}", stream)
    assert headers["x-served-by"] == "fast-9b" and models and set(models) == {"fast-9b"}

    healthy.set_fault(NINE_B, "http_500")
    headers, models = ask(proxy, route, f"demoted {uuid.uuid4()}", stream)
    assert (headers["x-served-by"], headers["x-demoted-from"]) == ("fast-3b", "fast-9b")
    assert models and set(models) == {"fast-3b"}  # never the backend's tag, never the tier asked for
    record = proxy.demotion(headers.get("x-litellm-call-id"))
    assert (record["requested"], record["served"], record["failed"]) == ("fast-9b", "fast-3b", [KILLED])
    assert record["hops"] == 1 and record["stream"] is stream


CACHED = [(route, stream) for route, stream in CASES if (route, stream) != ("/v1/messages", True)]  # see below


@pytest.mark.parametrize(("route", "stream"), CACHED, ids=[i for c, i in zip(CASES, IDS, strict=True) if c in CACHED])
def test_a_cache_hit_names_the_tier_that_made_the_answer(
    proxy: Proxy, healthy: FakeOllama, route: str, stream: bool
) -> None:
    """A demoted answer is never cached (README): the hit is of a healthy one, stored as the backend said it."""
    prompt = f"cached {uuid.uuid4()}"
    ask(proxy, route, prompt, stream)
    sent = len(healthy.chat_requests())
    headers, models = ask(proxy, route, prompt, stream)
    assert len(healthy.chat_requests()) == sent, "the second request reached Ollama: not a cache hit"
    assert headers["x-served-by"] == "fast-9b" and models and set(models) == {"fast-9b"}


def test_a_messages_stream_is_never_answered_with_a_chat_completions_json(proxy: Proxy, healthy: FakeOllama) -> None:
    """The same prompt streamed through /v1/chat/completions first: LiteLLM's cache would answer the Anthropic
    stream with the chat completion's JSON, which no Anthropic client can read."""
    prompt = f"both routes {uuid.uuid4()}"
    ask(proxy, "/v1/chat/completions", prompt, stream=True)
    headers, models = ask(proxy, "/v1/messages", prompt, stream=True)  # asserts text/event-stream
    assert models == ["fast-9b"] and not headers.get("x-litellm-cache-key")


def test_every_completions_chunk_carries_text(proxy: Proxy, healthy: FakeOllama) -> None:
    """`llm` joins the chunks' texts: a chunk without one ('can only concatenate str') breaks it."""
    with proxy.client.stream("POST", "/v1/completions", json=body_for("/v1/completions", "hi", True)) as resp:
        events = [
            json.loads(line[5:]) for line in resp.iter_lines() if line.startswith("data:") and "[DONE]" not in line
        ]
    choices = [choice for event in events for choice in event["choices"]]
    assert choices and all(isinstance(choice.get("text"), str) for choice in choices), choices
    assert choices[-1]["finish_reason"] is not None and "".join(c["text"] for c in choices).startswith("Hello from")


def test_an_embedding_asked_of_a_chat_tier_is_one_immediate_400(proxy: Proxy, healthy: FakeOllama) -> None:
    """No walk down fast-9b's chain (1.5 s, four failures and a record): the words say which tier to ask."""
    from harness.stack import read_jsonl

    resp = proxy.client.post("/v1/embeddings", json={"model": "fast-9b", "input": "hi"})
    assert resp.status_code == 400
    assert resp.json()["error"]["message"] == "fast-9b does not serve embeddings: ask for embed"
    assert healthy.requests == [] or all(r.path != "/api/embed" for r in healthy.requests)
    call_id = resp.headers.get("x-litellm-call-id")
    assert not [r for r in read_jsonl(proxy.env_path("DEMOTION_LOG")) if r["call_id"] == call_id]


def test_the_embed_tier_answers_embeddings_from_ollama_with_the_headers(proxy: Proxy, healthy: FakeOllama) -> None:
    texts = [f"the sky is blue {uuid.uuid4()}", "the grass is green"]
    resp = proxy.client.post("/v1/embeddings", json={"model": "embed", "input": texts})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-served-by"] == "embed" and "x-demoted-from" not in resp.headers
    vectors = [d["embedding"] for d in resp.json()["data"]]
    assert len(vectors) == 2 and vectors[0] != vectors[1]
    assert all(abs(sum(v * v for v in vec) - 1) < 1e-3 for vec in vectors)  # Ollama normalizes them
    again = proxy.client.post("/v1/embeddings", json={"model": "embed", "input": texts[1:]})
    assert [d["embedding"] for d in again.json()["data"]] == vectors[1:]  # the same text, the same vector
    sent = [r.body or {} for r in healthy.requests if r.path == "/api/embed"]
    assert sent and all((b.get("model"), b.get("keep_alive")) == ("nomic-embed-text", "5m") for b in sent)


def test_a_chat_asked_of_the_embed_tier_is_one_immediate_400(proxy: Proxy, healthy: FakeOllama) -> None:
    resp = proxy.chat("embed", "hi")
    assert resp.status_code == 400
    assert resp.json()["error"]["message"].startswith("embed serves embeddings only (POST /v1/embeddings)")
    assert healthy.chat_requests() == []  # Ollama would have said '"nomic-embed-text" does not support chat'


@pytest.mark.parametrize("route", ["/v1/messages", "/v1/responses"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_claude_code_and_codex_routes_reach_an_openai_compatible_backend(
    proxy: Proxy, healthy: FakeOllama, fake_llama_swap: FakeOpenAI, route: str, stream: bool
) -> None:
    """/v1/messages (Claude Code) and /v1/responses (Codex) to `heavy` (llama-swap): LiteLLM 1.106.2 called the
    backend's /v1/responses, which llama.cpp's server does not serve (404), so every turn escalated to heavy
    failed over to think-9b or failed. They reach its chat endpoint, and nothing of ours goes with them."""
    fake_llama_swap.reset()
    body = {**body_for(route, "hi", stream), "model": "heavy"}
    with proxy.client.stream("POST", route, json=body) as resp:
        assert resp.status_code == 200, resp.read()
        text = resp.read().decode()
    assert resp.headers["x-served-by"] == "heavy" and "x-demoted-from" not in resp.headers
    assert "gemma-3-27b-it-qat" in text  # the stand-in's answer names it
    [sent] = fake_llama_swap.bodies
    assert "messages" in sent and "use_chat_completions_api" not in sent  # its chat endpoint, our switch kept
