"""The council (plugins/council.py) through the real proxy and the real config, fake Ollama behind it.

Members are two `fast-9b` calls at temperature 0.7, the chairman `think-9b`; all three are qwen3.5:9b in the
fake, so a fault on that tag reaches every part (with `times`, only the first requests).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from harness.fake_ollama import FakeOllama, Recorded
from harness.fake_openai import FakeOpenAI
from harness.stack import Proxy
from tests.test_ask_cli import ask, telemetry_lines

NINE_B, THREE_B = "qwen3.5:9b", "llama3.2:3b"
MODEL_NAMES = (
    "fast-9b",
    "fast-3b",
    "fast-1b",
    "think-9b",
    "coder-30b",
    "heavy",
    "tiny",
    NINE_B,
    THREE_B,
    "gemma3:1b",
    "qwen3-coder:30b",
    "qwen",
    "llama",
    "gemma",
)


@pytest.fixture
def council(proxy: Proxy, healthy: FakeOllama) -> FakeOllama:
    """A healthy stack whose council is out of LiteLLM's cooldown (a failed council call may put it there)."""
    deadline = time.monotonic() + 30
    while proxy.chat("council", "ready?").status_code != 200:
        assert time.monotonic() < deadline, "council stayed in cooldown"
        time.sleep(0.5)
    healthy.reset()
    return healthy


def split(requests: list[Recorded]) -> tuple[list[Recorded], list[Recorded]]:
    """Members (think: false, fast-9b) and chairmen (think: true, think-9b) among the 9B's requests."""
    members = [r for r in requests if (r.body or {}).get("think") is False]
    chairmen = [r for r in requests if (r.body or {}).get("think") is True]
    return members, chairmen


def prompt_of(request: Recorded) -> str:
    return "\n".join(str(m.get("content")) for m in (request.body or {}).get("messages", []))


def council_headers(headers: object) -> dict[str, str]:
    return {k.lower(): v for k, v in dict(headers).items() if k.lower().startswith("x-council-")}  # type: ignore[call-overload]


def test_members_overlap_at_their_temperature_and_the_chairman_sees_no_names(proxy: Proxy, council: FakeOllama) -> None:
    council.set_fault(NINE_B, "slow", delay_s=1.0)
    started = time.monotonic()
    resp = proxy.chat("council", "is the sky blue?")
    elapsed = time.monotonic() - started

    assert resp.status_code == 200, resp.text
    members, chairmen = split(council.chat_requests(NINE_B))
    assert len(members) == 2 and len(chairmen) == 1
    a, b = members
    # Sent at once; Ollama gives qwen3.5 one slot, so the second member waits for the first (bench/council.py)
    assert max(a.ts_start, b.ts_start) < min(a.ts_end or 0, b.ts_end or 0), "the members were not sent at once"
    slot_waits = [e for e in council.events() if e["event"] == "queued" and e.get("waiting_for") == "slot"]
    assert [e["model"] for e in slot_waits] == [NINE_B], slot_waits
    assert elapsed >= 3 * 1.0  # two members one after the other, then the chairman: nothing is served twice at once
    assert [(m.body or {})["options"]["temperature"] for m in members] == [0.7, 0.7]
    assert all(m.body["messages"][-1]["content"] == "is the sky blue?" for m in members)  # type: ignore[index]

    [chairman] = chairmen
    assert chairman.ts_start >= max(a.ts_end or 0, b.ts_end or 0)
    prompt = prompt_of(chairman)
    assert "Response A" in prompt and "Response B" in prompt and "is the sky blue?" in prompt
    answers = [
        m["answer"] for m in resp.json()["choices"][0]["message"]["provider_specific_fields"]["council"]["members"]
    ]
    assert all(ans and ans in prompt for ans in answers)
    blind = prompt
    for ans in answers:  # the fake's answers name their own model: cut them out, then look for names
        blind = blind.replace(ans, "")
    assert not [name for name in MODEL_NAMES if name in blind]

    assert resp.json()["choices"][0]["message"]["content"] == f"Hello from {NINE_B}. You sent {len(prompt)} characters."
    assert resp.headers["x-served-by"] == "council" and "x-demoted-from" not in resp.headers
    assert council_headers(resp.headers) == {"x-council-members": "fast-9b,fast-9b", "x-council-chairman": "think-9b"}
    assert not [k for k in resp.headers if k.lower().startswith("llm_provider-x-council")]


