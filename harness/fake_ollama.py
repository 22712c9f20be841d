"""An emulated Ollama server (stdlib only) with per-model fault injection and a record of every request.

Why it exists: Ollama cannot be installed on the machines this project is tested on, yet the real LiteLLM
proxy must be driven against Ollama's own wire format (``ollama_chat/<tag>`` -> ``POST /api/chat``),
including the ways a local Ollama fails. The behaviour below follows Ollama's ``server/routes.go`` and runner
code as read on ``main`` (2025-2026, the 0.12+ line), not a guess at it:

- ``/api/chat`` streams NDJSON by default (``stream`` absent means true); the last object carries
  ``done_reason`` and the durations/counters. Errors that happen before the first byte are a plain JSON
  ``{"error": ...}`` with a status code; errors after it are one more ``{"error": ...}`` line in the stream.
- A model that is not pulled gives 404 ``{"error": "model '<tag>' not found"}`` (ChatHandler's own lookup).
  The older text ``model "<tag>" not found, try pulling it first`` comes from ``handleScheduleError`` and is
  only reached on versions where ChatHandler did not look the model up first.
- Thinking-capable models think when ``think`` is absent (ChatHandler sets it to true); ``think: true`` on a
  model without the capability is a 400; ``tools`` on a model without the ``tools`` capability is a 400.
- A prompt longer than the context (``options.num_ctx``, default 4096, capped at the model's trained length)
  is *silently truncated* by default: Ollama drops the oldest messages, answers 200 and reports the clipped
  ``prompt_eval_count``. Only with the top-level request field ``truncate: false`` does the runner refuse,
  which reaches the client as HTTP 400 ``{"error": "the input length exceeds the context length"}`` (the
  runner's ``errorInputTooLong``, wrapped by ``llm/server.go`` into a StatusError, returned by ChatHandler
  before any byte is streamed). The ``context_overflow`` fault and ``strict_context=True`` force that error.
- ``keep_alive`` accepts a Go duration string or a number of seconds; negative means forever, 0 unloads as
  soon as the request ends; absent means the server default (``OLLAMA_KEEP_ALIVE``, 5m).

Use in-process (``with FakeOllama() as fake: ... fake.url``) or as a process:
``python -m harness.fake_ollama --port 11434 [--models a,b]``, driven over ``/_fake/*``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import signal
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import BaseRequestHandler, TCPServer
from typing import Any

__all__ = [
    "DEFAULT_MODELS",
    "FAULTS",
    "THINKING_TEXT",
    "FakeOllama",
    "ModelSpec",
    "Recorded",
    "parse_keep_alive",
    "reply_text",
    "spec_for",
]

OLLAMA_VERSION = "0.12.0"
DEFAULT_MODELS: tuple[str, ...] = ("qwen3.5:9b", "llama3.2:3b", "gemma3:1b", "qwen3-coder:30b")
FAULTS: tuple[str, ...] = (
    "http_500",
    "not_found",
    "drop_before_headers",
    "drop_mid_stream",
    "stream_error",
    "timeout",
    "context_overflow",
    "slow",
)
_FAULT_PARAMS = frozenset({"delay_s", "token_delay_s", "times", "message"})

RUNNER_KILLED = "llama runner process has terminated: signal: killed"
RUNNER_STREAM_ERROR = "an error was encountered while running the model: unexpected EOF"
INPUT_TOO_LONG = "the input length exceeds the context length"
THINKING_TEXT = "The user wants a short greeting, so I will answer briefly."


@dataclass(frozen=True)
class ModelSpec:
    """What ``/api/tags``, ``/api/show`` and ``/api/ps`` report for one tag, and what it can do."""

    family: str
    parameter_size: str
    size: int
    context_length: int
    capabilities: tuple[str, ...] = ("completion",)
    quantization_level: str = "Q4_K_M"


MODEL_SPECS: dict[str, ModelSpec] = {
    "qwen3.5:9b": ModelSpec("qwen35", "9.0B", 6_594_474_711, 262_144, ("completion", "vision", "tools", "thinking")),
    "llama3.2:3b": ModelSpec("llama", "3.2B", 2_019_393_189, 131_072, ("completion", "tools")),
    "gemma3:1b": ModelSpec("gemma3", "999.89M", 815_319_791, 32_768),
    "qwen3-coder:30b": ModelSpec("qwen3moe", "30.5B", 18_556_700_761, 262_144, ("completion", "tools")),
}
_DEFAULT_SPEC = ModelSpec("llama", "7B", 4_000_000_000, 8_192)


def _normalize(tag: str) -> str:
    """Ollama's name matching: case-insensitive, and a missing tag means ``:latest``."""
    tag = tag.strip().lower()
    return tag if ":" in tag.rsplit("/", 1)[-1] else f"{tag}:latest"


