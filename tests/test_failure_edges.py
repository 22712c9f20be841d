"""Failure edges a careful user meets: an answer cut off mid-stream is never taken, or kept, as a whole one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.fake_ollama import FakeOllama
from harness.stack import KEY, ROOT, Proxy, closed_port_url, running_proxy

NINE_B = "qwen3.5:9b"


def telemetry_lines() -> list[dict[str, object]]:
    path = Path(os.environ["XDG_DATA_HOME"]) / "ask" / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_proxy_killed_mid_answer_is_an_error_and_nothing_is_cached(tmp_path: Path, fake_ollama: FakeOllama) -> None:
    """`ask` keeps on screen what came, exits 1 saying it was cut off, logs the call as failed (the tier that
    was answering, the real latency) and caches nothing: the next `ask`, with the stack down, does not answer."""
    fake_ollama.reset()
    with running_proxy(
        tmp_path,
        OLLAMA_API_BASE=fake_ollama.url,
        TINY_API_BASE=closed_port_url("/v1"),
        LLAMA_SWAP_API_BASE=closed_port_url("/v1"),
    ) as proxy:
        fake_ollama.set_fault(NINE_B, "slow", token_delay_s=2.0)
        env = dict(os.environ, ASK_PROXY_URL=proxy.url, LITELLM_MASTER_KEY=KEY)
        child = subprocess.Popen(
            [sys.executable, "-m", "ask_cli", "tell me a long story"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=ROOT,
        )
        assert child.stdout is not None
        first = child.stdout.read1(65536)  # the first piece of the answer has reached the user
        assert first.startswith(b"Hello")
        killed = kill(proxy)
        out, err = child.communicate(timeout=60)
    fake_ollama.reset()
    assert killed and child.returncode == 1
    assert (first + out).decode().startswith("Hello") and (first + out).endswith(b"\n")
    assert "the answer was cut off" in err.decode()
    [line] = telemetry_lines()
    assert line["exit_code"] == 1 and line["served_by"] == "fast-9b" and line["response_chars"] > 0
    assert str(line["error"]).startswith("the answer was cut off") and float(line["latency_s"]) > 0  # type: ignore[arg-type]
    again = subprocess.run(
        [sys.executable, "-m", "ask_cli", "tell me a long story"], capture_output=True, env=env, cwd=ROOT, timeout=60
    )
    assert again.returncode == 1 and "the proxy is not running" in again.stderr.decode()


def kill(proxy: Proxy) -> bool:
    """SIGKILL the proxy (no goodbye on the socket), and wait until it is gone."""
    assert proxy.proc is not None
    os.kill(proxy.proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while proxy.proc.poll() is None:
        assert time.monotonic() < deadline, "the proxy did not die"
        time.sleep(0.02)
    return True


def test_a_stream_the_backend_dropped_is_not_cached_by_the_proxy(proxy: Proxy, healthy: FakeOllama) -> None:
    """Ollama drops the connection after two pieces: whatever the client got, the same question asked again
    reaches a backend, never the proxy's cache."""
    healthy.set_fault(NINE_B, "drop_mid_stream", times=1)
    proxy.stream("fast-9b", "a stream that breaks")
    again = proxy.stream("fast-9b", "a stream that breaks")
    assert "x-litellm-cache-key" not in again.headers
    assert len(healthy.chat_requests(NINE_B)) == 2


