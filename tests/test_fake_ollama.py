"""The fake Ollama against Ollama's documented and source-observed behaviour, over plain http.client.

Why: every proxy test downstream trusts this fake to fail the way Ollama fails; these tests pin that.
"""

from __future__ import annotations

import http.client
import itertools
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from harness.fake_ollama import (
    DEFAULT_MODELS,
    THINKING_TEXT,
    FakeOllama,
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
    assert json.loads(data)["done_reason"] == "unload"
    assert ps_expiry(fake, "gemma3:1b") is None


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


def test_slow_requests_run_concurrently(fake: FakeOllama) -> None:
    fake.set_fault("llama3.2:3b", "slow", delay_s=0.4)
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(chat(fake, model="llama3.2:3b")[0])) for _ in range(4)]
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
