"""The fake Ollama against Ollama's documented and source-observed behaviour, over plain http.client.

Why: every proxy test downstream trusts this fake to fail the way Ollama fails; these tests pin that.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest

from harness.fake_ollama import (
    DEFAULT_MODELS,
    THINKING_TEXT,
    FakeOllama,
    FakeOllamaControl,
    parse_keep_alive,
    reply_text,
)

FINAL_FIELDS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


def call(
    fake: FakeOllama, method: str, path: str, body: object = None, timeout: float = 5.0
) -> tuple[int, http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body)
        conn.request(method, path, payload, {"Content-Type": "application/json"} if payload else {})
        resp = conn.getresponse()
        return resp.status, resp, resp.read()
    finally:
        conn.close()


def chat(fake: FakeOllama, **body: object) -> tuple[int, http.client.HTTPResponse, bytes]:
    body.setdefault("messages", HI)
    return call(fake, "POST", "/api/chat", body)


def ndjson(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def content_of(lines: list[dict]) -> str:
    return "".join(line["message"]["content"] for line in lines)


def ps_expiry(fake: FakeOllama, name: str) -> float | None:
    _, _, data = call(fake, "GET", "/api/ps")
    for row in json.loads(data)["models"]:
        if row["name"] == name:
            return datetime.fromisoformat(row["expires_at"]).timestamp()
    return None


def unloaded_soon(fake: FakeOllama, name: str, within_s: float = 2.0) -> bool:
    """Whether /api/ps stops listing `name` shortly: like Ollama, the unload follows the response's last byte."""
    deadline = time.monotonic() + within_s
    while ps_expiry(fake, name) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# -- the plain endpoints --------------------------------------------------------------------------------


def test_root_version_and_unknown_paths(fake: FakeOllama) -> None:
    status, resp, data = call(fake, "GET", "/")
    assert (status, data) == (200, b"Ollama is running")
    status, _, data = call(fake, "GET", "/api/version")
    assert status == 200 and json.loads(data)["version"].startswith("0.")
    status, resp, data = call(fake, "GET", "/api/nothing")
    assert (status, data) == (404, b"404 page not found")
    assert resp.getheader("Content-Type").startswith("text/plain")
    status, _, data = call(fake, "GET", "/api/chat")
    assert (status, data) == (405, b"405 method not allowed")


def test_tags_lists_the_pulled_models_with_details(fake: FakeOllama) -> None:
    status, _, data = call(fake, "GET", "/api/tags")
    models = json.loads(data)["models"]
    assert status == 200
    assert [m["name"] for m in models] == list(DEFAULT_MODELS)
    sizes = {m["name"]: m["size"] for m in models}
    assert 6.0e9 < sizes["qwen3.5:9b"] < 7.0e9 and 18e9 < sizes["qwen3-coder:30b"] < 19e9
    assert 1.8e9 < sizes["llama3.2:3b"] < 2.2e9 and 0.7e9 < sizes["gemma3:1b"] < 0.9e9
    for m in models:
        assert m["model"] == m["name"] and len(m["digest"]) == 64
        assert datetime.fromisoformat(m["modified_at"]).tzinfo is not None
        assert set(m["details"]) >= {"format", "family", "families", "parameter_size", "quantization_level"}


def test_show_reports_context_length_and_capabilities(fake: FakeOllama) -> None:
    status, _, data = call(fake, "POST", "/api/show", {"model": "qwen3.5:9b"})
    show = json.loads(data)
    assert status == 200
    arch = show["model_info"]["general.architecture"]
    assert show["model_info"][f"{arch}.context_length"] == 262_144
    assert "thinking" in show["capabilities"] and "completion" in show["capabilities"]
    # LiteLLM asks with the legacy "name" field and reads tool support from the template.
    status, _, data = call(fake, "POST", "/api/show", {"name": "gemma3:1b"})
    assert status == 200 and json.loads(data)["capabilities"] == ["completion"]
    status, _, data = call(fake, "POST", "/api/show", {"model": "mistral:7b"})
    assert (status, json.loads(data)) == (404, {"error": "model 'mistral:7b' not found"})


# -- /api/chat --------------------------------------------------------------------------------------------


def test_chat_streams_ndjson_by_default(fake: FakeOllama) -> None:
    status, resp, data = chat(fake, model="llama3.2:3b")
    assert status == 200
    assert resp.getheader("Content-Type") == "application/x-ndjson"
    assert resp.getheader("Transfer-Encoding") == "chunked"
    lines = ndjson(data)
    assert len(lines) > 2
    assert all(line["done"] is False for line in lines[:-1])
    assert all(line["model"] == "llama3.2:3b" and line["message"]["role"] == "assistant" for line in lines)
    final = lines[-1]
    assert final["done"] is True and final["done_reason"] == "stop" and final["message"]["content"] == ""
    assert all(isinstance(final[f], int) and final[f] > 0 for f in FINAL_FIELDS)
    assert content_of(lines) == reply_text("llama3.2:3b", 2)
    assert final["eval_count"] == len(lines) - 1
    assert datetime.fromisoformat(final["created_at"]).tzinfo is not None


def test_chat_stream_false_gives_one_object(fake: FakeOllama) -> None:
    status, resp, data = chat(fake, model="gemma3:1b", stream=False)
    obj = json.loads(data)
    assert status == 200 and resp.getheader("Content-Length") == str(len(data))
    assert resp.getheader("Content-Type").startswith("application/json")
    assert obj["message"] == {"role": "assistant", "content": reply_text("gemma3:1b", 2)}
    assert obj["done"] is True and obj["done_reason"] == "stop"
    assert all(f in obj for f in FINAL_FIELDS)


def test_not_pulled_model_is_404_with_ollamas_text(fake: FakeOllama) -> None:
    status, resp, data = chat(fake, model="mistral:7b")
    assert status == 404 and resp.getheader("Content-Type").startswith("application/json")
    assert json.loads(data) == {"error": "model 'mistral:7b' not found"}