def spec_for(tag: str) -> ModelSpec:
    """The spec of a tag: from ``MODEL_SPECS``, else a plausible 7B default (qwen3.5 tags can think)."""
    key = _normalize(tag)
    if key in MODEL_SPECS:
        return MODEL_SPECS[key]
    if key.startswith("qwen3.5"):
        return ModelSpec("qwen35", "9.0B", 6_594_474_711, 262_144, ("completion", "tools", "thinking"))
    return _DEFAULT_SPEC


_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([^\d.]*)")


def _go_duration(text: str) -> float:
    """Seconds in a Go ``time.ParseDuration`` string, with Go's error messages (Ollama returns them)."""
    invalid = ValueError(f'time: invalid duration "{text}"')
    s, sign = text, 1.0
    if s[:1] in ("+", "-"):
        sign, s = (-1.0 if s[0] == "-" else 1.0), s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise invalid
    total, pos = 0.0, 0
    while pos < len(s):
        m = _GO_PART.match(s, pos)
        if not m:
            raise invalid
        number, unit = m.groups()
        if not unit:
            raise ValueError(f'time: missing unit in duration "{text}"')
        if unit not in _GO_UNITS:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{text}"')
        total += float(number) * _GO_UNITS[unit]
        pos = m.end()
    return sign * total


def parse_keep_alive(value: object) -> float | None:
    """Seconds a model stays loaded after a request, as Ollama's ``api.Duration`` reads ``keep_alive``.

    A number is seconds, a string is a Go duration ("15m", "1h30m", "0"); anything negative means forever
    (returned as None). Raises ValueError with Ollama's message for anything else (e.g. "300" has no unit).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"Unsupported type: '{type(value).__name__}'")
    seconds = float(value) if not isinstance(value, str) else _go_duration(value)
    return None if seconds < 0 else seconds


def reply_text(model: str, prompt_chars: int) -> str:
    """The deterministic answer: names the model (as requested) and echoes the prompt length."""
    return f"Hello from {model}. You sent {prompt_chars} characters."


def _pieces(text: str) -> list[str]:
    """Word-sized pieces whose concatenation is the text: the fake's notion of a token."""
    return re.findall(r"\s*\S+\s*", text) or [text]


def _rfc3339(ts: float) -> str:
    """Go's RFC3339Nano rendering of a local time (fraction without trailing zeros, ``Z`` for UTC)."""
    dt = datetime.fromtimestamp(ts, UTC).astimezone()
    return _format_dt(dt)


def _format_dt(dt: datetime) -> str:
    frac = f".{dt.microsecond:06d}".rstrip("0").rstrip(".")
    offset = dt.strftime("%z")
    tz = "Z" if offset in ("+0000", "") else f"{offset[:3]}:{offset[3:]}"
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + frac + tz