def test_a_stream_that_ends_cleanly_but_without_its_end_marker_is_cut_off(tmp_path: Path) -> None:
    """A server that closes the answer properly (HTTP's last chunk) but never sent `data: [DONE]`, as a proxy
    shutting down does: still part of an answer, so exit 1 and nothing cached."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    event = {"choices": [{"index": 0, "delta": {"content": "Half an ans"}}]}
    sse = f"data: {json.dumps(event)}\n\n".encode()
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(sse), sse)
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
        b"X-Served-By: fast-9b\r\n\r\n"
    )

    def serve() -> None:
        for _ in range(2):  # the question, then the same question again
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(head + body)

    threading.Thread(target=serve, daemon=True).start()
    env = dict(os.environ, ASK_PROXY_URL=f"http://127.0.0.1:{port}", LITELLM_MASTER_KEY=KEY)
    runs = [
        subprocess.run([sys.executable, "-m", "ask_cli", "half?"], capture_output=True, env=env, cwd=ROOT, timeout=60)
        for _ in range(2)
    ]
    listener.close()
    for run in runs:  # the second is not a cache hit: it reached the server and was cut off again
        assert run.returncode == 1 and run.stdout == b"Half an ans\n"
        assert "the answer was cut off" in run.stderr.decode()
    assert [line["cache_hit"] for line in telemetry_lines()] == [False, False]


BAD_BODIES = [  # what a client sent → the words the 400 must say; never forwarded to any tier
    ({"stream": "yes"}, "stream must be true or false, not 'yes'"),
    ({"stream": 1}, "stream must be true or false, not 1"),
    ({"n": 100}, "n must be 1"),
    ({"max_tokens": -1}, "max_tokens must be from 1 to 1,000,000 (got -1)"),
    ({"max_tokens": 10**12}, "max_tokens must be from 1 to 1,000,000 (got 1000000000000)"),
    ({"max_tokens": "lots"}, "max_tokens must be an integer, not 'lots'"),
    ({"temperature": "hot"}, "temperature must be a number, not 'hot'"),
    ({"temperature": 7}, "temperature must be from 0 to 2 (got 7)"),
    ({"timeout": -1}, "timeout must be above 0 (got -1)"),
    ({"messages": [{"role": "hacker", "content": "x"}]}, "messages[0].role must be one of system, developer, user"),
    ({"messages": [{"role": "user", "content": {}}]}, "messages[0].content must be a string or a list of parts"),
    ({"messages": [{"role": "user", "content": None}]}, "messages[0].content must be a string or a list of parts"),
    ({"messages": "hi"}, "messages must be a non-empty list of objects with a role"),
]


@pytest.mark.parametrize(("change", "says"), BAD_BODIES, ids=[str(c) for c, _ in BAD_BODIES])
def test_a_bad_body_is_a_400_that_names_the_field(proxy: Proxy, healthy: FakeOllama, change: dict, says: str) -> None:
    body = {"model": "fast-9b", "messages": [{"role": "user", "content": "hi"}], **change}
    resp = proxy.client.post("/v1/chat/completions", json=body)
    assert resp.status_code == 400, resp.text
    assert says in resp.json()["error"]["message"]
    assert healthy.chat_requests() == []  # no tier saw it


UNREADABLE_BODIES = [  # raw bytes a client sent → the words the 400 must say (LiteLLM read each as `{}` or a 500)
    (b'{"model": "fast-9b", "messages": [{"role": "user", "content": "\xff"}]}', "the body is not UTF-8 (byte 0xff"),
    (b"[" * 100_000, "the body's JSON is nested too deeply to read"),
    (
        b'[{"model": "fast-9b", "messages": [{"role": "user", "content": "hi"}]}]',
        "the body must be a JSON object, not a list",
    ),
    (b'"hi"', "the body must be a JSON object, not a string"),
    (b"null", "the body must be a JSON object, not null"),
]


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/messages", "/v1/completions"])
@pytest.mark.parametrize(("raw", "says"), UNREADABLE_BODIES, ids=["utf8", "deep", "list", "string", "null"])
def test_a_body_that_is_not_a_json_object_says_why(
    proxy: Proxy, healthy: FakeOllama, route: str, raw: bytes, says: str
) -> None:
    resp = proxy.client.post(route, content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert says in resp.json()["error"]["message"]
    assert healthy.chat_requests() == []


def test_a_body_without_messages_names_them(proxy: Proxy, healthy: FakeOllama) -> None:
    resp = proxy.client.post("/v1/chat/completions", json={"model": "fast-9b"})
    assert resp.status_code == 400
    assert "the body has no messages: send a JSON object with a messages list" in resp.json()["error"]["message"]


def test_a_tool_calls_turn_without_content_is_accepted(proxy: Proxy, healthy: FakeOllama) -> None:
    """The OpenAI shape of a conversation with tools: the assistant's tool-call turn has content null."""
    call = {"id": "c1", "type": "function", "function": {"name": "now", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "what time is it?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "12:00"},
    ]
    resp = proxy.client.post("/v1/chat/completions", json={"model": "fast-9b", "messages": messages})
    assert resp.status_code == 200 and resp.headers["x-served-by"] == "fast-9b"


def test_request_text_cannot_forge_a_log_line(proxy: Proxy, healthy: FakeOllama) -> None:
    """A model name with CR/LF reaches LiteLLM's own error log and ours: each stays one escaped line."""
    marker = f"FORGED-{time.time_ns()}"
    resp = proxy.chat(f"evil\r\n{marker} INFO all is well")
    assert resp.status_code == 400
    deadline = time.monotonic() + 10
    while marker not in proxy.log_text():
        assert time.monotonic() < deadline, "the refused request was not logged at all"
        time.sleep(0.05)
    lines = [line for line in proxy.log_text().splitlines() if marker in line]
    assert lines and not any(line.startswith(marker) for line in lines)
    assert all("evil\\r\\n" + marker in line for line in lines)


def test_an_ollama_error_before_any_content_takes_the_chain(proxy: Proxy, healthy: FakeOllama) -> None:
    """Ollama answers an error that comes before any content with HTTP 500 (routes.go streamResponse): the
    request walks its chain like any failed hop, with Ollama's words in the record."""
    healthy.set_fault(NINE_B, "stream_error", after=0)
    result = proxy.stream("fast-9b", "an error first")
    assert result.status == 200 and result.error is None and result.done
    assert result.headers["x-served-by"] == "fast-3b" and result.headers["x-demoted-from"] == "fast-9b"
    record = proxy.demotion(result.headers.get("x-litellm-call-id"))
    assert record["failed"][0].startswith("fast-9b: HTTP 500: an error was encountered while running the model")


def test_an_ollama_error_line_after_content_is_the_backends_error_not_the_clients(
    proxy: Proxy, healthy: FakeOllama
) -> None:
    """A runner dying mid-answer: the stream ends with an error event in Ollama's words, as a server error (500),
    never LiteLLM's 400 'unexpected response' that blames the request."""
    healthy.set_fault(NINE_B, "stream_error")
    result = proxy.stream("fast-9b", "an error after two pieces")
    assert result.text.startswith("Hello ") and not result.done
    assert result.error is not None
    error = json.loads(result.error)
    assert error["message"].startswith("fast-9b stopped mid-answer: ")  # the tier, as in the record
    assert "an error was encountered while running the model" in error["message"]
    assert "KeyError" not in error["message"] and str(error.get("code")) == "500"
    record = proxy.demotion(result.headers.get("x-litellm-call-id"))  # the broken answer is on record
    assert record["served"] is None and record["stream"] is True
    assert record["failed"] == [
        "fast-9b: HTTP 500: an error was encountered while running the model: unexpected EOF, mid-answer"
    ]


def test_a_hung_ollama_is_passed_over_in_seconds_not_timeouts(tmp_path: Path, tiny_url: str) -> None:
    """Ollama stopped (SIGSTOP: it accepts, then says nothing): every Ollama tier of the chain is passed over
    with the reason, and the embedded model answers, instead of each hop waiting out its 15-30 s timeout."""
    from harness.stack import fake_ollama_server

    ollama = fake_ollama_server(tmp_path / "ollama.log").start(30)
    try:
        with running_proxy(
            tmp_path, OLLAMA_API_BASE=ollama.url, TINY_API_BASE=tiny_url, LLAMA_SWAP_API_BASE=closed_port_url("/v1")
        ) as proxy:
            assert proxy.chat("fast-9b", "warm", max_tokens=4).headers["x-served-by"] == "fast-9b"
            assert ollama.proc is not None
            os.kill(ollama.proc.pid, signal.SIGSTOP)
            try:
                result = proxy.stream("fast-9b", "are you there?", max_tokens=8)
            finally:
                os.kill(ollama.proc.pid, signal.SIGCONT)
            assert result.headers["x-served-by"] == "tiny" and result.done
            record = proxy.demotion(result.headers.get("x-litellm-call-id"))
    finally:
        ollama.stop()
    from plugins.ram_budget import PROBE_TIMEOUT_S

    hung = f"ollama at {ollama.url} did not answer within {PROBE_TIMEOUT_S:g} s (hung?)"
    assert record["failed"] == [f"{tier}: {hung}" for tier in ("fast-9b", "fast-3b", "fast-1b")]


def config_with_short_hops(path: Path, stream_timeout_s: float) -> Path:
    """The project's yaml with each Ollama fast tier's stream timeout cut to `stream_timeout_s`."""
    import yaml

    from harness.stack import CONFIG

    config = yaml.safe_load(CONFIG.read_text())
    for entry in config["model_list"]:
        if entry["model_name"] in ("fast-9b", "fast-3b", "fast-1b"):
            entry["litellm_params"]["stream_timeout"] = stream_timeout_s
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_hops_that_never_answer_share_the_asked_tiers_timeout(tmp_path: Path, tiny_url: str) -> None:
    """Every Ollama model accepts and then says nothing (a wedged runner; /api/ps still answers): the first hop
    times out, the next two are refused for the request's deadline, and the embedded model answers — one
    timeout spent, not one per hop."""
    hop_s = 4.0
    with FakeOllama() as ollama:
        config = config_with_short_hops(tmp_path / "config.yaml", hop_s)
        backends = {"OLLAMA_API_BASE": ollama.url, "TINY_API_BASE": tiny_url}
        with running_proxy(tmp_path, config=config, LLAMA_SWAP_API_BASE=closed_port_url("/v1"), **backends) as proxy:
            assert proxy.chat("fast-9b", "warm", max_tokens=4).headers["x-served-by"] == "fast-9b"
            for tag in ("qwen3.5:9b", "llama3.2:3b", "llama3.2:1b"):
                ollama.set_fault(tag, "timeout", delay_s=120)
            result = proxy.stream("fast-9b", "are you there?", max_tokens=8)
            assert result.headers["x-served-by"] == "tiny" and result.done
            record = proxy.demotion(result.headers.get("x-litellm-call-id"))
    ran_out = f"the request's {hop_s:g} s deadline ran out before this tier was tried"
    assert record["failed"][1:] == [f"fast-3b: {ran_out}", f"fast-1b: {ran_out}"]
    assert record["failed"][0].startswith("fast-9b: ") and "timeout" in record["failed"][0].lower()
    assert [r.model for r in ollama.chat_requests()][1:] == ["qwen3.5:9b"]  # no other tier was sent it


def test_a_chain_deadline_leaves_the_embedded_model_and_a_clients_timeout_alone() -> None:
    from plugins import ram_budget

    def runner(runtime: str) -> ram_budget.Runner:
        return ram_budget.Runner(runtime, "http://127.0.0.1:1", "m:latest")

    budget = ram_budget.Budget(ram_budget.Policy(chain_deadline_s=10))
    short: dict = {"timeout": 30.0}
    assert 9 < budget.within_chain(short, "call", "fast-9b", runner("ollama"), 30.0) <= 10.0
    assert 9 < short["timeout"] <= 10.0  # the hop itself is cut to what the request has left
    assert budget.within_chain({}, "call", "tiny", runner("embedded"), 30.0) == 30.0
    own = {"proxy_server_request": {"body": {"timeout": 300}}}
    assert budget.within_chain(own, "call", "fast-3b", runner("ollama"), 300.0) == 300.0
    budget.chains.entry("late", lambda: (0.0, 10.0))  # a request whose deadline is behind it
    try:
        budget.within_chain({}, "late", "fast-1b", runner("ollama"), 15.0)
    except ram_budget.Refused as exc:
        assert exc.reason == "the request's 10 s deadline ran out before this tier was tried"
    else:
        raise AssertionError("a hop after the deadline was let through")