def test_think_true_streams_thinking_before_content_and_is_recorded(fake: FakeOllama) -> None:
    _, _, data = chat(fake, model="qwen3.5:9b", think=True)
    lines = ndjson(data)[:-1]
    kinds = ["thinking" if line["message"].get("thinking") else "content" for line in lines]
    assert kinds == sorted(kinds, key=lambda k: k != "thinking") and kinds[0] == "thinking"
    assert all(line["message"]["content"] == "" for line in lines if "thinking" in line["message"])
    assert "".join(line["message"].get("thinking", "") for line in lines) == THINKING_TEXT
    assert content_of(lines) == reply_text("qwen3.5:9b", 2)
    assert fake.chat_requests("qwen3.5:9b")[0].body["think"] is True


def test_a_thinking_model_thinks_unless_told_not_to(fake: FakeOllama) -> None:
    """Ollama sets think=true itself when a thinking-capable model gets no `think`."""
    _, _, data = chat(fake, model="qwen3.5:9b", stream=False)
    assert json.loads(data)["message"]["thinking"] == THINKING_TEXT
    _, _, data = chat(fake, model="qwen3.5:9b", stream=False, think=False)
    assert "thinking" not in json.loads(data)["message"]


def test_think_or_tools_on_a_model_without_them_is_400(fake: FakeOllama) -> None:
    status, _, data = chat(fake, model="gemma3:1b", think=True)
    assert (status, json.loads(data)) == (400, {"error": '"gemma3:1b" does not support thinking'})
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    status, _, data = chat(fake, model="gemma3:1b", tools=tools)
    assert status == 400
    assert json.loads(data) == {"error": "registry.ollama.ai/library/gemma3:1b does not support tools"}


def test_num_predict_caps_the_pieces(fake: FakeOllama) -> None:
    _, _, data = chat(fake, model="llama3.2:3b", options={"num_predict": 3})
    lines = ndjson(data)
    assert len(lines) == 4 and lines[-1]["eval_count"] == 3 and lines[-1]["done_reason"] == "length"
    assert content_of(lines) == "Hello from llama3.2:3b. "


def test_empty_messages_load_and_keep_alive_zero_unloads(fake: FakeOllama) -> None:
    status, _, data = chat(fake, model="gemma3:1b", messages=[])
    assert status == 200 and json.loads(data)["done_reason"] == "load"
    assert ps_expiry(fake, "gemma3:1b") is not None
    _, _, data = chat(fake, model="gemma3:1b", messages=[], keep_alive=0)
    assert json.loads(data)["done_reason"] == "unload"  # answered at once; the runner exits right after
    assert unloaded_soon(fake, "gemma3:1b")


# -- keep_alive and /api/ps -------------------------------------------------------------------------------


@pytest.mark.parametrize(("keep_alive", "seconds"), [("15m", 900), ("30s", 30), ("1h30m", 5400), (120, 120)])
def test_ps_expires_at_is_now_plus_keep_alive(fake: FakeOllama, keep_alive: object, seconds: float) -> None:
    assert ps_expiry(fake, "llama3.2:3b") is None
    chat(fake, model="llama3.2:3b", keep_alive=keep_alive)
    expiry = ps_expiry(fake, "llama3.2:3b")
    assert expiry is not None and abs(expiry - (time.time() + seconds)) < 3


def test_ps_keep_alive_absent_is_5m_zero_unloads_negative_is_forever(fake: FakeOllama) -> None:
    chat(fake, model="llama3.2:3b")
    assert abs(ps_expiry(fake, "llama3.2:3b") - (time.time() + 300)) < 3
    chat(fake, model="llama3.2:3b", keep_alive=0)
    assert unloaded_soon(fake, "llama3.2:3b")
    chat(fake, model="gemma3:1b", keep_alive=-1)
    assert ps_expiry(fake, "gemma3:1b") > time.time() + 200 * 365 * 86400
    _, _, data = call(fake, "GET", "/api/ps")
    row = json.loads(data)["models"][0]
    assert row["size_vram"] == row["size"] and row["context_length"] == 4096
    assert set(row) >= {"name", "model", "size", "digest", "details", "expires_at", "size_vram"}


