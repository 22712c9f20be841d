"""The fault matrix: each Ollama failure × streaming and not, through the real proxy and the real config.

For each: which tier served, the headers the client sees, the demotion record, and the keep_alive each
hop sent to Ollama. Behaviour pinned here is LiteLLM 1.106.2's; where it is not what a user would want,
the test says so.
"""

from __future__ import annotations

import time

import pytest

from tests.fake_ollama import FakeOllama
from tests.fake_openai import FakeOpenAI
from tests.stack import Proxy, read_jsonl

NINE_B, THREE_B = "qwen3.5:9b", "llama3.2:3b"

# fault -> the short reason the demotion log gives for fast-9b
REASONS = {
    "http_500": "fast-9b: HTTP 500: llama runner process has terminated: signal: killed",
    "not_found": "fast-9b: not found (404): model 'qwen3.5:9b' not found",
    "drop_before_headers": "fast-9b: connection dropped",
    "stream_error": "fast-9b: HTTP 500: an error was encountered while running the model: unexpected EOF",
    "timeout": "fast-9b: timeout",
    "context_overflow": "fast-9b: context window exceeded",
}


def keep_alive_per_hop(fake: FakeOllama) -> list[tuple[str, object]]:
    return [(r.model, (r.body or {}).get("keep_alive")) for r in fake.chat_requests()]


def request(proxy: Proxy, stream: bool, fault: str) -> tuple[int, dict, str]:
    """One fast-9b request; returns status, lower-cased headers and the answer text."""
    # The tier's own timeouts are 60 s / 30 s; a client may shorten them per request, as this one does.
    extra = {"timeout": 2, "stream_timeout": 2} if fault == "timeout" else {}
    if stream:
        result = proxy.stream("fast-9b", f"{fault} streamed", **extra)
        assert result.done and result.error is None, result.error
        return result.status, dict(result.headers), result.text
    resp = proxy.chat("fast-9b", f"{fault} whole", **extra)
    return resp.status_code, dict(resp.headers), resp.json()["choices"][0]["message"]["content"]


# An in-stream error line is pinned separately: LiteLLM 1.106.2 does not fall back on it.
CASES = [(f, s) for f in REASONS for s in (False, True) if (f, s) != ("stream_error", True)]


@pytest.mark.parametrize(("fault", "stream"), CASES, ids=[f"{f}-{'streamed' if s else 'whole'}" for f, s in CASES])
def test_fast_9b_fault_demotes_to_fast_3b(proxy: Proxy, healthy: FakeOllama, fault: str, stream: bool) -> None:
    healthy.set_fault(NINE_B, fault, delay_s=6)
    status, headers, text = request(proxy, stream, fault)

    assert status == 200
    assert headers["x-served-by"] == "fast-3b"
    assert headers["x-demoted-from"] == "fast-9b"
    assert text.startswith(f"Hello from {THREE_B}")
    record = proxy.demotion(headers.get("x-litellm-call-id"))
    assert record["requested"] == "fast-9b" and record["served"] == "fast-3b"
    assert record["failed"] == [REASONS[fault]]
    assert record["hops"] == 1 and record["stream"] is stream
    assert keep_alive_per_hop(healthy) == [(NINE_B, "15m"), (THREE_B, "5m")]
    assert f"[degraded: fast-9b → fast-3b] ({REASONS[fault]})" in proxy.log_text()


def test_dropped_response_demotes(proxy: Proxy, healthy: FakeOllama) -> None:
    """A non-streaming response cut short: the answer comes whole from fast-3b."""
    healthy.set_fault(NINE_B, "drop_mid_stream")
    status, headers, text = request(proxy, False, "drop_mid_stream")

    assert (status, headers["x-served-by"], headers["x-demoted-from"]) == (200, "fast-3b", "fast-9b")
    assert text.startswith(f"Hello from {THREE_B}")
    record = proxy.demotion(headers.get("x-litellm-call-id"))
    assert record["failed"][0].startswith("fast-9b: HTTP 500: Response payload is not completed")
    assert keep_alive_per_hop(healthy) == [(NINE_B, "15m"), (THREE_B, "5m")]


