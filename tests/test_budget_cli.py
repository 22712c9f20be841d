"""The RAM budget as the CLI shows it: `ask`'s waiting line on a real pseudo-terminal (and nothing on a pipe or
with --json), `ask warm`, `ask serve`'s warm start, and the budget in `ask models` and `ask doctor`.

The proxy is a stand-in (`StandIn`): an OpenAI-compatible server that holds a request before its response
headers until the test releases it (where the budget plugin queues a request in the real proxy), says
`X-Served-By`, and answers Ollama's `/api/ps` and `/api/version` too. The budget plugin's state is written
with `contract.budget.write_state` where `RAM_BUDGET_STATE` points.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ask_cli import doctor, models
from ask_cli import serve as serving
from ask_cli.doctor import Check
from contract import budget, memory
from contract import tiers as tier_model

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-test-budget-cli"
NINE_B = "qwen3.5:9b"
TIERS = ("fast-9b", "coder-30b")


class StandIn:
    """The proxy (and an Ollama) in one small server; `hold` set: chat requests wait before their headers."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.hold = threading.Event()
        self.release = threading.Event()
        self.delay_s = 0.0  # before the headers, when not held
        self.refuse: str | None = None  # answer chat requests with this error (HTTP 500)
        self.ps: list[dict[str, Any]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.stand_in = self  # type: ignore[attr-defined]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        fake: StandIn = self.server.stand_in  # type: ignore[attr-defined]
        if self.path == "/v1/model/info":
            data = [
                {"model_name": tier, "litellm_params": {"model": f"ollama_chat/{tag}", "api_base": fake.url}}
                for tier, tag in zip(TIERS, (NINE_B, "qwen3-coder:30b"), strict=True)
            ]
            self._json(200, {"data": data})
        elif self.path == "/api/ps":
            self._json(200, {"models": fake.ps})
        elif self.path == "/api/version":
            self._json(200, {"version": "0.12.0"})
        else:
            self._json(404, {"error": "not here"})

    def do_POST(self) -> None:
        fake: StandIn = self.server.stand_in  # type: ignore[attr-defined]
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        fake.bodies.append(body)
        if fake.hold.is_set():
            fake.release.wait(30)
        elif fake.delay_s:
            time.sleep(fake.delay_s)  # the stand-in's own slowness, not the test's
        if fake.refuse:
            self._json(500, {"error": {"message": fake.refuse, "type": "server_error"}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Served-By", body.get("model", ""))
        self.send_header("X-Served-Lane", "local")
        self.end_headers()
        for word in ("Hello", " from", " the", " stand-in."):
            chunk = {"choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
            self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
        self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[StandIn]:
    fake = StandIn()
    monkeypatch.setenv("ASK_PROXY_URL", fake.url)
    monkeypatch.setenv("LITELLM_MASTER_KEY", KEY)
    monkeypatch.setenv("OLLAMA_API_BASE", fake.url)
    monkeypatch.setenv(budget.STATE_ENV, str(tmp_path / "budget.json"))
    monkeypatch.delenv(memory.BUDGET_ENV, raising=False)
    try:
        yield fake
    finally:
        fake.close()


def state(**parts: Any) -> dict[str, Any]:
    """A budget plugin state as plugins/ram_budget.py writes it."""
    base: dict[str, Any] = {
        "pid": 4242,
        "updated": time.time(),
        "budget_gb": 11.5,
        "source": "available 4.3 GB + ours 7.2 GB",
        "resident": [],
        "loading": [],
        "unloading": [],
        "queued": [],
    }
    return {**base, **parts}


# -- the waiting line --------------------------------------------------------------------------------------


def screen(raw: bytes) -> list[str]:
    """What a terminal shows after `raw`: `\\r` returns to the line's start, `ESC[2K` clears the line."""
    lines, col = [""], 0
    text = raw.decode("utf-8", "replace")
    i = 0
    while i < len(text):
        if text.startswith("\x1b[2K", i):
            lines[-1], i = "", i + 4
            continue
        ch = text[i]
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append("")
            col = 0
        else:
            row = lines[-1].ljust(col)
            lines[-1] = row[:col] + ch + row[col + 1 :]
            col += 1
        i += 1
    return lines


class Pty:
    """A child whose stdout and stderr are one pseudo-terminal, 100 columns wide, read with deadlines."""

    def __init__(self, args: list[str]) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ask_cli", *args],
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
            cwd=ROOT,
            env=dict(os.environ),
        )
        os.close(slave)
        self.raw = b""

    def read_until(self, done: Callable[[bytes], bool], within_s: float = 20.0) -> bytes:
        deadline = time.monotonic() + within_s
        while not done(self.raw):
            assert time.monotonic() < deadline, f"not seen within {within_s} s: {self.raw!r}"
            if select.select([self.master], [], [], 0.05)[0]:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: the child has closed the terminal
                    chunk = b""
                if not chunk:
                    break
                self.raw += chunk
        return self.raw

    def finish(self) -> list[str]:
        self.read_until(lambda _raw: False)
        assert self.proc.wait(10) == 0, self.raw
        os.close(self.master)
        return screen(self.raw)


def test_the_waiting_line_says_what_the_budget_waits_for_and_is_gone_before_the_answer(stand_in: StandIn) -> None:
    stand_in.hold.set()
    loading = {"tier": "fast-9b", "model": NINE_B, "gb": 7.2, "since": time.time()}
    budget.write_state(state(loading=[loading]))
    child = Pty(["--9b", "what is the budget?"])
    child.read_until(lambda raw: b"loading fast-9b (7.2 GB, " in raw)
    # the plugin's state changes: the line is rewritten in place, on the same row
    queued = {"tier": "fast-9b", "gb": 7.2, "waiting_for": ["coder-30b"], "since": time.time()}
    budget.write_state(state(queued=[queued]))
    child.read_until(lambda raw: b"waiting for coder-30b to finish" in raw)
    assert b"\n" not in child.raw  # still one line, rewritten
    stand_in.release.set()
    shown = [line for line in child.finish() if line.strip()]
    assert shown == ["Hello from the stand-in."], child.raw
    assert child.raw.index(b"waiting for coder-30b") < child.raw.index(b"Hello")
    assert "\x1b[2K" in child.raw.decode()


def test_the_waiting_line_without_a_budget_state_names_the_tier(stand_in: StandIn) -> None:
    stand_in.hold.set()
    child = Pty(["--coder", "refactor this"])
    child.read_until(lambda raw: "waiting for coder-30b…".encode() in raw)
    stand_in.release.set()
    assert [line for line in child.finish() if line.strip()] == ["Hello from the stand-in."]


def test_no_waiting_line_on_a_pipe(stand_in: StandIn) -> None:
    stand_in.delay_s = 1.6  # three polls of the line's clock
    budget.write_state(state(loading=[{"tier": "fast-9b", "model": NINE_B, "gb": 7.2, "since": time.time()}]))
    done = subprocess.run(
        [sys.executable, "-m", "ask_cli", "a slow question"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        cwd=ROOT,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"Hello from the stand-in.\n"
    assert done.stderr == b""


def test_no_waiting_line_with_json_on_a_terminal(stand_in: StandIn) -> None:
    stand_in.delay_s = 1.6
    budget.write_state(state(loading=[{"tier": "fast-9b", "model": NINE_B, "gb": 7.2, "since": time.time()}]))
    child = Pty(["--json", "a slow question"])
    lines = [line for line in child.finish() if line.strip()]
    assert len(lines) == 1 and json.loads(lines[0])["answer"] == "Hello from the stand-in."
    assert b"loading" not in child.raw and b"waiting" not in child.raw


def test_waiting_line_words() -> None:
    now = 1000.0
    loading = {"tier": "coder-30b", "model": "qwen3-coder:30b", "gb": 19.5, "since": now - 4.2}
    assert budget.waiting_line(state(loading=[loading]), "coder-30b", now) == "loading coder-30b (19.5 GB, 4 s)…"
    assert budget.waiting_line(state(loading=[{"tier": "coder-30b"}]), "coder-30b", now) == "loading coder-30b…"
    unloading = {"tier": "fast-9b", "model": NINE_B, "since": now}
    assert budget.waiting_line(state(unloading=[unloading]), "coder-30b") == "unloading fast-9b to make room…"
    assert budget.waiting_line(state(), "coder-30b") is None and budget.waiting_line(None, "coder-30b") is None


# -- ask warm ----------------------------------------------------------------------------------------------


def ask(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ask_cli", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_warm_loads_the_tier_with_one_uncached_token_and_no_fallbacks(stand_in: StandIn) -> None:
    done = ask("warm", "fast-9b")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"fast-9b warm \(\d+\.\d s\)\n", done.stderr), done.stderr
    assert done.stdout == ""
    [body] = stand_in.bodies
    assert body["model"] == "fast-9b" and body["max_tokens"] == 1 and body["stream"] is True
    assert body["cache"] == {"no-cache": True, "no-store": True}
    assert body["fallbacks"] == [] and body["disable_fallbacks"] is True
    assert body["metadata"] == {"ram_budget": "warm"}


def test_warm_refused_says_the_proxys_reason(stand_in: StandIn) -> None:
    stand_in.refuse = "coder-30b: would not fit (19.5 GB needed, 7.2 GB held by fast-9b, busy)"
    done = ask("warm", "coder-30b")
    assert done.returncode == 1
    assert done.stderr == f"ask: coder-30b not warmed: {stand_in.refuse}\n"


def test_warm_of_an_unknown_tier_lists_the_tiers(stand_in: StandIn) -> None:
    done = ask("warm", "gpt-17")
    assert done.returncode == 2
    assert done.stderr == "ask: unknown tier 'gpt-17': this stack serves fast-9b, coder-30b\n"
    assert stand_in.bodies == []


def test_warm_with_the_proxy_down_says_ask_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASK_PROXY_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("LITELLM_MASTER_KEY", KEY)
    done = ask("warm", "fast-9b")  # the tiers come from the yaml
    assert done.returncode == 1
    assert done.stderr.startswith("ask: fast-9b not warmed: the proxy is not running at http://127.0.0.1:9")
    assert done.stderr.rstrip().endswith("start it with `ask serve`")


# -- ask serve's warm start --------------------------------------------------------------------------------


def serve_tiers(base: str) -> tier_model.Tiers:
    return tier_model.build(
        [{"model_name": "fast-9b", "litellm_params": {"model": f"ollama_chat/{NINE_B}", "api_base": base}}]
    )


def wait_for(lines: list[str], prefix: str, within_s: float = 20.0) -> str:
    deadline = time.monotonic() + within_s
    while not any(line.startswith(prefix) for line in lines):
        assert time.monotonic() < deadline, lines
        time.sleep(0.02)
    return next(line for line in lines if line.startswith(prefix))


def stack_for(stand_in: StandIn, lines: list[str]) -> serving.Stack:
    return serving.Stack(
        config=ROOT / "litellm-config.yaml", port=int(stand_in.url.rsplit(":", 1)[1]), log=lines.append
    )


def test_serve_warms_the_default_tier_when_ollama_answers(stand_in: StandIn) -> None:
    lines: list[str] = []
    stack = stack_for(stand_in, lines)
    stack._warm_in_background(serve_tiers(stand_in.url), [Check("ok", f"ollama 0.12.0 answers at {stand_in.url}")])
    assert re.fullmatch(r"warm: fast-9b loaded in \d+\.\d s", wait_for(lines, "warm: "))
    [body] = stand_in.bodies
    assert body["metadata"] == {"ram_budget": "warm"} and body["max_tokens"] == 1


def test_serve_says_why_the_default_tier_was_not_warmed(stand_in: StandIn) -> None:
    stand_in.refuse = "fast-9b: would not fit even alone (7.2 GB needed, budget 4.0 GB: RAM_BUDGET_GB)"
    lines: list[str] = []
    stack_for(stand_in, lines)._warm_in_background(
        serve_tiers(stand_in.url), [Check("ok", f"ollama 0.12.0 answers at {stand_in.url}")]
    )
    assert wait_for(lines, "warm: ") == f"warm: fast-9b not warmed: {stand_in.refuse}"


def test_serve_does_not_warm_when_ollama_is_down(stand_in: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[object] = []

    class Recorded(threading.Thread):
        def start(self) -> None:
            started.append(self.name)

    monkeypatch.setattr(serving, "threading", SimpleNamespace(Thread=Recorded))  # only serve's own threads
    lines: list[str] = []
    down = [Check("FAIL", f"ollama: nothing answers at {stand_in.url} (connection refused)")]
    stack_for(stand_in, lines)._warm_in_background(serve_tiers(stand_in.url), down)
    assert started == [] and lines == []
    stack_for(stand_in, lines)._warm_in_background(
        serve_tiers(stand_in.url), [Check("ok", f"x answers at {stand_in.url}")]
    )
    assert started == ["warm"]  # the same call with Ollama up would have warmed


def test_serve_has_a_no_warm_switch() -> None:
    done = ask("serve", "--help")
    assert done.returncode == 0 and "--no-warm" in done.stdout


# -- the budget in ask models and ask doctor ---------------------------------------------------------------


def test_models_shows_the_budget_plugins_state(stand_in: StandIn, capsys: pytest.CaptureFixture[str]) -> None:
    resident = {"tier": "fast-9b", "model": NINE_B, "runtime": "ollama", "gb": 7.2, "busy": 1}
    queued = {"tier": "coder-30b", "gb": 19.5, "waiting_for": ["fast-9b"], "since": time.time() - 3}
    budget.write_state(state(resident=[resident], queued=[queued]))
    assert models.run(as_json=True) == 0
    out = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in out["tiers"]] == list(TIERS)
    shown = out["budget"]
    assert shown["budget_gb"] == 11.5 and shown["source"] == "available 4.3 GB + ours 7.2 GB"
    assert shown["resident"] == [resident] and shown["queued"] == [queued] and shown["loading"] == []
    assert "budget plugin" in shown["from"]

    assert models.run() == 0
    table = capsys.readouterr().out.splitlines()
    assert "budget: 11.5 GB (available 4.3 GB + ours 7.2 GB)" in table
    assert f"resident: fast-9b ({NINE_B}) 7.2 GB, busy" in table
    assert "queued: coder-30b 19.5 GB, waiting for fast-9b, 3s" in table


def test_without_the_plugins_state_models_reads_ollama_and_this_machine(stand_in: StandIn) -> None:
    stand_in.ps = [{"name": NINE_B, "size": 7_200_000_000, "expires_at": "2099-01-01T00:00:00Z"}]
    tiers = models.read_tiers().tiers
    shown = models.budget_view(tiers)
    assert shown["resident"] == [{"tier": "fast-9b", "model": NINE_B, "runtime": "ollama", "gb": 7.2, "busy": None}]
    available = memory.available_gb()
    assert available is not None  # Linux: /proc/meminfo
    assert shown["budget_gb"] == pytest.approx(available + 7.2, abs=0.3)
    assert re.fullmatch(r"available \d+\.\d GB \+ ours 7\.2 GB", shown["source"])


def test_doctor_checks_the_budget_models_shows(stand_in: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    tiers = models.read_tiers().tiers
    budget.write_state(state(budget_gb=24.0, source="ram_budget.budget_gb"))
    assert doctor.budget_of(tiers) == (24.0, "ram_budget.budget_gb")
    assert doctor.budget_checks(tiers, *doctor.budget_of(tiers))[0].line() == (
        "ok    budget: 24.0 GB for models (ram_budget.budget_gb)"
    )
    budget.state_file().unlink()
    monkeypatch.setenv(memory.BUDGET_ENV, "11.5")
    assert models.budget_view(tiers)["budget_gb"] == 11.5
    assert doctor.budget_of(tiers) == (11.5, "RAM_BUDGET_GB")
    monkeypatch.setenv(memory.BUDGET_ENV, "plenty")
    [unknown] = doctor.budget_checks(tiers, *doctor.budget_of(tiers))
    assert unknown.status == "warn" and "RAM_BUDGET_GB=plenty is not a positive number of GB" in unknown.what