def test_default_keep_alive_is_a_constructor_argument() -> None:
    with FakeOllama(["llama3.2:3b"], default_keep_alive="30s") as fake:
        chat(fake, model="llama3.2:3b")
        assert abs(ps_expiry(fake, "llama3.2:3b") - (time.time() + 30)) < 3


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *[("15m", 900.0), ("30s", 30.0), ("1h30m", 5400.0), ("0", 0.0), ("1.5h", 5400.0), ("500ms", 0.5)],
        *[(0, 0.0), (30, 30.0), (2.5, 2.5), (-1, None), ("-1m", None)],
    ],
)
def test_parse_keep_alive_reads_ollamas_duration_forms(value: object, expected: float | None) -> None:
    assert parse_keep_alive(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("300", 'time: missing unit in duration "300"'),
        ("abc", 'time: invalid duration "abc"'),
        (True, "bool"),
    ],
)
def test_bad_keep_alive_is_rejected_like_ollama(fake: FakeOllama, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_keep_alive(value)
    status, _, data = chat(fake, model="llama3.2:3b", keep_alive=value)
    assert status == 400 and message in json.loads(data)["error"]


# -- context length ---------------------------------------------------------------------------------------

LONG = [{"role": "user", "content": "x" * 4000}]  # ~1000 tokens at 4 chars a token


def test_overflow_is_truncated_silently_by_default_as_ollama_does(fake: FakeOllama) -> None:
    status, _, data = chat(fake, model="llama3.2:3b", messages=LONG, options={"num_ctx": 512}, stream=False)
    obj = json.loads(data)
    assert status == 200 and obj["prompt_eval_count"] == 512
    _, _, data = chat(fake, model="llama3.2:3b", messages=LONG, stream=False)
    assert json.loads(data)["prompt_eval_count"] == 1000  # fits the default 4096


@pytest.mark.parametrize("stream", [True, False])
def test_overflow_with_truncate_false_is_400_before_any_byte(fake: FakeOllama, stream: bool) -> None:
    status, resp, data = chat(
        fake, model="llama3.2:3b", messages=LONG, options={"num_ctx": 512}, truncate=False, stream=stream
    )
    assert status == 400 and resp.getheader("Content-Type").startswith("application/json")
    assert json.loads(data) == {"error": "the input length exceeds the context length"}


def test_strict_context_and_the_fault_force_the_overflow_error() -> None:
    with FakeOllama(["llama3.2:3b"], strict_context=True) as fake:
        status, _, _ = chat(fake, model="llama3.2:3b", messages=LONG, options={"num_ctx": 512})
        assert status == 400
        status, _, _ = chat(fake, model="llama3.2:3b", messages=LONG)
        assert status == 200  # fits the default 4096
        fake.set_fault("llama3.2:3b", "context_overflow")
        status, _, data = chat(fake, model="llama3.2:3b")
        assert status == 400 and "exceeds the context length" in json.loads(data)["error"]


# -- faults -----------------------------------------------------------------------------------------------


def test_fault_http_500(fake: FakeOllama) -> None:
    fake.set_fault("llama3.2:3b", "http_500")
    status, _, data = chat(fake, model="llama3.2:3b")
    assert status == 500
    assert json.loads(data) == {"error": "llama runner process has terminated: signal: killed"}
    status, _, _ = chat(fake, model="gemma3:1b")
    assert status == 200  # faults are per model


def test_fault_not_found_hides_the_model_everywhere(fake: FakeOllama) -> None:
    fake.set_fault("gemma3:1b", "not_found")
    status, _, data = chat(fake, model="gemma3:1b")
    assert (status, json.loads(data)) == (404, {"error": "model 'gemma3:1b' not found"})
    _, _, data = call(fake, "GET", "/api/tags")
    assert "gemma3:1b" not in [m["name"] for m in json.loads(data)["models"]]
    assert call(fake, "POST", "/api/show", {"model": "gemma3:1b"})[0] == 404


def test_fault_drop_before_headers_closes_with_no_response(fake: FakeOllama) -> None:
    fake.set_fault("llama3.2:3b", "drop_before_headers")
    with pytest.raises(http.client.RemoteDisconnected):
        chat(fake, model="llama3.2:3b")
    rec = fake.chat_requests("llama3.2:3b")[0]
    assert rec.status is None and rec.fault == "drop_before_headers" and rec.body["model"] == "llama3.2:3b"


def test_fault_drop_mid_stream_streaming(fake: FakeOllama) -> None:
    fake.set_fault("llama3.2:3b", "drop_mid_stream")
    with pytest.raises(http.client.IncompleteRead) as caught:
        chat(fake, model="llama3.2:3b")
    lines = ndjson(caught.value.partial)
    assert len(lines) == 2 and all(line["done"] is False for line in lines)


def test_fault_drop_mid_stream_non_streaming_sends_half_the_body(fake: FakeOllama) -> None:
    fake.set_fault("llama3.2:3b", "drop_mid_stream")
    with pytest.raises(http.client.IncompleteRead) as caught:
        chat(fake, model="llama3.2:3b", stream=False)
    assert caught.value.partial.startswith(b'{"model":"llama3.2:3b"') and caught.value.expected > 0


def test_fault_stream_error(fake: FakeOllama) -> None:
    fake.set_fault("llama3.2:3b", "stream_error")
    status, _, data = chat(fake, model="llama3.2:3b")
    lines = ndjson(data)
    assert status == 200 and len(lines) == 3 and "message" in lines[0] and "message" in lines[1]
    assert lines[-1] == {"error": "an error was encountered while running the model: unexpected EOF"}
    status, _, data = chat(fake, model="llama3.2:3b", stream=False)
    assert status == 500 and json.loads(data)["error"].startswith("an error was encountered")


def test_fault_message_and_times_params(fake: FakeOllama) -> None:
    fake.set_fault("llama3.2:3b", "http_500", message="out of memory", times=2)
    assert [chat(fake, model="llama3.2:3b")[0] for _ in range(3)] == [500, 500, 200]
    assert [r.fault for r in fake.chat_requests()] == ["http_500", "http_500", None]
    with pytest.raises(ValueError):
        fake.set_fault("llama3.2:3b", "explode")
    with pytest.raises(ValueError):
        fake.set_fault("llama3.2:3b", "slow", delay=1)
    with pytest.raises(ValueError):
        fake.set_fault("llama3.2:3b", "slow", times=0)
    fake.set_fault("llama3.2:3b", "http_500")
    fake.set_fault("llama3.2:3b", None)
    assert fake.faults() == {} and chat(fake, model="llama3.2:3b")[0] == 200


def test_malformed_requests_get_400_not_a_dropped_line(fake: FakeOllama) -> None:
    assert chat(fake, model="llama3.2:3b", options={"num_ctx": "big"})[0] == 400
    assert chat(fake, model="llama3.2:3b", messages="hi")[0] == 400
    assert chat(fake, messages=HI)[0] == 400  # no model
    assert call(fake, "POST", "/api/chat")[0] == 400  # no body
    status, _, data = call(fake, "POST", "/api/chat", [1, 2])
    assert status == 400 and "cannot unmarshal" in json.loads(data)["error"]


def test_fault_timeout_sends_nothing_and_stop_returns_promptly() -> None:
    fake = FakeOllama(["llama3.2:3b"]).start()
    fake.set_fault("llama3.2:3b", "timeout", delay_s=30)
    sock = socket.create_connection(("127.0.0.1", fake.port))
    body = json.dumps({"model": "llama3.2:3b", "messages": HI}).encode()
    head = f"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    sock.sendall(head + body)
    sock.settimeout(0.4)
    with pytest.raises(TimeoutError):
        sock.recv(1)
    t0 = time.monotonic()
    fake.stop()
    assert time.monotonic() - t0 < 1.0
    sock.settimeout(2)
    assert sock.recv(1) == b""  # the sleeping handler gave up and the line was cut
    sock.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", fake.port), timeout=1)


def test_fault_timeout_answers_after_the_delay(fake: FakeOllama) -> None:
    fake.set_fault("llama3.2:3b", "timeout", delay_s=0.3)
    t0 = time.monotonic()
    status, _, _ = chat(fake, model="llama3.2:3b", stream=False)
    assert status == 200 and time.monotonic() - t0 >= 0.3


def test_fault_slow_delays_the_first_chunk_and_spaces_the_rest(fake: FakeOllama) -> None:
    fake.set_fault("llama3.2:3b", "slow", delay_s=0.3, token_delay_s=0.05)
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    t0 = time.monotonic()
    conn.request("POST", "/api/chat", json.dumps({"model": "llama3.2:3b", "messages": HI}))
    resp = conn.getresponse()
    stamps = []
    while line := resp.readline():
        if line.strip():
            stamps.append(time.monotonic() - t0)
    conn.close()
    assert stamps[0] >= 0.3
    gaps = [b - a for a, b in itertools.pairwise(stamps)][:-1]  # the final line follows at once
    assert gaps and min(gaps) >= 0.04


def test_without_scheduling_slow_requests_run_concurrently() -> None:
    """scheduling=False is the ideal server (no slots, no queue): benchmarks of the proxy's own overhead use it
    so that Ollama's one-request-at-a-time does not hide what the proxy costs."""
    with FakeOllama(["llama3.2:3b"], scheduling=False) as fake:
        fake.set_fault("llama3.2:3b", "slow", delay_s=0.4)
        results: list[int] = []
        threads = [
            threading.Thread(target=lambda: results.append(chat(fake, model="llama3.2:3b")[0])) for _ in range(4)
        ]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
        assert results == [200] * 4 and time.monotonic() - t0 < 1.2


# -- the control plane and the record ---------------------------------------------------------------------


def test_http_control_plane_drives_an_out_of_process_fake(fake: FakeOllama) -> None:
    status, _, _ = call(fake, "POST", "/_fake/fault", {"model": "gemma3:1b", "fault": "http_500", "times": 1})
    assert status == 200
    assert call(fake, "GET", "/_fake/faults")[2] and chat(fake, model="gemma3:1b")[0] == 500
    assert call(fake, "POST", "/_fake/fault", {"model": "gemma3:1b", "fault": "nope"})[0] == 400
    chat(fake, model="llama3.2:3b", keep_alive="1m")
    _, _, data = call(fake, "GET", "/_fake/requests")
    recorded = json.loads(data)["requests"]
    assert [r["model"] for r in recorded] == ["gemma3:1b", "llama3.2:3b"]  # control calls are not recorded
    assert recorded[1]["body"]["keep_alive"] == "1m" and recorded[1]["status"] == 200
    call(fake, "POST", "/_fake/fault", {"model": "llama3.2:3b", "fault": "not_found"})
    assert call(fake, "POST", "/_fake/reset")[0] == 200
    assert fake.requests == [] and chat(fake, model="llama3.2:3b")[0] == 200


def test_the_record_holds_bodies_headers_and_times(fake: FakeOllama) -> None:
    chat(fake, model="qwen3.5:9b", options={"num_ctx": 8192, "temperature": 0}, keep_alive="15m")
    chat(fake, model="llama3.2:3b")
    call(fake, "GET", "/api/tags")
    assert [r.path for r in fake.requests] == ["/api/chat", "/api/chat", "/api/tags"]
    (rec,) = fake.chat_requests("qwen3.5:9b")
    assert rec.method == "POST" and rec.model == "qwen3.5:9b" and rec.status == 200
    assert rec.body["options"] == {"num_ctx": 8192, "temperature": 0} and rec.body["keep_alive"] == "15m"
    assert rec.headers["Content-Type"] == "application/json"
    assert rec.ts_start <= rec.ts_end
    assert len(fake.chat_requests()) == 2
    fake.clear_requests()
    assert fake.requests == []


def test_keep_alive_connections_with_tcp_nodelay(fake: FakeOllama) -> None:
    """One connection serves many requests, and replies are not held for a delayed ACK (TCP_NODELAY).

    How fast that makes it is a benchmark's question (bench/overhead.py's `direct`), not a test's.
    """
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    body = json.dumps({"model": "gemma3:1b", "messages": HI, "stream": False})
    for _ in range(20):
        conn.request("POST", "/api/chat", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["done"] is True
    server_socks = list(fake._server._conns)
    assert len(server_socks) == 1  # the same connection all along
    assert server_socks[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    conn.close()
    assert len(fake.chat_requests("gemma3:1b")) == 20  # each request answered on that one connection


def test_generate_has_the_same_shape_with_response(fake: FakeOllama) -> None:
    status, _, data = call(fake, "POST", "/api/generate", {"model": "llama3.2:3b", "prompt": "hey"})
    lines = ndjson(data)
    assert status == 200 and "".join(line["response"] for line in lines) == reply_text("llama3.2:3b", 3)
    assert lines[-1]["done"] is True and all(f in lines[-1] for f in FINAL_FIELDS)
    assert call(fake, "POST", "/api/generate", {"model": "nope:1b", "prompt": "x"})[0] == 404


def test_cli_serves_in_the_foreground_until_sigterm() -> None:
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.fake_ollama", "--port", "0", "--models", "tiny:1b,other"],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        url = line.split(" on ", 1)[1].split()[0]
        conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=5)
        conn.request("GET", "/api/tags")
        names = [m["name"] for m in json.loads(conn.getresponse().read())["models"]]
        conn.close()
        assert names == ["tiny:1b", "other:latest"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


# -- scheduling like Ollama (server/sched.go) -------------------------------------------------------------
#
# A small Ollama API client, as a user's script would drive a real Ollama, and a poll with a deadline.

CONFIG = Path(__file__).resolve().parent.parent / "litellm-config.yaml"
NINE_B, THREE_B, ONE_B, CODER = "qwen3.5:9b", "llama3.2:3b", "gemma3:1b", "qwen3-coder:30b"


class Ollama:
    """The parts of Ollama's HTTP API these tests use, over http.client; answers are (status, JSON)."""

    def __init__(self, fake: FakeOllama) -> None:
        self.fake = fake

    def post(self, path: str, body: dict, timeout: float = 30.0) -> tuple[int, dict]:
        status, _, data = call(self.fake, "POST", path, body, timeout=timeout)
        return status, json.loads(data)

    def chat(self, model: str, content: str | None = "hi", **body: object) -> tuple[int, dict]:
        """A whole (stream: false) /api/chat answer; content None sends no messages (load/unload)."""
        messages = [] if content is None else [{"role": "user", "content": content}]
        return self.post("/api/chat", {"model": model, "messages": messages, "stream": False, **body})

    def ps(self) -> dict[str, dict]:
        _, _, data = call(self.fake, "GET", "/api/ps")
        return {row["name"]: row for row in json.loads(data)["models"]}

    def expires_in(self, model: str) -> float | None:
        row = self.ps().get(model)
        return None if row is None else datetime.fromisoformat(row["expires_at"]).timestamp() - time.time()


def eventually(check: Callable[[], object], within: float = 10.0, what: str = "the condition") -> object:
    """Poll `check` until it returns something truthy; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what} did not happen within {within} s"
        time.sleep(0.01)
    return result


def kinds(fake: FakeOllama, event: str) -> list[dict]:
    return [e for e in fake.events() if e["event"] == event]


def background(fn: Callable[[], object]) -> Future:
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(fn)
    pool.shutdown(wait=False)
    return future


def raw_chat(fake: FakeOllama, model: str, **body: object) -> socket.socket:
    """Send a chat request on a bare socket and return it unread: what arrives, and when, is the test."""
    payload = json.dumps({"model": model, "messages": HI, **body}).encode()
    sock = socket.create_connection(("127.0.0.1", fake.port), timeout=10)
    head = f"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}"
    sock.sendall(head.encode() + b"\r\n\r\n" + payload)
    return sock


@pytest.fixture
def ollama() -> Iterator[Ollama]:
    with FakeOllama() as server:
        yield Ollama(server)


def test_resident_sizes_at_8192_match_the_configs_resident_gb() -> None:
    """/api/ps `size` is weights + KV cache + compute buffers at the runner's num_ctx, as the yaml budgets it."""
    import yaml

    config = yaml.safe_load(CONFIG.read_text())
    budget = {
        m["litellm_params"]["model"].removeprefix("ollama_chat/"): m["model_info"]["resident_gb"]
        for m in config["model_list"]
        if m["litellm_params"]["model"].startswith("ollama_chat/")
    }
    assert set(budget) == {NINE_B, THREE_B, ONE_B, CODER}
    with FakeOllama(total_gb=64, system_gb=0, metal_gb=64) as fake:
        client = Ollama(fake)
        for tag, resident_gb in budget.items():
            assert client.chat(tag, None, options={"num_ctx": 8192})[0] == 200
            row = client.ps()[tag]
            assert abs(row["size"] / 1e9 - resident_gb) <= 0.03 * resident_gb, (tag, row["size"])
            assert row["size_vram"] == row["size"] and row["context_length"] == 8192
            client.chat(tag, None, keep_alive=0)
            eventually(lambda tag=tag: tag not in client.ps(), what=f"{tag} unloading")


def test_first_model_loads_unchecked_and_what_overflows_is_swapped(ollama: Ollama) -> None:
    """With nothing loaded Ollama loads without a memory check: the 19.5 GB coder on a Mac with 12 GB free loads,
    runs partly on the CPU (Metal's 16 GB are full) and pushes 7.5 GB to swap."""
    status, answer = ollama.chat(CODER, options={"num_ctx": 8192})
    assert status == 200 and answer["message"]["content"].startswith("Hello from")
    row = ollama.ps()[CODER]
    assert row["size_vram"] == 16_000_000_000 < row["size"]  # metal_gb defaults to 2/3 of 24 GB
    memory = ollama.fake.memory()
    assert memory["free_gb"] == 0 and memory["swapped_gb"] == pytest.approx(7.5, abs=0.05)
    assert memory["peak_swapped_gb"] == memory["swapped_gb"] and memory["loads"] == 1
    assert kinds(ollama.fake, "load_start")[0]["checked"] is False


def test_a_second_model_that_does_not_fit_evicts_the_first(ollama: Ollama) -> None:
    """The 9B needs 6.9 GB (weights + KV) but 80 % of min(free RAM, free Metal) is 0: the idle coder goes first."""
    ollama.chat(CODER, options={"num_ctx": 8192}, keep_alive="30s")
    ollama.chat(NINE_B, options={"num_ctx": 8192}, keep_alive="15m")
    assert list(ollama.ps()) == [NINE_B]
    assert [(e["model"], e["reason"], e["for_model"]) for e in kinds(ollama.fake, "evict")] == [
        (CODER, "memory", NINE_B)
    ]
    memory = ollama.fake.memory()
    assert memory["evictions"] == 1 and memory["resident_gb"] == pytest.approx(7.2, abs=0.05)
    assert memory["peak_resident_gb"] == pytest.approx(19.5, abs=0.05)
    # The 9B, the 3B and the 1B fit side by side in the 12 GB (each within 80 % of what is left).
    ollama.chat(THREE_B, options={"num_ctx": 8192})
    ollama.chat(ONE_B, options={"num_ctx": 8192})
    assert set(ollama.ps()) == {NINE_B, THREE_B, ONE_B} and ollama.fake.memory()["evictions"] == 1


def test_eviction_takes_the_shortest_keep_alive_first_not_the_oldest(ollama: Ollama) -> None:
    """findRunnerToUnload sorts by keep_alive: at max_loaded_models the 2m model goes, not the first loaded."""
    ollama.fake.set_memory(max_loaded_models=2)
    ollama.chat(THREE_B, keep_alive="10m")
    ollama.chat(ONE_B, keep_alive="2m")
    ollama.chat(NINE_B, keep_alive="15m")
    assert set(ollama.ps()) == {THREE_B, NINE_B}
    assert [(e["model"], e["reason"]) for e in kinds(ollama.fake, "evict")] == [(ONE_B, "max_loaded_models")]
    # Forever (-1) sorts last: the 10m model goes before it even though it is shorter-lived than nothing.
    ollama.chat(THREE_B, keep_alive=-1)
    ollama.chat(ONE_B, keep_alive="1m")
    assert set(ollama.ps()) == {THREE_B, ONE_B}
    assert [e["model"] for e in kinds(ollama.fake, "evict")] == [ONE_B, NINE_B]


def test_a_busy_model_is_not_evicted_until_it_drains_and_the_switch_waits(ollama: Ollama) -> None:
    ollama.fake.set_memory(max_loaded_models=1)
    ollama.chat(THREE_B)
    ollama.fake.set_fault(THREE_B, "slow", delay_s=0.8)
    busy = background(lambda: ollama.chat(THREE_B, "long answer"))
    eventually(lambda: ollama.fake.chat_requests(THREE_B)[-1:] and ollama.fake.requests[-1].status is None)
    t0 = time.monotonic()
    status, answer = ollama.chat(ONE_B, "switch")
    waited = time.monotonic() - t0
    assert status == 200 and busy.done() and busy.result()[0] == 200
    (long,) = [r for r in ollama.fake.chat_requests(THREE_B) if r.body["messages"][0]["content"] == "long answer"]
    switch = ollama.fake.chat_requests(ONE_B)[0]
    assert long.ts_end <= switch.ts_end and waited > 0.3
    assert answer["load_duration"] / 1e9 > 0.3  # the wait for the drain is part of the load, as in Ollama
    (evict,) = kinds(ollama.fake, "evict")
    assert evict["model"] == THREE_B and evict["busy"] is True
    unloaded = [e["ts"] for e in kinds(ollama.fake, "unload")]
    assert unloaded and unloaded[0] >= long.ts_end - 0.01
    assert list(ollama.ps()) == [ONE_B]


def test_one_request_at_a_time_per_model_in_arrival_order(ollama: Ollama) -> None:
    ollama.chat(THREE_B)
    ollama.fake.set_fault(THREE_B, "slow", delay_s=0.3)
    futures = []
    for i in range(3):
        futures.append(background(lambda i=i: ollama.chat(THREE_B, f"n{i}")))
        eventually(lambda i=i: len(ollama.fake.chat_requests(THREE_B)) == i + 2)
    assert [f.result(10)[0] for f in futures] == [200, 200, 200]
    records = ollama.fake.chat_requests(THREE_B)[1:]
    assert [r.body["messages"][0]["content"] for r in sorted(records, key=lambda r: r.ts_end)] == ["n0", "n1", "n2"]
    for a, b in itertools.pairwise(sorted(records, key=lambda r: r.ts_end)):
        assert b.ts_end - a.ts_end >= 0.25  # served one after the other, not at once
    assert len([e for e in kinds(ollama.fake, "queued") if e["waiting_for"] == "slot"]) == 2


def test_num_parallel_gives_slots_but_not_to_qwen35(ollama: Ollama) -> None:
    """OLLAMA_NUM_PARALLEL=2 serves two llama requests at once with twice the KV cache; sched.go load forces
    qwen35 (the 9B's architecture) to one slot."""
    one_slot = None
    ollama.chat(THREE_B, None)
    one_slot = ollama.ps()[THREE_B]["size"]
    ollama.chat(THREE_B, None, keep_alive=0)
    eventually(lambda: THREE_B not in ollama.ps())
    ollama.fake.set_memory(num_parallel=2)
    for tag in (THREE_B, NINE_B):
        ollama.fake.set_fault(tag, "slow", delay_s=0.4)
        ollama.chat(tag, None)
        pair = [background(lambda tag=tag, i=i: ollama.chat(tag, f"{tag} {i}")) for i in range(2)]
        assert [f.result(10)[0] for f in pair] == [200, 200]
    llama = ollama.fake.chat_requests(THREE_B)[-2:]
    nine = ollama.fake.chat_requests(NINE_B)[-2:]
    assert abs(llama[0].ts_end - llama[1].ts_end) < 0.2  # together
    assert abs(nine[0].ts_end - nine[1].ts_end) >= 0.35  # one after the other
    assert ollama.ps()[THREE_B]["size"] - one_slot == 114_688 * 4096  # a second slot's KV cache


def test_a_full_queue_is_503_with_ollamas_text(ollama: Ollama) -> None:
    """max_queue bounds requests waiting for the scheduler (getRunner's pendingReqCh), not those waiting
    for a loaded model's slot: past it Ollama answers 503 at once."""
    ollama.fake.set_memory(max_queue=2, load_gb_per_s=2.0)  # the 1B (1.0 GB at 4096) loads in ~0.5 s
    first = background(lambda: ollama.chat(ONE_B, "first"))
    eventually(lambda: kinds(ollama.fake, "load_start"), what="the load")
    queued = [background(lambda i=i: ollama.chat(ONE_B, f"queued {i}")) for i in range(2)]
    eventually(lambda: ollama.fake.memory()["pending"] == 2, what="two pending")
    status, answer = ollama.chat(ONE_B, "one too many")
    assert (status, answer) == (503, {"error": "server busy, please try again.  maximum pending requests exceeded"})
    assert first.result(10)[0] == 200 and [f.result(10)[0] for f in queued] == [200, 200]
    assert kinds(ollama.fake, "rejected")[0]["pending"] == 2 and ollama.fake.memory()["rejected"] == 1
    # Once loaded, requests bypass the scheduler: five waiting for the model's one slot are not rejected.
    ollama.fake.set_fault(ONE_B, "slow", delay_s=0.1)
    many = [background(lambda i=i: ollama.chat(ONE_B, f"slot {i}")) for i in range(5)]
    assert [f.result(10)[0] for f in many] == [200] * 5


def test_nothing_is_sent_until_the_load_ends_and_load_duration_says_how_long(ollama: Ollama) -> None:
    ollama.fake.set_memory(load_gb_per_s=5.0)  # the 3B holds 2.5 GB at num_ctx 4096: half a second
    sock = raw_chat(ollama.fake, THREE_B, stream=True)
    try:
        listed_while_loading = []
        while not select.select([sock], [], [], 0.01)[0]:
            if THREE_B in ollama.ps():
                listed_while_loading.append(not kinds(ollama.fake, "loaded"))
        first_byte = time.time()
        (start,) = kinds(ollama.fake, "load_start")
        (loaded,) = kinds(ollama.fake, "loaded")
        assert start["ts"] + 0.45 <= loaded["ts"] <= first_byte  # not even headers before the load was done
        assert not any(listed_while_loading)  # /api/ps did not list it while it loaded
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            assert chunk, "the connection closed early"
            data += chunk
    finally:
        sock.close()
    assert data.startswith(b"HTTP/1.1 200")
    final = json.loads([line for line in data.split(b"\r\n") if line.startswith(b'{"model"')][-1])
    assert final["done"] is True and 0.45 < final["load_duration"] / 1e9 < 2.0
    assert final["total_duration"] >= final["load_duration"]
    assert ollama.fake.memory()["load_seconds"] == pytest.approx(0.5, abs=0.15)
    assert THREE_B in ollama.ps()
    _, again = ollama.chat(THREE_B)
    assert again["load_duration"] / 1e9 < 0.1  # already loaded


def test_a_client_that_leaves_during_the_load_aborts_it(ollama: Ollama) -> None:
    """llm/llama_server.go WaitUntilRunning: "client connection closed before llama-server finished loading"."""
    ollama.fake.set_memory(load_gb_per_s=1.0)  # 2.5 s for the 3B
    sock = raw_chat(ollama.fake, THREE_B)
    eventually(lambda: kinds(ollama.fake, "load_start"), what="the load")
    sock.close()
    (aborted,) = eventually(lambda: kinds(ollama.fake, "load_aborted"), within=2.0, what="the abort")
    assert aborted["model"] == THREE_B and aborted["after_s"] < 2.0
    assert ollama.ps() == {} and ollama.fake.memory()["loads"] == 0
    assert not kinds(ollama.fake, "loaded")


def test_empty_requests_load_and_unload_and_an_unloaded_model_is_listed_until_it_exits(ollama: Ollama) -> None:
    ollama.fake.set_memory(unload_s=0.5)
    status, answer = ollama.chat(ONE_B, None)
    assert (
        status == 200 and answer["done_reason"] == "load" and answer["message"] == {"role": "assistant", "content": ""}
    )
    assert ONE_B in ollama.ps()
    status, answer = ollama.post("/api/generate", {"model": THREE_B, "stream": False})
    assert status == 200 and answer["done_reason"] == "load" and THREE_B in ollama.ps()
    status, answer = ollama.chat(ONE_B, None, keep_alive=0)
    assert status == 200 and answer["done_reason"] == "unload"
    left = ollama.expires_in(ONE_B)
    assert left is not None and left <= 0.05  # still listed while its runner exits, expiring now
    eventually(lambda: ONE_B not in ollama.ps(), within=3.0, what="the unload")
    assert kinds(ollama.fake, "unload")[0]["reason"] == "unload request"
    status, answer = ollama.post("/api/generate", {"model": THREE_B, "keep_alive": 0, "stream": False})
    assert answer["done_reason"] == "unload"
    eventually(lambda: THREE_B not in ollama.ps(), within=3.0, what="the unload")


def test_expires_at_is_not_refreshed_while_serving_and_an_expired_model_stays_listed_until_exit(
    ollama: Ollama,
) -> None:
    """The keep_alive timer starts when the model goes idle (processCompleted), so a request longer than the
    keep_alive shows expires_at in the past; after the timer fires, /api/ps lists it until the runner exits."""
    ollama.fake.set_memory(unload_s=0.4)
    ollama.chat(THREE_B, keep_alive="1s")
    idle_at = time.time()
    ollama.fake.set_fault(THREE_B, "slow", delay_s=1.6)
    slow = background(lambda: ollama.chat(THREE_B, "longer than the keep_alive", keep_alive="1s"))
    eventually(lambda: len(ollama.fake.chat_requests(THREE_B)) == 2)
    row = ollama.ps()[THREE_B]
    first_expiry = datetime.fromisoformat(row["expires_at"]).timestamp()
    assert first_expiry == pytest.approx(idle_at + 1, abs=0.3)
    eventually(lambda: (ollama.expires_in(THREE_B) or 0) < -0.2, within=3.0, what="expires_at in the past")
    assert not slow.done()  # still serving: a busy model is not unloaded
    assert slow.result(10)[0] == 200
    left = ollama.expires_in(THREE_B)
    assert left is not None and 0.5 < left <= 1.0  # the timer restarts when it goes idle
    ollama.fake.set_fault(THREE_B, None)
    seen_expired = eventually(lambda: (ollama.expires_in(THREE_B) or 0) < 0, within=3.0, what="expiry")
    assert seen_expired and THREE_B in ollama.ps()  # expired, but its runner has not exited yet
    eventually(lambda: THREE_B not in ollama.ps(), within=3.0, what="the runner's exit")
    assert kinds(ollama.fake, "unload")[0]["reason"] == "expired"


def test_keep_alive_last_writer_wins_and_absent_keeps_the_models(ollama: Ollama) -> None:
    ollama.chat(THREE_B, keep_alive="10m")
    assert 590 < ollama.expires_in(THREE_B) <= 600
    ollama.chat(THREE_B, keep_alive="1m")
    assert 50 < ollama.expires_in(THREE_B) <= 60
    ollama.chat(THREE_B)  # no keep_alive: useLoadedRunner leaves the model's 1m, not the default 5m
    assert 50 < ollama.expires_in(THREE_B) <= 60
    ollama.chat(THREE_B, keep_alive=0)
    eventually(lambda: THREE_B not in ollama.ps(), within=3.0, what="the unload after the request")


def test_a_different_num_ctx_reloads_the_model(ollama: Ollama) -> None:
    ollama.chat(THREE_B, options={"num_ctx": 4096})
    small = ollama.ps()[THREE_B]
    _, answer = ollama.chat(THREE_B, options={"num_ctx": 8192})
    big = ollama.ps()[THREE_B]
    assert (small["context_length"], big["context_length"]) == (4096, 8192)
    assert big["size"] - small["size"] == 114_688 * 4096
    assert answer["load_duration"] > 0 and ollama.fake.memory()["loads"] == 2
    assert [(e["model"], e["reason"]) for e in kinds(ollama.fake, "evict")] == [(THREE_B, "reload")]
    ollama.chat(THREE_B, options={"num_ctx": 8192})
    ollama.chat(ONE_B, options={"num_ctx": 65_536})
    ollama.chat(ONE_B, options={"num_ctx": 32_768})  # both capped at the 1B's trained 32768: no reload
    assert ollama.fake.memory()["loads"] == 3 and ollama.ps()[ONE_B]["context_length"] == 32_768


WEATHER = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
                "required": ["city"],
            },
        },
    }
]