def _forever() -> str:
    """What Ollama reports for a negative keep_alive: now plus Go's max duration (about 292 years)."""
    dt = datetime.now(UTC).astimezone() + timedelta(microseconds=(2**63 - 1) // 1000)
    return _format_dt(dt)


def _dumps(obj: object) -> str:
    """Compact JSON escaped like Go's encoding/json (HTML characters as \\u escapes, UTF-8 kept)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    for ch in "<>&\u2028\u2029":
        text = text.replace(ch, f"\\u{ord(ch):04x}")
    return text


def _json_answer(fmt: object, text: str) -> str:
    """A reply honouring ``format``: "json" or a JSON schema gets valid JSON whose strings carry the text."""
    if isinstance(fmt, dict) and isinstance(fmt.get("properties"), dict):
        defaults = {"string": text, "integer": 0, "number": 0, "boolean": True, "array": [], "object": {}}
        obj = {k: defaults.get((v or {}).get("type"), text) for k, v in fmt["properties"].items()}
        return json.dumps(obj)
    return json.dumps({"message": text})


@dataclass
class Recorded:
    """One request as the fake saw it; ``ts_end`` and ``status`` stay None while it runs (or if dropped)."""

    ts_start: float
    ts_end: float | None
    method: str
    path: str
    model: str | None
    body: dict | None
    headers: dict
    status: int | None = None
    fault: str | None = None


@dataclass
class _Fault:
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    remaining: int | None = None


@dataclass
class _Loaded:
    name: str
    num_ctx: int
    session_s: float | None
    in_flight: int = 0
    expires: float | None = None


class FakeOllama:
    """An Ollama look-alike on 127.0.0.1 for tests and benchmarks: ``with FakeOllama() as fake: fake.url``.

    Faults (``set_fault(tag, name, **params)``) apply to /api/chat and /api/generate for that tag:
    http_500, not_found, drop_before_headers, drop_mid_stream, stream_error, timeout (``delay_s``=30),
    context_overflow, slow (``delay_s``, ``token_delay_s``). Every fault also takes ``times`` (apply to the
    next N requests, then clear) and the error faults take ``message``.
    """

    def __init__(
        self,
        models: Iterable[str] = DEFAULT_MODELS,
        port: int = 0,
        *,
        default_keep_alive: str | float = "5m",
        default_num_ctx: int = 4096,
        strict_context: bool = False,
        verbose: bool = False,
    ) -> None:
        self._models = {_normalize(m): m if ":" in m.rsplit("/", 1)[-1] else f"{m}:latest" for m in models}
        self._port = port
        self._default_keep_alive = parse_keep_alive(default_keep_alive)
        self.default_num_ctx = default_num_ctx
        self.strict_context = strict_context
        self.verbose = verbose
        self._lock = threading.Lock()
        self._faults: dict[str, _Fault] = {}
        self._requests: list[Recorded] = []
        self._loaded: dict[str, _Loaded] = {}
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._bound_port: int | None = None
        self._modified_at = time.time() - 86_400

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> FakeOllama:
        """Bind 127.0.0.1:port (0 picks a free one) and serve from a daemon thread."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", self._port), _Handler, self)
        self._bound_port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-ollama", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop promptly: wake sleeping faults, stop accepting, and cut every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_all_connections()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def __enter__(self) -> FakeOllama:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port; still readable after stop(), when it refuses connections (a dead Ollama)."""
        if self._bound_port is None:
            raise RuntimeError("FakeOllama was never started; call start()")
        return self._bound_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def models(self) -> list[str]:
        return list(self._models.values())

    # -- faults ----------------------------------------------------------------------------------------

    def set_fault(self, tag: str, fault: str | None, **params: Any) -> None:
        """Make requests for ``tag`` fail (or slow down) as ``fault`` says; None clears the tag's fault."""
        if fault is None:
            with self._lock:
                self._faults.pop(_normalize(tag), None)
            return
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {', '.join(FAULTS)}")
        unknown = set(params) - _FAULT_PARAMS
        if unknown:
            raise ValueError(f"unknown fault parameter(s): {', '.join(sorted(unknown))}")
        times = params.pop("times", None)
        if times is not None and int(times) < 1:
            raise ValueError("times must be at least 1 (use set_fault(tag, None) to clear a fault)")
        with self._lock:
            self._faults[_normalize(tag)] = _Fault(fault, params, None if times is None else int(times))

    def faults(self) -> dict[str, dict[str, Any]]:
        """The faults in force, by normalized tag (``times`` is what is left, None for unlimited)."""
        with self._lock:
            return {k: {"fault": f.name, "times": f.remaining, **f.params} for k, f in self._faults.items()}

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset(self) -> None:
        """Forget faults, the record and loaded models: a fresh server on the same port."""
        with self._lock:
            self._faults.clear()
            self._requests.clear()
            self._loaded.clear()

    def _take_fault(self, tag: str) -> _Fault | None:
        """The fault for one inference request, counting down ``times``."""
        with self._lock:
            fault = self._faults.get(_normalize(tag))
            if fault is not None and fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self._faults[_normalize(tag)]
            return fault

    def _hidden(self, tag: str) -> bool:
        with self._lock:
            fault = self._faults.get(_normalize(tag))
        return fault is not None and fault.name == "not_found"

    def _pulled(self, tag: str) -> str | None:
        """The listed name of a pulled, visible tag, else None."""
        name = self._models.get(_normalize(tag))
        return None if name is None or self._hidden(tag) else name

    # -- record ----------------------------------------------------------------------------------------

    @property
    def requests(self) -> list[Recorded]:
        """A snapshot of every request so far (the ``/_fake/*`` control calls excluded)."""
        with self._lock:
            return list(self._requests)

    def chat_requests(self, model: str | None = None) -> list[Recorded]:
        return [
            r
            for r in self.requests
            if r.path == "/api/chat" and (model is None or _normalize(r.model or "") == _normalize(model))
        ]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def _record(self, rec: Recorded) -> None:
        with self._lock:
            self._requests.append(rec)

    # -- loaded models (/api/ps) -----------------------------------------------------------------------

    def _begin_load(self, tag: str, num_ctx: int, session_s: float | None) -> None:
        """Mark a model loaded and busy: /api/ps lists it until keep_alive runs out after the request."""
        key = _normalize(tag)
        with self._lock:
            entry = self._loaded.setdefault(key, _Loaded(self._models.get(key, tag), num_ctx, session_s))
            entry.num_ctx, entry.session_s = num_ctx, session_s
            entry.in_flight += 1

    def _end_load(self, tag: str, session_s: float | None) -> None:
        with self._lock:
            entry = self._loaded.get(_normalize(tag))
            if entry is None:
                return
            entry.in_flight = max(0, entry.in_flight - 1)
            entry.session_s = session_s
            entry.expires = None if session_s is None else time.time() + session_s

    def _unload(self, tag: str) -> None:
        with self._lock:
            self._loaded.pop(_normalize(tag), None)

    # -- payloads --------------------------------------------------------------------------------------

    @staticmethod
    def _details(spec: ModelSpec) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": spec.family,
            "families": [spec.family],
            "parameter_size": spec.parameter_size,
            "quantization_level": spec.quantization_level,
        }

    def tags_payload(self) -> dict[str, Any]:
        models = []
        for key, name in self._models.items():
            if self._hidden(key):
                continue
            spec = spec_for(key)
            models.append(
                {
                    "name": name,
                    "model": name,
                    "modified_at": _rfc3339(self._modified_at),
                    "size": spec.size,
                    "digest": sha256(key.encode()).hexdigest(),
                    "details": self._details(spec),
                }
            )
        return {"models": models}

    def ps_payload(self) -> dict[str, Any]:
        now = time.time()
        rows: list[tuple[float, dict[str, Any]]] = []
        with self._lock:
            loaded = list(self._loaded.items())
        for key, entry in loaded:
            if entry.in_flight:
                expires = None if entry.session_s is None else now + entry.session_s
            elif entry.expires is None or entry.expires > now:
                expires = entry.expires
            else:
                continue
            if self._hidden(key):
                continue
            spec = spec_for(key)
            row = {
                "name": entry.name,
                "model": entry.name,
                "size": spec.size,
                "digest": sha256(key.encode()).hexdigest(),
                "details": self._details(spec),
                "expires_at": _forever() if expires is None else _rfc3339(expires),
                "size_vram": spec.size,
                "context_length": entry.num_ctx,
            }
            rows.append((math.inf if expires is None else expires, row))
        rows.sort(key=lambda r: r[0], reverse=True)
        return {"models": [row for _, row in rows]}

    def show_payload(self, tag: str) -> dict[str, Any] | None:
        name = self._pulled(tag)
        if name is None:
            return None
        spec = spec_for(tag)
        tools = "tools" in spec.capabilities
        template = "{{- if .Tools }}{{ .Tools }}{{ end }}{{ .Prompt }}" if tools else "{{ .Prompt }}"
        return {
            "license": "",
            "modelfile": f'# Modelfile generated by "ollama show"\nFROM {name}\n',
            "parameters": "",
            "template": template,
            "details": self._details(spec),
            "model_info": {
                "general.architecture": spec.family,
                "general.parameter_count": _param_count(spec.parameter_size),
                f"{spec.family}.context_length": spec.context_length,
            },
            "capabilities": list(spec.capabilities),
            "modified_at": _rfc3339(self._modified_at),
        }

    def _wait(self, seconds: float) -> bool:
        """Sleep unless stopping; True means stop() was called and the caller should give up."""
        if seconds > 0:
            self._stopping.wait(seconds)
        return self._stopping.is_set()