def test_dropped_stream_falls_back_or_fails_honestly(proxy: Proxy, healthy: FakeOllama) -> None:
    """Pinned, and racy in LiteLLM 1.106.2: a stream cut after its first lines falls back mid-stream if the
    proxy has not yet sent a chunk to the client, and otherwise ends with an error event. Either way the
    client is never handed a splice of two models under one X-Served-By."""
    healthy.set_fault(NINE_B, "drop_mid_stream")
    result = proxy.stream("fast-9b", "drop_mid_stream streamed")
    assert result.status == 200
    if result.done:  # fell back before the first chunk left the proxy
        assert (result.headers["x-served-by"], result.headers["x-demoted-from"]) == ("fast-3b", "fast-9b")
        assert result.text.startswith(f"Hello from {THREE_B}")
        record = proxy.demotion(result.headers.get("x-litellm-call-id"))
        assert record["failed"] == ["fast-9b: failed after the response started (mid-stream)"]
    else:  # the 9B's first words were already out: the stream says it broke
        assert result.headers["x-served-by"] == "fast-9b" and "x-demoted-from" not in result.headers
        assert THREE_B not in result.text
        assert result.error is not None and "Response payload is not completed" in result.error
    assert keep_alive_per_hop(healthy)[0] == (NINE_B, "15m")


def test_in_stream_error_line_ends_the_stream_without_fallback(proxy: Proxy, healthy: FakeOllama) -> None:
    """Pinned: LiteLLM 1.106.2 turns Ollama's in-stream `{"error": ...}` into an error event and does not
    fall back (1.109 does). The client is told: the stream says which tier failed and ends with the error."""
    healthy.set_fault(NINE_B, "stream_error")
    result = proxy.stream("fast-9b", "in-stream error")
    assert result.status == 200
    assert result.headers["x-served-by"] == "fast-9b" and "x-demoted-from" not in result.headers
    assert result.error is not None and "an error was encountered while running the model" in result.error
    assert not result.done
    assert keep_alive_per_hop(healthy) == [(NINE_B, "15m")]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_whole_chain_failure_names_every_tier(
    proxy: Proxy, healthy: FakeOllama, fake_llama_swap: FakeOpenAI, stream: bool
) -> None:
    """think-9b → heavy: the 9B's runner dies and llama-swap fails too. A clear error, quickly."""
    healthy.set_fault(NINE_B, "http_500")
    fake_llama_swap.fail_with = 503
    started = time.monotonic()
    if stream:
        result = proxy.stream("think-9b", "chain fails")
        status, message = result.status, result.body or (result.error or "")
    else:
        resp = proxy.chat("think-9b", "chain fails")
        status, message = resp.status_code, resp.json()["error"]["message"]
    elapsed = time.monotonic() - started

    assert status == 500  # LiteLLM keeps the status of the tier asked for
    assert "every tier in the chain for 'think-9b' failed" in message
    assert "think-9b: HTTP 500: llama runner process has terminated" in message
    assert "heavy: HTTP 503: gemma-3-27b-it-qat is failing" in message
    assert elapsed < 20, "a dead chain must fail fast, not hang"
    record = [r for r in read_jsonl(proxy.env_path("DEMOTION_LOG")) if r["requested"] == "think-9b"][-1]
    assert record["served"] is None and [f.split(":")[0] for f in record["failed"]] == ["think-9b", "heavy"]
    assert "[failed: think-9b]" in proxy.log_text()


def test_think_9b_turns_ollama_thinking_on_and_fast_9b_off(proxy: Proxy, healthy: FakeOllama) -> None:
    assert proxy.chat("think-9b", "think about it").status_code == 200
    assert proxy.chat("fast-9b", "quick").status_code == 200
    bodies = [r.body or {} for r in healthy.chat_requests(NINE_B)]
    assert [b.get("think") for b in bodies] == [True, False]
    assert all(b["options"]["num_ctx"] == 8192 for b in bodies)  # same runner for both tiers


def test_cooldown_is_reported_not_hidden(proxy: Proxy, healthy: FakeOllama) -> None:
    """A 404 (model not pulled) puts fast-9b in LiteLLM's cooldown at once: the next calls skip it
    without a request, and the log says why instead of nothing."""
    healthy.set_fault(NINE_B, "not_found")
    records = []
    for i in range(3):
        resp = proxy.chat("fast-9b", f"cooldown {i}")
        assert resp.headers["x-served-by"] == "fast-3b"
        records.append(proxy.demotion(resp.headers.get("x-litellm-call-id")))
    assert records[0]["failed"][0].startswith("fast-9b: ")
    assert records[-1]["failed"] == ["fast-9b: skipped, cooling down after recent failures"]
    assert len(healthy.chat_requests(NINE_B)) == 1