def test_tool_calls_when_the_user_asks_for_a_tool(ollama: Ollama) -> None:
    status, answer = ollama.chat(THREE_B, "call get_weather for Paris", tools=WEATHER)
    assert status == 200 and answer["done_reason"] == "stop" and answer["message"]["content"] == ""
    (call_,) = answer["message"]["tool_calls"]
    assert call_["id"].startswith("call_") and len(call_["id"]) == 13
    assert call_["function"] == {
        "index": 0,
        "name": "get_weather",
        "arguments": {"city": "call get_weather for Paris", "unit": "c"},
    }
    _, _, data = chat(ollama.fake, model=THREE_B, messages=[{"role": "user", "content": "get_weather?"}], tools=WEATHER)
    lines = ndjson(data)
    assert [
        line["message"]["tool_calls"][0]["function"]["name"] for line in lines if "tool_calls" in line["message"]
    ] == ["get_weather"]
    assert lines[-1]["done"] is True and lines[-1]["done_reason"] == "stop"
    status, answer = ollama.chat(THREE_B, "just say hello", tools=WEATHER)
    assert "tool_calls" not in answer["message"] and answer["message"]["content"].startswith("Hello from")


def test_reset_unloads_everything_and_clears_the_counters(ollama: Ollama) -> None:
    ollama.fake.set_memory(total_gb=48)
    ollama.chat(THREE_B)
    ollama.chat(ONE_B)
    assert ollama.fake.memory()["loads"] == 2 and ollama.fake.events()
    ollama.fake.reset()
    memory = ollama.fake.memory()
    assert ollama.ps() == {} and ollama.fake.events() == []
    assert (memory["loads"], memory["resident_gb"], memory["peak_resident_gb"], memory["total_gb"]) == (0, 0, 0, 24.0)