class FakeOllamaControl:
    """Drive a fake running in another process over its ``/_fake/*`` API: faults in, records out."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _call(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as resp:
            return json.loads(resp.read())

    def requests(self) -> list[dict[str, Any]]:
        """Every request the fake has received, oldest first (control calls excluded)."""
        return self._call("/_fake/requests")["requests"]

    def chats(self) -> list[dict[str, Any]]:
        """Only the ``/api/chat`` requests: one per answered request, whoever sent it."""
        return [r for r in self.requests() if r["path"] == "/api/chat"]

    def faults(self) -> dict[str, dict[str, Any]]:
        return self._call("/_fake/faults")["faults"]

    def set_fault(self, tag: str, fault: str | None, **params: Any) -> None:
        self._call("/_fake/fault", {"model": tag, "fault": fault, **params})


def _param_count(size: str) -> int:
    scale = {"K": 1e3, "M": 1e6, "B": 1e9}.get(size[-1:], 1.0)
    try:
        return int(float(size[:-1]) * scale)
    except ValueError:
        return 0


def _full_name(name: str) -> str:
    """How Ollama spells a model in capability errors: registry.ollama.ai/library/<name>."""
    parts = name.split("/")
    if len(parts) == 1:
        parts = ["library", *parts]
    if len(parts) == 2:
        parts = ["registry.ollama.ai", *parts]
    return "/".join(parts)


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with TCP_NODELAY per connection and a way to cut them all on stop()."""

    daemon_threads = True
    block_on_close = False
    # socketserver's backlog of 5 overflowed under 32 new connections at once (a reset, a 1 s SYN retry, and a
    # backend that looked slow); real Ollama (Go net/http) uses the system's.
    request_queue_size = 1024

    def __init__(self, addr: tuple[str, int], handler: type[BaseRequestHandler], fake: FakeOllama) -> None:
        self.fake = fake
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(addr, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) that can stall an offline machine.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        # Without this, a response written as header + body segments meets the client's delayed ACK: +40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._conns_lock:
            self._conns.add(sock)
        return sock, addr

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_all_connections(self) -> None:
        with self._conns_lock:
            conns, self._conns = list(self._conns), set()
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client went away or a fault cut the line: expected here
        super().handle_error(request, client_address)