def test_streaming_sends_only_the_chairmans_tokens(proxy: Proxy, council: FakeOllama) -> None:
    council.set_fault(NINE_B, "slow", delay_s=0.5)
    result = proxy.stream("council", "stream the council")

    assert result.status == 200 and result.done and result.error is None
    _, [chairman] = split(council.chat_requests(NINE_B))
    assert chairman.body["stream"] is True  # type: ignore[index]
    assert result.text == f"Hello from {NINE_B}. You sent {len(prompt_of(chairman))} characters."
    assert len([e for e in result.events if (e["choices"] or [{}])[0].get("delta", {}).get("content")]) > 1
    first = result.events[0]["choices"][0]["delta"]
    assert [m["served_by"] for m in first["provider_specific_fields"]["council"]["members"]] == ["fast-9b"] * 2
    assert result.headers["x-served-by"] == "council"
    assert council_headers(result.headers) == {"x-council-members": "fast-9b,fast-9b", "x-council-chairman": "think-9b"}


def test_never_cached(proxy: Proxy, council: FakeOllama) -> None:
    first = proxy.chat("council", "the same council question")
    second = proxy.chat("council", "the same council question")

    assert first.status_code == second.status_code == 200
    members, chairmen = split(council.chat_requests(NINE_B))
    assert (len(members), len(chairmen)) == (4, 2)
    assert "x-litellm-cache-key" not in second.headers


def test_one_member_failing_leaves_the_chairman_the_rest(proxy: Proxy, council: FakeOllama) -> None:
    council.set_fault(NINE_B, "http_500", times=1)
    resp = proxy.chat("council", "one member down", disable_fallbacks=True)

    assert resp.status_code == 200, resp.text
    assert council_headers(resp.headers) == {
        "x-council-members": "fast-9b",
        "x-council-chairman": "think-9b",
        "x-council-failed": "1",
    }
    _, [chairman] = split(council.chat_requests(NINE_B))
    prompt = prompt_of(chairman)
    assert "Response A" in prompt and "Response B" not in prompt
    members = resp.json()["choices"][0]["message"]["provider_specific_fields"]["council"]["members"]
    assert sorted(bool(m["error"]) for m in members) == [False, True]
    assert any("llama runner process has terminated" in (m["error"] or "") for m in members)


def test_every_member_failing_is_a_clear_error(proxy: Proxy, council: FakeOllama) -> None:
    council.set_fault(NINE_B, "http_500", times=2)
    resp = proxy.chat("council", "all members down", disable_fallbacks=True)

    assert resp.status_code == 503
    message = resp.json()["error"]["message"]
    assert message.startswith("council: every member failed (fast-9b: HTTP 500: llama runner process")
    assert message.count("fast-9b: HTTP 500") == 2
    assert split(council.chat_requests(NINE_B))[1] == []  # no chairman


def test_demoted_parts_are_said(proxy: Proxy, council: FakeOllama, fake_llama_swap: FakeOpenAI) -> None:
    council.set_fault(NINE_B, "http_500")
    resp = proxy.chat("council", "the 9B is down")

    assert resp.status_code == 200, resp.text
    assert resp.headers["x-served-by"] == "council"
    assert council_headers(resp.headers) == {
        "x-council-members": "fast-3b,fast-3b",
        "x-council-chairman": "heavy",
        "x-council-degraded": "fast-9b->fast-3b,fast-9b->fast-3b,think-9b->heavy",
    }
    assert resp.json()["choices"][0]["message"]["content"] == "Hello from gemma-3-27b-it-qat."
    assert "Response A" in fake_llama_swap.bodies[-1]["messages"][-1]["content"]


def test_ask_council_says_it_was_degraded(proxy: Proxy, council: FakeOllama, tmp_path: Path) -> None:
    council.set_fault(NINE_B, "http_500")
    result = ask("--council", "council via ask", proxy=proxy)
    as_json = ask("--council", "--json", "council via ask", proxy=proxy)

    assert result.returncode == 0, result.stderr
    assert result.stderr.decode() == ("[degraded: council (fast-9b → fast-3b, fast-9b → fast-3b, think-9b → heavy)]\n")
    assert result.stdout.decode().split() == ["Hello", "from", "gemma-3-27b-it-qat."]  # the chairman's fallback
    assert json.loads(as_json.stdout)["demoted"] is True
    assert [(e["model"], e["demoted"]) for e in telemetry_lines(tmp_path)] == [("council", True)] * 2


