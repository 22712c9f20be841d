"""The fault matrix: each Ollama failure × streaming and not, through the real proxy and the real config.

For each: which tier served, the headers the client sees, the demotion record, the tags LiteLLM's loggers
receive (all three must tell one story), and the keep_alive each hop sent to Ollama. Behaviour pinned here is
LiteLLM 1.106.2's; where it is not what a user would want, the test says so.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ask_cli import stack_config
from harness import fake_ollama as fake_ollama_module
from harness.fake_ollama import FakeOllama
from harness.fake_openai import FakeOpenAI
from harness.stack import CONFIG, Proxy, read_jsonl, running_proxy

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


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllama, fake_llama_swap: FakeOpenAI, tiny_url: str
) -> Iterator[Proxy]:
    """conftest's proxy (the project's config, the same backends) plus the test-only recorder of what LiteLLM's
    loggers receive (harness/log_recorder.py, wired as tests/test_log_tags.py does): one more callback in a copy
    of the yaml, so the tags can be checked against the headers and the demotion log for every fault."""
    tmp = tmp_path_factory.mktemp("fault-matrix")
    config = stack_config.load(CONFIG)
    config["litellm_settings"]["callbacks"].append("harness.log_recorder.handler")
    with running_proxy(
        tmp,
        config=stack_config.write_private(config, tmp / "recorded.yaml"),
        OLLAMA_API_BASE=fake_ollama.url,
        TINY_API_BASE=tiny_url,
        LLAMA_SWAP_API_BASE=fake_llama_swap.url,
        LOG_RECORD_PATH=str(tmp / "logged.jsonl"),
    ) as running:
        yield running


def logged_tags(proxy: Proxy, call_id: str | None, timeout: float = 10.0) -> list[str] | None:
    """The request tags LiteLLM's loggers got for one call's success event; None if none came within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        for line in read_jsonl(Path(proxy.env["LOG_RECORD_PATH"])):
            if line["call_id"] == call_id:
                return list(line["request_tags"] or [])
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def demotion_records(proxy: Proxy, call_id: str | None) -> list[dict]:
    return [r for r in read_jsonl(proxy.env_path("DEMOTION_LOG")) if r["call_id"] == call_id]


def assert_one_story(proxy: Proxy, headers: dict, requested: str = "fast-9b") -> dict | None:
    """The headers the client sees, the demotion record and the tags LiteLLM logs say the same tiers.
    Returns the demotion record (None for an answer from the tier asked for)."""
    call_id = headers.get("x-litellm-call-id")
    served, demoted_from = headers["x-served-by"], headers.get("x-demoted-from")
    tags = logged_tags(proxy, call_id)
    assert tags is not None, f"LiteLLM's loggers got no success event for {call_id}"
    assert [t for t in tags if t.startswith("served-by:")] == [f"served-by:{served}"], tags
    if demoted_from is None:
        assert served == requested
        assert "demoted" not in tags and not any(t.startswith("demoted-from:") for t in tags), tags
        assert demotion_records(proxy, call_id) == []
        return None
    assert demoted_from == requested
    assert {"demoted", f"demoted-from:{demoted_from}"} <= set(tags), tags
    record = proxy.demotion(call_id)
    assert (record["requested"], record["served"]) == (demoted_from, served)
    return record


def assert_no_success_story(proxy: Proxy, call_id: str | None, requested: str, recorded: bool) -> list[dict]:
    """A call that ended in an error: no logger was told an answer was served (no success event, so no tags), and
    the demotion log has one record saying nothing was served (`recorded`) or, when no hop reported a failure,
    none. Returns the records."""
    assert call_id
    assert logged_tags(proxy, call_id, timeout=2.0) is None
    records = demotion_records(proxy, call_id)
    assert [(r["requested"], r["served"]) for r in records] == ([(requested, None)] if recorded else []), records
    return records


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
    record = assert_one_story(proxy, headers)
    assert record is not None and (record["requested"], record["served"]) == ("fast-9b", "fast-3b")
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
    record = assert_one_story(proxy, headers)
    assert record is not None and record["failed"][0].startswith("fast-9b: HTTP 500: Response payload is not completed")
    assert keep_alive_per_hop(healthy) == [(NINE_B, "15m"), (THREE_B, "5m")]