def test_memory_and_events_over_http(ollama: Ollama) -> None:
    status, _, data = call(ollama.fake, "POST", "/_fake/memory", {"system_gb": 20, "load_gb_per_s": 100})
    memory = json.loads(data)
    assert status == 200 and memory["system_gb"] == 20 and memory["load_gb_per_s"] == 100
    assert memory["free_gb"] == 4 and memory["metal_gb"] == 16
    assert call(ollama.fake, "POST", "/_fake/memory", {"ram": 1})[0] == 400
    ollama.chat(ONE_B)
    _, _, data = call(ollama.fake, "GET", "/_fake/events")
    events = json.loads(data)["events"]
    assert [e["event"] for e in events] == ["queued", "load_start", "loaded"]
    assert all(e["model"] == ONE_B and e["ts"] > 0 for e in events)
    _, _, data = call(ollama.fake, "GET", "/_fake/memory")
    assert json.loads(data)["loaded"] == [ONE_B] and json.loads(data)["loads"] == 1


def test_the_cli_takes_the_memory_flags_and_control_drives_it() -> None:
    root = Path(__file__).resolve().parent.parent
    flags = ["--total-gb", "16", "--system-gb", "4", "--load-gb-per-s", "100", "--max-queue", "7"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.fake_ollama", "--port", "0", "--models", "gemma3:1b", *flags],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().split(" on ", 1)[1].split()[0]
        control = FakeOllamaControl(url)
        memory = control.memory()
        assert (memory["total_gb"], memory["system_gb"], memory["max_queue"], memory["free_gb"]) == (16, 4, 7, 12)
        assert control.set_memory(num_parallel=2)["num_parallel"] == 2
        conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=5)
        conn.request("POST", "/api/chat", json.dumps({"model": "gemma3:1b", "messages": HI, "stream": False}))
        assert conn.getresponse().status == 200
        conn.close()
        assert [e["event"] for e in control.events()] == ["queued", "load_start", "loaded"]
        control.reset()
        assert control.events() == [] and control.memory()["num_parallel"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=5)
        proc.stdout.close()


def test_stop_is_prompt_with_a_load_and_a_queue_waiting() -> None:
    fake = FakeOllama(load_gb_per_s=0.1).start()  # a 25 s load
    socks = [raw_chat(fake, THREE_B) for _ in range(3)]
    eventually(lambda: kinds(fake, "load_start"), what="the load")
    t0 = time.monotonic()
    fake.stop()
    assert time.monotonic() - t0 < 1.5
    for sock in socks:
        sock.settimeout(2)
        with contextlib.suppress(ConnectionResetError):  # cut without an answer (a reset is as good)
            assert sock.recv(1) == b""
        sock.close()