def test_ask_council_json_has_the_members_answers(proxy: Proxy, council: FakeOllama) -> None:
    result = ask("--council", "--json", "council as json", proxy=proxy)

    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["model"] == out["served_by"] == "council" and out["demoted"] is False
    members = out["council"]["members"]
    assert [(m["label"], m["served_by"]) for m in members] == [("A", "fast-9b"), ("B", "fast-9b")]
    assert all(m["answer"].startswith(f"Hello from {NINE_B}") for m in members)
    assert out["answer"].startswith(f"Hello from {NINE_B}")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_chairman_chain_failing_is_a_clear_error(
    proxy: Proxy, council: FakeOllama, fake_llama_swap: FakeOpenAI, stream: bool
) -> None:
    council.set_fault(NINE_B, "http_500")  # members fall back to fast-3b; the chairman to heavy, which fails too
    fake_llama_swap.fail_with = 500
    if stream:
        result = proxy.stream("council", "chairman down, streamed")
        status, body = result.status, result.body or json.dumps(result.events)
    else:
        resp = proxy.chat("council", "chairman down")
        status, body = resp.status_code, resp.text
    assert status >= 500, body
    assert "council: the chairman think-9b failed" in body
    assert len(council.chat_requests(THREE_B)) == 2


def test_deadline_is_a_clear_error_not_a_hang(proxy: Proxy, council: FakeOllama) -> None:
    council.set_fault(NINE_B, "slow", delay_s=5)
    started = time.monotonic()
    resp = proxy.chat("council", "too slow", timeout=1)  # a request's timeout shortens the yaml's deadline_s

    assert time.monotonic() - started < 3
    assert resp.status_code == 504, resp.text
    assert resp.json()["error"]["message"] == "council: deadline of 1 s passed while the members answered"


def test_ask_council_asks_afresh_every_time(proxy: Proxy, council: FakeOllama) -> None:
    first = ask("--council", "--json", "the same question twice", proxy=proxy)
    second = ask("--council", "--json", "the same question twice", proxy=proxy)

    assert first.returncode == second.returncode == 0, second.stderr
    assert [json.loads(r.stdout)["cache_hit"] for r in (first, second)] == [False, False]
    members, chairmen = split(council.chat_requests(NINE_B))
    assert (len(members), len(chairmen)) == (4, 2)


def test_a_demoted_members_record_says_why_and_how_long(proxy: Proxy, council: FakeOllama) -> None:
    """Each member's hops share its own call id: its record names the hop that failed and its latency (inner
    calls without one got a fresh id per hop: 'fast-9b: skipped', latency null)."""
    from harness.stack import read_jsonl

    before = len(read_jsonl(proxy.env_path("DEMOTION_LOG")))
    council.set_fault(NINE_B, "http_500", times=1)
    assert proxy.chat("council", "one member demoted").status_code == 200
    deadline = time.monotonic() + 10
    while not (records := read_jsonl(proxy.env_path("DEMOTION_LOG"))[before:]):
        assert time.monotonic() < deadline, "no record for the demoted member"
        time.sleep(0.05)
    [member] = records
    assert (member["requested"], member["served"]) == ("fast-9b", "fast-3b")
    assert member["failed"] == ["fast-9b: HTTP 500: llama runner process has terminated: signal: killed"]
    assert isinstance(member["latency_s"], float) and member["latency_s"] > 0


def test_a_streamed_council_whose_members_all_fail_is_on_record(proxy: Proxy, council: FakeOllama) -> None:
    """Nothing was sent when it failed: the record says the members' reasons, not 'mid-answer'."""
    council.set_fault(NINE_B, "http_500", times=2)
    result = proxy.stream("council", "streamed, all members down", disable_fallbacks=True)
    assert result.status == 503 and not result.events
    record = proxy.demotion(result.headers.get("x-litellm-call-id"))
    assert (record["requested"], record["served"], record["stream"]) == ("council", None, True)
    [why] = record["failed"]
    assert why.startswith("council: every member failed (fast-9b: HTTP 500: llama runner process")
    assert "mid-answer" not in why