def test_dropped_stream_after_the_first_chunk_ends_with_an_error_event(
    proxy: Proxy, healthy: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pinned: LiteLLM 1.106.2 falls back mid-stream only while nothing has been sent to the client (its router
    re-raises a MidStreamFallbackError once the stream wrapper has yielded generated content). A runner that
    dies after its first tokens reached the client therefore ends the stream with an error event, no fallback,
    and the headers name the 9B that was cut. The client is never handed a splice of two models.

    The fake cuts the connection right after its first two lines, and whether LiteLLM's HTTP client reads those
    lines before it notices the cut is a race: run back to back, 1.106.2 fell back in 3 of 8 tries and ended
    with an error in 5. A real runner's tokens are tens of milliseconds apart, so the test makes the cut come
    well after the first chunk (the fake waits before it aborts) and pins the outcome a user meets."""
    abort = fake_ollama_module._Handler._abort

    def late_abort(handler: fake_ollama_module._Handler) -> None:
        time.sleep(2.0)  # the proxy has sent the 9B's first chunk to the client by now
        abort(handler)

    monkeypatch.setattr(fake_ollama_module._Handler, "_abort", late_abort)
    healthy.set_fault(NINE_B, "drop_mid_stream")
    result = proxy.stream("fast-9b", "drop_mid_stream streamed")

    assert result.status == 200 and not result.done
    assert result.headers["x-served-by"] == "fast-9b" and "x-demoted-from" not in result.headers
    assert result.text.startswith("Hello ") and THREE_B not in result.text
    assert result.error is not None and "Response payload is not completed" in result.error
    assert json.loads(result.error)["message"].startswith("fast-9b stopped mid-answer: ")
    assert keep_alive_per_hop(healthy) == [(NINE_B, "15m")]  # no fallback attempt
    assert_no_success_story(proxy, result.headers.get("x-litellm-call-id"), "fast-9b", recorded=True)


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
    assert_no_success_story(proxy, result.headers.get("x-litellm-call-id"), "fast-9b", recorded=True)


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
        status, headers, message = result.status, dict(result.headers), result.body or (result.error or "")
    else:
        resp = proxy.chat("think-9b", "chain fails")
        status, headers, message = resp.status_code, dict(resp.headers), resp.json()["error"]["message"]
    elapsed = time.monotonic() - started

    assert status == 500  # LiteLLM keeps the status of the tier asked for
    assert "every tier in the chain for 'think-9b' failed" in message
    assert "think-9b: HTTP 500: llama runner process has terminated" in message
    assert "heavy: HTTP 503: gemma-3-27b-it-qat is failing" in message
    assert elapsed < 20, "a dead chain must fail fast, not hang"
    record = [r for r in read_jsonl(proxy.env_path("DEMOTION_LOG")) if r["requested"] == "think-9b"][-1]
    assert record["served"] is None and [f.split(":")[0] for f in record["failed"]] == ["think-9b", "heavy"]
    assert "[failed: think-9b]" in proxy.log_text()
    # nobody claims a tier served it: no X-Served-By, no success event for the loggers
    assert "x-served-by" not in headers and "x-demoted-from" not in headers
    assert headers.get("x-litellm-call-id") == record["call_id"]
    assert assert_no_success_story(proxy, record["call_id"], "think-9b", recorded=True) == [record]


def test_think_9b_turns_ollama_thinking_on_and_fast_9b_off(proxy: Proxy, healthy: FakeOllama) -> None:
    for tier, content in (("think-9b", "think about it"), ("fast-9b", "quick")):
        resp = proxy.chat(tier, content)
        assert resp.status_code == 200
        assert assert_one_story(proxy, dict(resp.headers), requested=tier) is None  # served as asked, no record
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
        records.append(assert_one_story(proxy, dict(resp.headers)))
    assert records[0]["failed"][0].startswith("fast-9b: ")
    assert records[-1]["failed"] == ["fast-9b: skipped, cooling down after recent failures"]
    assert len(healthy.chat_requests(NINE_B)) == 1