_ROUTES: dict[str, tuple[str, ...]] = {
    "/": ("GET", "HEAD"),
    "/api/version": ("GET", "HEAD"),
    "/api/tags": ("GET", "HEAD"),
    "/api/ps": ("GET",),
    "/api/show": ("POST",),
    "/api/chat": ("POST",),
    "/api/generate": ("POST",),
    "/_fake/fault": ("POST",),
    "/_fake/reset": ("POST",),
    "/_fake/requests": ("GET",),
    "/_fake/faults": ("GET",),
}


class _BadRequest(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: LiteLLM's httpx pool reuses connections
    server: _Server

    # -- plumbing --------------------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.fake.verbose:
            sys.stderr.write(f"fake-ollama {self.address_string()} {format % args}\n")

    def send_response(self, code: int, message: str | None = None) -> None:
        """Like Go's net/http: a Date header and no Server header."""
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())
        if self._rec is not None:
            self._rec.status = code

    def _done(self) -> None:
        """Close the record before the last byte leaves, so a client that has its answer sees it whole."""
        if self._rec is not None and self._rec.ts_end is None:
            self._rec.ts_end = time.time()

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline(65537).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_bytes(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self._done()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, obj: object) -> None:
        self._send_bytes(status, _dumps(obj).encode(), "application/json; charset=utf-8")

    def _send_text(self, status: int, text: str) -> None:
        self._send_bytes(status, text.encode(), "text/plain; charset=utf-8")

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _send_line(self, obj: object) -> None:
        data = (_dumps(obj) + "\n").encode()
        self.wfile.write(b"%X\r\n" % len(data) + data + b"\r\n")

    def _end_stream(self) -> None:
        self._done()
        self.wfile.write(b"0\r\n\r\n")

    def _abort(self) -> None:
        """Cut the connection here: the client meets EOF where a response (or the rest of one) was due."""
        self.close_connection = True
        self._done()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    # -- routing ---------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        self._rec: Recorded | None = None
        path = self.path.split("?", 1)[0]
        raw = self._read_body()
        body: dict | None = None
        body_error: str | None = None
        if raw.strip():
            try:
                parsed = json.loads(raw)
                if isinstance(parsed, dict):
                    body = parsed
                else:
                    kind = type(parsed).__name__
                    body_error = f"json: cannot unmarshal {kind} into Go value of type api.Request"
            except ValueError as exc:
                body_error = f"invalid character in request body: {exc.msg}"
        if path.startswith("/_fake/"):
            self._control(path, body)
            return
        model = None
        if body is not None:
            model = body.get("model") or body.get("name")
            model = model if isinstance(model, str) else None
        rec = self._rec = Recorded(time.time(), None, self.command, path, model, body, dict(self.headers.items()))
        self.server.fake._record(rec)
        try:
            self._route(path, body, body_error, rec)
        finally:
            self._done()

    def _route(self, path: str, body: dict | None, body_error: str | None, rec: Recorded) -> None:
        methods = _ROUTES.get(path)
        if methods is None:
            self._send_text(404, "404 page not found")
            return
        if self.command not in methods:
            self._send_text(405, "405 method not allowed")
            return
        fake = self.server.fake
        if path == "/":
            self._send_text(200, "Ollama is running")
        elif path == "/api/version":
            self._send_json(200, {"version": OLLAMA_VERSION})
        elif path == "/api/tags":
            self._send_json(200, fake.tags_payload())
        elif path == "/api/ps":
            self._send_json(200, fake.ps_payload())
        elif body_error is not None or body is None:
            self._send_json(400, {"error": body_error or "missing request body"})
        elif path == "/api/show":
            tag = body.get("model") or body.get("name")
            if not isinstance(tag, str) or not tag:
                self._send_json(400, {"error": "model is required"})
                return
            payload = fake.show_payload(tag)
            if payload is None:
                self._send_json(404, {"error": f"model '{tag}' not found"})
            else:
                self._send_json(200, payload)
        else:
            self._inference(path == "/api/chat", body, rec)

    def _control(self, path: str, body: dict | None) -> None:
        """The fake's own API, so an out-of-process fake can be driven and inspected."""
        fake = self.server.fake
        if path not in _ROUTES:
            self._send_text(404, "404 page not found")
        elif self.command not in _ROUTES[path]:
            self._send_text(405, "405 method not allowed")
        elif path == "/_fake/requests":
            self._send_json(200, {"requests": [asdict(r) for r in fake.requests]})
        elif path == "/_fake/faults":
            self._send_json(200, {"faults": fake.faults()})
        elif path == "/_fake/reset":
            fake.reset()
            self._send_json(200, {"ok": True})
        else:
            body = dict(body or {})
            tag, fault = body.pop("model", None), body.pop("fault", None)
            if not isinstance(tag, str) or not tag:
                self._send_json(400, {"error": "model is required"})
                return
            try:
                fake.set_fault(tag, fault, **body)
            except (TypeError, ValueError) as exc:
                self._send_json(400, {"error": str(exc)})
                return
            self._send_json(200, {"ok": True})

    # -- inference -------------------------------------------------------------------------------------

    def _inference(self, chat: bool, body: dict, rec: Recorded) -> None:
        """/api/chat and /api/generate, in the order Ollama checks things."""
        fake = self.server.fake
        started = time.perf_counter()
        model = body.get("model")
        if not isinstance(model, str) or not model:
            self._send_json(400, {"error": "model is required"})
            return
        try:
            session_s = fake._default_keep_alive
            if body.get("keep_alive") is not None:
                session_s = parse_keep_alive(body["keep_alive"])
            options = body.get("options") or {}
            if not isinstance(options, dict):
                raise _BadRequest("json: cannot unmarshal options into Go struct field of type map")
            try:
                requested_ctx = int(options.get("num_ctx") or fake.default_num_ctx)
                num_predict = int(options.get("num_predict") or 0)
            except (TypeError, ValueError):
                raise _BadRequest("invalid options: num_ctx and num_predict must be numbers") from None
            messages = body.get("messages") if chat else None
            if chat and messages is not None and not isinstance(messages, list):
                raise _BadRequest("json: cannot unmarshal messages into Go struct field of type []Message")
        except (ValueError, _BadRequest) as exc:
            self._send_json(400, {"error": str(exc)})
            return
        stream = body.get("stream") is not False
        fault = fake._take_fault(model)
        rec.fault = fault.name if fault else None
        params = fault.params if fault else {}

        if fault and fault.name == "drop_before_headers":
            self._abort()
            return
        name = fake._pulled(model)
        if name is None:
            self._send_json(404, {"error": f"model '{model}' not found"})
            return
        spec = spec_for(model)
        empty = not messages if chat else not body.get("prompt")
        if empty and session_s == 0:
            fake._unload(model)
            self._send_json(200, self._frame(chat, model, "", "", done=True, done_reason="unload"))
            return

        think = body.get("think")
        if think is None:
            think_on = "thinking" in spec.capabilities
        else:
            think_on = think not in (False, "", "false", "none")
            if think_on and "thinking" not in spec.capabilities:
                self._send_json(400, {"error": f'"{model}" does not support thinking'})
                return
        if chat and body.get("tools") and "tools" not in spec.capabilities:
            self._send_json(400, {"error": f"{_full_name(name)} does not support tools"})
            return

        if fault and fault.name in ("timeout", "slow"):
            default_delay = 30.0 if fault.name == "timeout" else 0.0
            if fake._wait(float(params.get("delay_s", default_delay))):
                self._abort()
                return
        if fault and fault.name == "http_500":
            self._send_json(500, {"error": params.get("message") or RUNNER_KILLED})
            return

        num_ctx = min(requested_ctx, spec.context_length)  # Ollama caps num_ctx at the trained length
        fake._begin_load(model, num_ctx, session_s)
        try:
            loaded = time.perf_counter()
            if empty:
                self._send_json(200, self._frame(chat, model, "", "", done=True, done_reason="load"))
                return
            self._generate(chat, body, model, num_ctx, num_predict, think_on, stream, fault, started, loaded)
        finally:
            fake._end_load(model, session_s)

    def _frame(self, chat: bool, model: str, content: str, thinking: str, done: bool, **extra: Any) -> dict:
        """One response object in Ollama's shape: message{} for chat, response for generate."""
        obj: dict[str, Any] = {"model": model, "created_at": _rfc3339(time.time())}
        if chat:
            message = {"role": "assistant", "content": content}
            if thinking:
                message["thinking"] = thinking
            obj["message"] = message
        else:
            obj["response"] = content
            if thinking:
                obj["thinking"] = thinking
        obj["done"] = done
        obj.update(extra)
        return obj

    def _generate(
        self,
        chat: bool,
        body: dict,
        model: str,
        num_ctx: int,
        num_predict: int,
        think_on: bool,
        stream: bool,
        fault: _Fault | None,
        started: float,
        loaded: float,
    ) -> None:
        """The reply itself (streamed or whole), where the mid-generation faults strike."""
        fake = self.server.fake
        params = fault.params if fault else {}
        if chat:
            texts = [str(m.get("content") or "") for m in body.get("messages") or [] if isinstance(m, dict)]
        else:
            texts = [str(body.get("system") or ""), str(body.get("prompt") or "")]
        prompt_chars = sum(len(t) for t in texts)
        tools_chars = len(json.dumps(body["tools"])) if chat and body.get("tools") else 0
        prompt_tokens = max(1, math.ceil((prompt_chars + tools_chars) / 4))

        if prompt_tokens > num_ctx or (fault and fault.name == "context_overflow"):
            forced = fault is not None and fault.name == "context_overflow"
            if forced or fake.strict_context or body.get("truncate") is False:
                self._send_json(400, {"error": params.get("message") or INPUT_TOO_LONG})
                return
            prompt_tokens = num_ctx  # Ollama drops the oldest messages until the prompt fits, silently

        text = reply_text(model, prompt_chars)
        if body.get("format"):
            text = _json_answer(body["format"], text)
        pieces = [("thinking", p) for p in _pieces(THINKING_TEXT)] if think_on else []
        pieces += [("content", p) for p in _pieces(text)]
        done_reason = "stop"
        if 0 < num_predict < len(pieces):
            pieces, done_reason = pieces[:num_predict], "length"

        token_delay = float(params.get("token_delay_s", 0.0)) if fault and fault.name == "slow" else 0.0
        cut_at = min(2, len(pieces)) if fault and fault.name in ("drop_mid_stream", "stream_error") else None

        def final(first: float, last: float) -> dict:
            end = time.perf_counter()
            return {
                "done_reason": done_reason,
                "total_duration": max(1, int((end - started) * 1e9)),
                "load_duration": max(1, int((loaded - started) * 1e9)),
                "prompt_eval_count": prompt_tokens,
                "prompt_eval_duration": max(1, int((first - loaded) * 1e9)),
                "eval_count": len(pieces),
                "eval_duration": max(1, int((last - first) * 1e9)),
            }

        if not stream:
            first = time.perf_counter()
            if token_delay and fake._wait(token_delay * len(pieces)):
                self._abort()
                return
            if fault and fault.name == "stream_error":
                self._send_json(500, {"error": params.get("message") or RUNNER_STREAM_ERROR})
                return
            content = "".join(p for kind, p in pieces if kind == "content")
            thinking = "".join(p for kind, p in pieces if kind == "thinking")
            obj = self._frame(chat, model, content, thinking, done=True, **final(first, time.perf_counter()))
            if fault and fault.name == "drop_mid_stream":
                data = _dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self._abort()
                return
            self._send_json(200, obj)
            return

        self._start_stream()
        first = time.perf_counter()
        for i, (kind, piece) in enumerate(pieces):
            if i == cut_at:
                break
            if i and token_delay and fake._wait(token_delay):
                self._abort()
                return
            content, thinking = (piece, "") if kind == "content" else ("", piece)
            self._send_line(self._frame(chat, model, content, thinking, done=False))
        if fault and fault.name == "drop_mid_stream":
            self._abort()
            return
        if fault and fault.name == "stream_error":
            self._send_line({"error": params.get("message") or RUNNER_STREAM_ERROR})
            self._end_stream()
            return
        self._send_line(self._frame(chat, model, "", "", done=True, **final(first, time.perf_counter())))
        self._end_stream()


def main(argv: list[str] | None = None) -> int:
    """Run in the foreground until SIGINT/SIGTERM; prints the URL once it is listening."""
    parser = argparse.ArgumentParser(prog="python -m harness.fake_ollama", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=11434, help="port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated pulled tags")
    parser.add_argument("--keep-alive", default="5m", help="default keep_alive (OLLAMA_KEEP_ALIVE)")
    parser.add_argument("--num-ctx", type=int, default=4096, help="default num_ctx (OLLAMA_CONTEXT_LENGTH)")
    parser.add_argument("--strict-context", action="store_true", help="refuse overflowing prompts (400)")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    fake = FakeOllama(
        models,
        args.port,
        default_keep_alive=args.keep_alive,
        default_num_ctx=args.num_ctx,
        strict_context=args.strict_context,
        verbose=args.verbose,
    )
    with fake:
        print(f"fake ollama listening on {fake.url} with {', '.join(fake.models)}", flush=True)
        done.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
