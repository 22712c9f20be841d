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
  soon as the request ends; absent means the server default (``OLLAMA_KEEP_ALIVE``, 5m) for a model being
  loaded, and leaves a loaded model's keep_alive as it was (with scheduling; sched.go useLoadedRunner).

Scheduling (the default; ``scheduling=False`` keeps the ideal server that serves everything at once, loads
instantly and never evicts) follows ``server/sched.go`` and ``llm/llama_server.go`` on the Ollama checkout read
for this (commit fb30760, 2026-08, the llama-server line). Every rule cites its function where it is coded:

- A request for a model that is not loaded (or needs a reload) joins one FIFO of pending requests that a
  single scheduler works through one at a time; a full FIFO (``max_queue``) is HTTP 503. Requests for a
  model that is loaded bypass it and wait for one of the runner's ``num_parallel`` slots instead.
- Loading takes ``resident GB / load_gb_per_s``; nothing is written to the client until it is done, and a
  client that goes away meanwhile aborts the load. A model is listed in /api/ps only once loaded.
- A second model must fit: predicted size (weights + KV cache) at most 80 % of the smaller of free RAM and
  free Metal memory; otherwise (or at ``max_loaded_models``) an idle model with the shortest keep_alive is
  evicted, or the busy one the scheduler picked is unloaded when it drains, while everything pending waits.
  The first model loads unchecked; what then overflows RAM is counted as swapped.
- keep_alive: the last request's value replaces the model's; the timer starts when the model goes idle, so
  ``expires_at`` is not refreshed while serving; an expired or evicted runner stays listed until it exits.

Memory: ``total_gb`` of RAM of which ``system_gb`` is held by the OS and open apps; Metal may use
``metal_gb`` (default 2/3 of RAM, Apple's recommendedMaxWorkingSetSize); a model's part beyond free Metal
memory runs on the CPU (``size_vram < size``). 1 GB = 1e9 bytes. ``memory()`` and ``events()`` (also
``GET /_fake/memory``, ``GET /_fake/events``) say what happened; ``set_memory(**kw)`` or ``POST /_fake/memory``
changes the machine while it runs.

Use in-process (``with FakeOllama() as fake: ... fake.url``) or as a process:
``python -m harness.fake_ollama --port 11434 [--models a,b] [--total-gb 24 --system-gb 12 ...]``, driven over
``/_fake/*`` (``FakeOllamaControl``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import re
import secrets
import select
import signal
import socket
import string
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import BaseRequestHandler, TCPServer
from typing import Any

__all__ = [
    "DEFAULT_MODELS",
    "ERR_MAX_QUEUE",
    "FAULTS",
    "MEMORY_KEYS",
    "THINKING_TEXT",
    "FakeOllama",
    "FakeOllamaControl",
    "ModelSpec",
    "Recorded",
    "parse_keep_alive",
    "reply_text",
    "spec_for",
]

OLLAMA_VERSION = "0.12.0"
DEFAULT_MODELS: tuple[str, ...] = (
    "qwen3.5:9b",
    "llama3.2:3b",
    "gemma3:1b",
    "qwen3-coder:30b",
    "nomic-embed-text:latest",
)
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
_FAULT_PARAMS = frozenset({"delay_s", "token_delay_s", "times", "message", "after"})

RUNNER_KILLED = "llama runner process has terminated: signal: killed"
RUNNER_STREAM_ERROR = "an error was encountered while running the model: unexpected EOF"
INPUT_TOO_LONG = "the input length exceeds the context length"
THINKING_TEXT = "The user wants a short greeting, so I will answer briefly."
# server/sched.go ErrMaxQueue (two spaces after the full stop), sent as 503 by routes.go handleScheduleError.
ERR_MAX_QUEUE = "server busy, please try again.  maximum pending requests exceeded"
GB = 1e9
# server/sched.go load: "Some architectures are not safe with num_parallel > 1" (these families get 1 slot).
SINGLE_SLOT_FAMILIES = frozenset(
    {"mllama", "qwen3vl", "qwen3vlmoe", "qwen35", "qwen35moe", "qwen3next", "lfm2", "lfm2moe", "nemotron_h"}
    | {"nemotron_h_moe", "nemotron_h_omni"}
)
# The machine the fake pretends to be, and the Ollama settings it obeys (see FakeOllama).
MEMORY_KEYS: tuple[str, ...] = (
    "total_gb",
    "system_gb",
    "metal_gb",
    "load_gb_per_s",
    "num_parallel",
    "max_queue",
    "max_loaded_models",
    "unload_s",
)


@dataclass(frozen=True)
class ModelSpec:
    """What ``/api/tags``, ``/api/show`` and ``/api/ps`` report for one tag, what it can do, what it holds.

    ``kv_bytes_per_token`` is llm/llama_server.go PredictServerVRAM's f16 KV cache (2 x layers x KV heads x head
    dim x 2 bytes; for qwen3.5's hybrid layers, only its full-attention layers); ``overhead`` is the compute
    buffers llama-server reports on top (MemorySize). Both are fitted so that at num_ctx 8192 the resident
    size matches litellm-config.yaml's ``model_info.resident_gb`` (llama3.2's weights + KV already give 2.96
    for its 2.9, so it has none).
    """

    family: str
    parameter_size: str
    size: int
    context_length: int
    capabilities: tuple[str, ...] = ("completion",)
    quantization_level: str = "Q4_K_M"
    kv_bytes_per_token: int = 131_072
    overhead: int = 300_000_000

    def predicted(self, num_ctx: int, num_parallel: int = 1) -> int:
        """llm/llama_server.go PredictServerVRAM: file size plus the KV cache for num_ctx x slots
        (sched.go effectiveLlamaServerContext; llama-server gets ``-c num_ctx*num_parallel``)."""
        return self.size + self.kv_bytes_per_token * num_ctx * max(1, num_parallel)

    def resident(self, num_ctx: int, num_parallel: int = 1) -> int:
        """Bytes a loaded runner holds: the prediction plus its compute buffers (what /api/ps ``size`` says)."""
        return self.predicted(num_ctx, num_parallel) + self.overhead


MODEL_SPECS: dict[str, ModelSpec] = {
    # 8 full-attention layers x 4 KV heads x 256 → 7.20 GB at 8192
    "qwen3.5:9b": ModelSpec(
        "qwen35",
        "9.0B",
        6_594_474_711,
        262_144,
        ("completion", "vision", "tools", "thinking"),
        kv_bytes_per_token=32_768,
        overhead=337_000_000,
    ),
    # 28 layers x 8 KV heads x 128 → 2.96 GB at 8192
    "llama3.2:3b": ModelSpec(
        "llama", "3.2B", 2_019_393_189, 131_072, ("completion", "tools"), kv_bytes_per_token=114_688, overhead=0
    ),
    # 26 layers x 1 KV head x 256 → 1.30 GB at 8192
    "gemma3:1b": ModelSpec("gemma3", "999.89M", 815_319_791, 32_768, kv_bytes_per_token=26_624, overhead=266_000_000),
    # 48 layers x 4 KV heads x 128 → 19.50 GB at 8192
    "qwen3-coder:30b": ModelSpec(
        "qwen3moe",
        "30.5B",
        18_556_700_761,
        262_144,
        ("completion", "tools"),
        kv_bytes_per_token=98_304,
        overhead=138_000_000,
    ),
}
# An embedding model: no completion capability, so /api/chat answers 400 (routes.go ChatHandler).
MODEL_SPECS["nomic-embed-text:latest"] = ModelSpec(
    "nomic-bert", "137M", 274_302_450, 2_048, ("embedding",), kv_bytes_per_token=4_096, overhead=50_000_000
)
EMBEDDING_DIMENSIONS = 8  # nomic-embed-text has 768; a few are enough to tell inputs apart
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
        base = MODEL_SPECS["qwen3.5:9b"]
        return ModelSpec(
            "qwen35",
            "9.0B",
            base.size,
            base.context_length,
            ("completion", "tools", "thinking"),
            kv_bytes_per_token=base.kv_bytes_per_token,
            overhead=base.overhead,
        )
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


@dataclass(eq=False)
class _Runner:
    """One loaded model (server/sched.go runnerRef): who holds it, until when, how big."""

    key: str
    name: str
    digest: str
    num_ctx: int
    num_parallel: int
    size: int
    size_vram: int
    session_s: float | None  # sessionDuration; None is forever (api.Duration's MaxInt64)
    generation: int
    ref_count: int = 0  # requests holding the runner, waiting for a slot or running (refCount)
    expires_at: float | None = None  # expiresAt: unset until the runner first goes idle
    timer: threading.Timer | None = None
    slots_free: int = 1
    waiters: deque = field(default_factory=deque)
    exiting: bool = False
    unload_reason: str | None = None


@dataclass(eq=False)
class _Pending:
    """A request waiting for the scheduler (server/sched.go LlmRequest in pendingReqCh)."""

    key: str
    name: str
    num_ctx: int
    session_s: float | None
    has_session: bool
    runner: _Runner | None = None
    error: str | None = None
    done: bool = False
    cancelled: bool = False  # the client went away (the request context is done)


class _Busy(Exception):
    """The pending FIFO is full: server/sched.go getRunner answers ErrMaxQueue."""


class _Gone(Exception):
    """The request cannot be served any more: its client left, or the fake was reset or stopped."""


class FakeOllama:
    """An Ollama look-alike on 127.0.0.1 for tests and benchmarks: ``with FakeOllama() as fake: fake.url``.

    Faults (``set_fault(tag, name, **params)``) apply to /api/chat and /api/generate for that tag:
    http_500, not_found, drop_before_headers, drop_mid_stream, stream_error, timeout (``delay_s``=30),
    context_overflow, slow (``delay_s``, ``token_delay_s``); drop_mid_stream and stream_error take ``after``, the
    pieces sent before the cut (default 2; 0: the first line). Every fault also takes ``times`` (apply to the
    next N requests, then clear) and the error faults take ``message``. With scheduling, ``slow``, ``timeout``,
    ``drop_mid_stream`` and ``stream_error`` strike after the model is loaded and while the request holds one
    of its slots; ``http_500``, ``not_found`` and ``drop_before_headers`` answer before any scheduling.

    Scheduling and memory (the defaults are a 24 GB Mac with 12 GB in use by other apps): ``total_gb``,
    ``system_gb``, ``metal_gb`` (None: 2/3 of total_gb; 0: no GPU), ``load_gb_per_s``, ``num_parallel``
    (OLLAMA_NUM_PARALLEL), ``max_queue`` (OLLAMA_MAX_QUEUE), ``max_loaded_models`` (OLLAMA_MAX_LOADED_MODELS)
    and ``unload_s`` (how long an unloading runner takes to exit).
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
        scheduling: bool = True,
        total_gb: float = 24.0,
        system_gb: float = 12.0,
        metal_gb: float | None = None,
        load_gb_per_s: float = 50.0,
        num_parallel: int = 1,
        max_queue: int = 512,
        max_loaded_models: int = 3,
        unload_s: float = 0.2,
    ) -> None:
        self._models = {_normalize(m): m if ":" in m.rsplit("/", 1)[-1] else f"{m}:latest" for m in models}
        self._port = port
        self._default_keep_alive = parse_keep_alive(default_keep_alive)
        self.default_num_ctx = default_num_ctx
        self.strict_context = strict_context
        self.verbose = verbose
        self.scheduling = scheduling
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._faults: dict[str, _Fault] = {}
        self._requests: list[Recorded] = []
        self._loaded: dict[str, _Loaded] = {}  # scheduling=False only
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._scheduler: threading.Thread | None = None
        self._bound_port: int | None = None
        self._modified_at = time.time() - 86_400
        self._runners: dict[str, _Runner] = {}
        self._pending: deque[_Pending] = deque()
        self._generation = 0
        self._unloads = 0
        self._events: list[dict[str, Any]] = []
        self._counters = self._zero_counters()
        self._cfg: dict[str, Any] = {"metal_gb": None}
        self.set_memory(
            total_gb=total_gb,
            system_gb=system_gb,
            metal_gb=metal_gb,
            load_gb_per_s=load_gb_per_s,
            num_parallel=num_parallel,
            max_queue=max_queue,
            max_loaded_models=max_loaded_models,
            unload_s=unload_s,
        )
        self._initial_memory = dict(self._cfg)

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
        self._scheduler = threading.Thread(target=self._process_pending, name="fake-ollama-sched", daemon=True)
        self._scheduler.start()
        return self

    def stop(self) -> None:
        """Stop promptly: wake sleeping faults and waiting requests, stop accepting, cut every connection."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        with self._cond:
            for runner in self._runners.values():
                self._stop_timer(runner)
            self._cond.notify_all()
        server.shutdown()
        server.server_close()
        server.close_all_connections()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._scheduler is not None:
            self._scheduler.join(timeout=2)

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
        """A fresh server on the same port: no faults, no record, nothing loaded or pending, counters and
        events cleared, the constructor's memory settings back. Requests still waiting are cut; requests
        still running finish on runners that no longer count."""
        with self._cond:
            self._faults.clear()
            self._requests.clear()
            self._loaded.clear()
            for runner in self._runners.values():
                self._stop_timer(runner)
            self._runners.clear()
            for pending in self._pending:
                pending.done, pending.error = True, "reset"
            self._pending.clear()
            self._generation += 1
            self._cfg = dict(self._initial_memory)
            self._events.clear()
            self._counters = self._zero_counters()
            self._cond.notify_all()

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

    # -- memory and events -----------------------------------------------------------------------------

    def set_memory(self, **settings: Any) -> dict[str, Any]:
        """Change the emulated machine or Ollama's settings while running (keys: ``MEMORY_KEYS``).

        Loaded models stay as they are; the next scheduling decision sees the new numbers."""
        unknown = set(settings) - set(MEMORY_KEYS)
        if unknown:
            raise ValueError(f"unknown memory setting(s): {', '.join(sorted(unknown))}")
        cfg = dict(self._cfg)
        for key, value in settings.items():
            if key == "metal_gb" and value is None:
                cfg[key] = None
            elif key in ("num_parallel", "max_queue", "max_loaded_models"):
                cfg[key] = int(value)
                if cfg[key] < (0 if key == "max_queue" else 1):
                    raise ValueError(f"{key} must be at least {0 if key == 'max_queue' else 1}")
            else:
                cfg[key] = float(value)
                if cfg[key] < 0 or (key == "load_gb_per_s" and cfg[key] == 0):
                    raise ValueError(f"{key} must be positive")
        with self._cond:
            self._cfg = cfg
            self._cond.notify_all()
        return self.memory()

    def memory(self) -> dict[str, Any]:
        """The emulated machine now: GB figures, peaks since the last reset, and what the scheduler did."""
        with self._lock:
            resident = sum(r.size for r in self._runners.values())
            vram = sum(r.size_vram for r in self._runners.values())
            ram_for_models = (self._cfg["total_gb"] - self._cfg["system_gb"]) * GB
            c = self._counters
            return {
                "scheduling": self.scheduling,
                "total_gb": self._cfg["total_gb"],
                "system_gb": self._cfg["system_gb"],
                "metal_gb": round(self._metal_bytes() / GB, 4),
                "resident_gb": round(resident / GB, 4),
                "free_gb": round(max(0.0, ram_for_models - resident) / GB, 4),
                "metal_free_gb": round(max(0.0, self._metal_bytes() - vram) / GB, 4),
                "swapped_gb": round(max(0.0, resident - ram_for_models) / GB, 4),
                "peak_resident_gb": round(c["peak_resident"] / GB, 4),
                "peak_swapped_gb": round(c["peak_swapped"] / GB, 4),
                "loads": c["loads"],
                "load_seconds": round(c["load_seconds"], 4),
                "evictions": c["evictions"],
                "reloads": c["reloads"],
                "rejected": c["rejected"],
                "pending": len(self._pending),
                "loaded": [r.name for r in self._runners.values()],
                **{k: self._cfg[k] for k in MEMORY_KEYS if k not in ("total_gb", "system_gb", "metal_gb")},
            }

    def events(self) -> list[dict[str, Any]]:
        """What the scheduler did, oldest first: ``{ts, event, model, ...}`` with event one of load_start,
        loaded, load_aborted, unload, evict, queued, rejected."""
        with self._lock:
            return [dict(e) for e in self._events]

    @staticmethod
    def _zero_counters() -> dict[str, Any]:
        return {
            "loads": 0,
            "load_seconds": 0.0,
            "evictions": 0,
            "reloads": 0,
            "rejected": 0,
            "peak_resident": 0,
            "peak_swapped": 0,
        }

    def _event(self, event: str, model: str, **extra: Any) -> None:
        """Append an event; the caller holds the lock."""
        self._events.append({"ts": time.time(), "event": event, "model": model, **extra})
        if self.verbose:
            sys.stderr.write(f"fake-ollama {event} {model} {extra}\n")

    def _metal_bytes(self) -> float:
        """Metal's budget: recommendedMaxWorkingSetSize (discover/gpu_info_darwin.m getRecommendedMaxVRAM)."""
        metal = self._cfg["metal_gb"]
        return (self._cfg["total_gb"] * 2 / 3 if metal is None else metal) * GB

    def _free(self) -> tuple[float, float]:
        """Free RAM and free Metal memory in bytes, never below 0; the caller holds the lock.

        RAM: what discover's getFreeMemory would see (total minus apps minus runners). Metal: sched.go
        updateFreeSpace, the device total minus what the loaded runners hold on it."""
        resident = sum(r.size for r in self._runners.values())
        vram = sum(r.size_vram for r in self._runners.values())
        ram = (self._cfg["total_gb"] - self._cfg["system_gb"]) * GB - resident
        return max(0.0, ram), max(0.0, self._metal_bytes() - vram)

    def _fits(self, predicted: int) -> bool:
        """server/sched.go load, the pre-flight check for a model loaded next to others: evict if
        ``predictedForLoad > freeMemory*80/100``, freeMemory from availableMemoryForLoad, which for an
        integrated GPU (Metal) takes system free memory when it is above 0 and below the GPU's free memory.
        (The batch surcharge added to predictedForLoad is only chosen when it fits, so it never changes
        the verdict: sched.go automaticGenerationBatch.) No GPU (``metal_gb=0``): no pre-flight at all."""
        if self._metal_bytes() <= 0:
            return True
        system_free, gpu_free = self._free()
        available = system_free if 0 < system_free < gpu_free else gpu_free
        return predicted <= available * 80 / 100

    def _track_peaks(self) -> None:
        c = self._counters
        c["peak_resident"] = max(c["peak_resident"], sum(r.size for r in self._runners.values()))
        c["peak_swapped"] = max(c["peak_swapped"], self._swapped())

    # -- the scheduler (server/sched.go) ---------------------------------------------------------------

    def _num_ctx(self, spec: ModelSpec, requested: int) -> int:
        """The context a runner gets: sched.go getRunner raises it to 4 (2048 for vision models), then
        effectiveContext caps it at the trained length."""
        num_ctx = max(requested, 4)
        if "vision" in spec.capabilities:
            num_ctx = max(num_ctx, 2048)
        return min(num_ctx, spec.context_length)

    def _get_runner(
        self, tag: str, num_ctx: int, session_s: float | None, has_session: bool, gone: Callable
    ) -> _Runner:
        """server/sched.go getRunner: a loaded runner that needs no reload is used at once; anything else
        joins the pending FIFO (503 when full) and waits for processPending. Raises _Busy or _Gone."""
        key = _normalize(tag)
        pending = _Pending(key, self._models.get(key, tag), num_ctx, session_s, has_session)
        with self._cond:
            runner = self._runners.get(key)
            if runner is not None and not runner.exiting and not self._needs_reload(runner, pending):
                self._use_loaded_runner(runner, pending)
                return runner
            if len(self._pending) >= self._cfg["max_queue"]:
                self._counters["rejected"] += 1
                self._event("rejected", pending.name, pending=len(self._pending))
                raise _Busy
            self._pending.append(pending)
            self._event("queued", pending.name, waiting_for="scheduler", position=len(self._pending))
            self._cond.notify_all()
        while True:
            with self._cond:
                if not pending.done:
                    self._cond.wait(0.02)
                if pending.done:
                    if pending.runner is None:
                        raise _Gone(pending.error)
                    return pending.runner
                if self._stopping.is_set():
                    pending.cancelled = True
                    raise _Gone("stopping")
            if gone():
                with self._cond:
                    if pending.done and pending.runner is not None:
                        self._release(pending.runner)
                    pending.cancelled = True
                    self._cond.notify_all()
                raise _Gone("client closed the connection")

    @staticmethod
    def _needs_reload(runner: _Runner, pending: _Pending) -> bool:
        """server/sched.go needsReload: the runner options differ (here: num_ctx, already capped)."""
        return runner.num_ctx != pending.num_ctx

    def _use_loaded_runner(self, runner: _Runner, pending: _Pending) -> None:
        """server/sched.go useLoadedRunner: hold the runner, stop its expiry timer, and let the request's
        keep_alive (if it sent one) replace the runner's: the last writer wins. expiresAt is left alone.

        As in Ollama, this also overrides the zero keep_alive an eviction gave a busy runner: a request for
        it that arrives while it drains keeps it loaded, and the switch waits until it expires after all."""
        runner.ref_count += 1
        self._stop_timer(runner)
        if pending.has_session:
            runner.session_s = pending.session_s

    def _release(self, runner: _Runner) -> None:
        """server/sched.go processCompleted, a finished request: when the runner goes idle, a zero
        keep_alive unloads it now, otherwise the timer (re)starts and expiresAt = now + keep_alive.
        The caller holds the lock."""
        runner.ref_count -= 1
        if runner.generation != self._generation or runner.ref_count > 0:
            self._cond.notify_all()
            return
        if runner.session_s is not None and runner.session_s <= 0:
            self._stop_timer(runner)
            self._expire(runner, runner.unload_reason or "keep_alive 0")
        elif runner.session_s is None:
            runner.expires_at = math.inf
        else:
            self._stop_timer(runner)
            runner.expires_at = time.time() + runner.session_s
            timer = threading.Timer(runner.session_s, lambda: self._timer_fired(runner, timer))
            timer.daemon = True
            runner.timer = timer
            timer.start()
        self._cond.notify_all()

    def _release_runner(self, runner: _Runner) -> None:
        with self._cond:
            self._release(runner)

    @staticmethod
    def _stop_timer(runner: _Runner) -> None:
        if runner.timer is not None:
            runner.timer.cancel()
            runner.timer = None

    def _timer_fired(self, runner: _Runner, timer: threading.Timer) -> None:
        """sched.go processCompleted's expireTimer: the keep_alive ran out while idle."""
        with self._cond:
            if runner.timer is timer and not self._stopping.is_set():
                runner.timer = None
                self._expire(runner, "expired")

    def _expire(self, runner: _Runner, reason: str) -> None:
        """server/sched.go processCompleted, an expired runner: unloaded once idle. runner.unload() kills
        the runner and waits for it to exit (llm/llama_server.go stopProcess) before it leaves s.loaded, so
        /api/ps lists it meanwhile (with an expires_at in the past). The caller holds the lock."""
        if runner.exiting or runner.ref_count > 0 or runner.generation != self._generation:
            return
        runner.exiting = True
        runner.unload_reason = reason
        self._stop_timer(runner)
        threading.Thread(target=self._exit_runner, args=(runner,), name="fake-ollama-exit", daemon=True).start()

    def _exit_runner(self, runner: _Runner) -> None:
        self._stopping.wait(self._cfg["unload_s"])
        with self._cond:
            if self._runners.get(runner.key) is runner:
                del self._runners[runner.key]
                self._unloads += 1  # sched.go: unloadedCh <- struct{}{}
                self._event("unload", runner.name, reason=runner.unload_reason)
            self._cond.notify_all()

    def _expire_runner(self, tag: str) -> None:
        """server/sched.go expireRunner (keep_alive 0 with nothing to say): expiresAt = now, keep_alive 0,
        unloaded now if idle, else when its requests finish."""
        with self._cond:
            runner = self._runners.get(_normalize(tag))
            if runner is None:
                return
            runner.expires_at = time.time()
            self._stop_timer(runner)
            runner.session_s = 0.0
            runner.unload_reason = "unload request"
            self._expire(runner, "unload request")

    def _find_runner_to_unload(self) -> _Runner | None:
        """server/sched.go findRunnerToUnload: sort ByDurationAndName (shortest keep_alive first, then the
        model's blob path), take the first idle one, else the first one (to unload when it drains)."""
        runners = sorted(
            self._runners.values(),
            key=lambda r: (math.inf if r.session_s is None else r.session_s, f"blobs/sha256-{r.digest}"),
        )
        for runner in runners:
            if runner.ref_count == 0:
                return runner
        return runners[0] if runners else None

    def _process_pending(self) -> None:
        """server/sched.go processPending: one pending request at a time, in arrival order; the others
        (for any model) wait behind it while it evicts and loads."""
        while not self._stopping.is_set():
            with self._cond:
                if not self._pending:
                    self._cond.wait(0.1)
                    continue
                pending = self._pending.popleft()
                if pending.cancelled:  # "pending request cancelled or timed out, skipping scheduling"
                    continue
                self._schedule(pending, self._generation)

    def _schedule(self, pending: _Pending, generation: int) -> None:
        """The body of processPending's loop for one request; the caller holds the lock (waits release it)."""
        spec = spec_for(pending.key)
        while True:
            if self._stopping.is_set() or generation != self._generation:
                pending.done, pending.error = True, "reset"
                self._cond.notify_all()
                return
            runner = self._runners.get(pending.key)
            reason = ""
            if runner is not None:
                if runner.exiting:
                    to_expire = runner  # already on its way out: wait for it to exit
                elif self._needs_reload(runner, pending):
                    to_expire, reason = runner, "reload"
                else:
                    if pending.cancelled:
                        pending.done, pending.error = True, "client closed the connection"
                    else:
                        self._use_loaded_runner(runner, pending)
                        pending.runner, pending.done = runner, True
                    self._cond.notify_all()
                    return
            elif len(self._runners) >= self._cfg["max_loaded_models"]:
                to_expire, reason = self._find_runner_to_unload(), "max_loaded_models"
            else:
                num_parallel = self._slots_for(spec)
                if not self._runners:
                    self._load(pending, spec, num_parallel, checked=False)  # "loading first model"
                    return
                if self._fits(spec.predicted(pending.num_ctx, num_parallel)):
                    self._load(pending, spec, num_parallel, checked=True)
                    return
                to_expire, reason = self._find_runner_to_unload(), "memory"
            if to_expire is None:
                continue
            if not to_expire.exiting:
                # "resetting model to expire immediately to make room"
                self._counters["reloads" if reason == "reload" else "evictions"] += 1
                self._event(
                    "evict", to_expire.name, reason=reason, for_model=pending.name, busy=to_expire.ref_count > 0
                )
                self._stop_timer(to_expire)
                to_expire.session_s = 0.0
                to_expire.unload_reason = "reload" if reason == "reload" else "evicted"
                self._expire(to_expire, to_expire.unload_reason)
            seen = self._unloads  # "waiting for pending requests to complete and unload to occur"
            while self._unloads == seen and not self._stopping.is_set() and generation == self._generation:
                self._cond.wait(0.05)

    def _slots_for(self, spec: ModelSpec) -> int:
        """server/sched.go load: numParallel = max(OLLAMA_NUM_PARALLEL, 1), but 1 for non-completion models
        and for the architectures in its "not safe with num_parallel > 1" list."""
        if "completion" not in spec.capabilities or spec.family in SINGLE_SLOT_FAMILIES:
            return 1
        return max(1, self._cfg["num_parallel"])

    def _load(self, pending: _Pending, spec: ModelSpec, num_parallel: int, checked: bool) -> None:
        """server/sched.go load + llm/llama_server.go WaitUntilRunning: the load takes resident GB /
        load_gb_per_s and is aborted when the client goes away ("client connection closed before
        llama-server finished loading, aborting load": the request context is done). Only a finished
        runner joins s.loaded (and /api/ps), holding one reference for the request that loaded it."""
        size = spec.resident(pending.num_ctx, num_parallel)
        gpu_free = self._free()[1]
        size_vram = min(size, int(gpu_free))  # llama-server fits what it can on Metal, the rest on the CPU
        duration = size / GB / self._cfg["load_gb_per_s"]
        generation = self._generation
        self._event("load_start", pending.name, num_ctx=pending.num_ctx, size_gb=round(size / GB, 4), checked=checked)
        started = time.monotonic()
        deadline = started + duration
        while True:
            if pending.cancelled or self._stopping.is_set() or generation != self._generation:
                if generation == self._generation:
                    self._event("load_aborted", pending.name, after_s=round(time.monotonic() - started, 4))
                pending.done, pending.error = True, "load aborted"
                self._cond.notify_all()
                return
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._cond.wait(min(left, 0.02))
        session = pending.session_s if pending.has_session else self._default_keep_alive
        runner = _Runner(
            key=pending.key,
            name=pending.name,
            digest=sha256(pending.key.encode()).hexdigest(),
            num_ctx=pending.num_ctx,
            num_parallel=num_parallel,
            size=size,
            size_vram=size_vram,
            session_s=session,
            generation=generation,
            ref_count=1,
            slots_free=num_parallel,
        )
        self._runners[pending.key] = runner
        elapsed = time.monotonic() - started
        self._counters["loads"] += 1
        self._counters["load_seconds"] += elapsed
        self._track_peaks()
        system_free, _ = self._free()
        self._event(
            "loaded",
            pending.name,
            load_s=round(elapsed, 4),
            size_gb=round(size / GB, 4),
            size_vram_gb=round(size_vram / GB, 4),
            swapped_gb=round(self._swapped() / GB, 4),
            free_gb=round(system_free / GB, 4),
        )
        pending.runner, pending.done = runner, True
        self._cond.notify_all()

    def _swapped(self) -> float:
        """Bytes of runners beyond the RAM left for them; the caller holds the lock."""
        resident = sum(r.size for r in self._runners.values())
        return max(0.0, resident - (self._cfg["total_gb"] - self._cfg["system_gb"]) * GB)

    def _acquire_slot(self, runner: _Runner, gone: Callable[[], bool]) -> bool:
        """llm/llama_server.go Completion/Chat: ``s.sem.Acquire(ctx, 1)`` on a semaphore of numParallel,
        FIFO; a client that goes away leaves the line ("aborting chat request due to client closing the
        connection"). False means give up."""
        ticket = object()
        with self._cond:
            if runner.slots_free > 0 and not runner.waiters:
                runner.slots_free -= 1
                return True
            runner.waiters.append(ticket)
            self._event("queued", runner.name, waiting_for="slot", position=len(runner.waiters))
        while True:
            with self._cond:
                if runner.waiters and runner.waiters[0] is ticket and runner.slots_free > 0:
                    runner.waiters.popleft()
                    runner.slots_free -= 1
                    self._cond.notify_all()
                    return True
                if self._stopping.is_set() or runner.generation != self._generation:
                    runner.waiters.remove(ticket)
                    return False
                self._cond.wait(0.02)
            if gone():
                with self._cond:
                    runner.waiters.remove(ticket)
                    self._cond.notify_all()
                return False

    def _release_slot(self, runner: _Runner) -> None:
        with self._cond:
            runner.slots_free += 1
            self._cond.notify_all()

    # -- loaded models, scheduling=False (/api/ps) -------------------------------------------------------

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
        if self.scheduling:
            self._expire_runner(tag)
            return
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
        """routes.go PsHandler over sched.go loadedModels: size and size_vram as the runner reports them,
        context_length its num_ctx, expires_at as set when it last went idle (now + keep_alive for a runner
        that has not been idle yet), longest remaining first."""
        if not self.scheduling:
            return self._ideal_ps_payload()
        now = time.time()
        rows: list[tuple[float, dict[str, Any]]] = []
        with self._lock:
            runners = list(self._runners.values())
            snapshot = [(r, r.expires_at, r.session_s) for r in runners]
        for runner, expires_at, session_s in snapshot:
            if self._hidden(runner.key):
                continue
            if expires_at is None:
                expires_at = math.inf if session_s is None else now + session_s
            spec = spec_for(runner.key)
            row = {
                "name": runner.name,
                "model": runner.name,
                "size": runner.size,
                "digest": runner.digest,
                "details": self._details(spec),
                "expires_at": _forever() if math.isinf(expires_at) else _rfc3339(expires_at),
                "size_vram": runner.size_vram,
                "context_length": runner.num_ctx,
            }
            rows.append((math.inf if math.isinf(expires_at) else int(expires_at), row))
        rows.sort(key=lambda r: r[0], reverse=True)
        return {"models": [row for _, row in rows]}

    def _ideal_ps_payload(self) -> dict[str, Any]:
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
    """Drive a fake running in another process over its ``/_fake/*`` API: faults and memory in, records out."""

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

    def memory(self) -> dict[str, Any]:
        """``FakeOllama.memory()`` of the fake in the other process."""
        return self._call("/_fake/memory")

    def set_memory(self, **settings: Any) -> dict[str, Any]:
        """``FakeOllama.set_memory(**settings)``; returns the new ``memory()``."""
        return self._call("/_fake/memory", settings)

    def events(self) -> list[dict[str, Any]]:
        return self._call("/_fake/events")["events"]

    def reset(self) -> None:
        self._call("/_fake/reset", {})


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
    "/api/embed": ("POST",),
    "/_fake/fault": ("POST",),
    "/_fake/reset": ("POST",),
    "/_fake/requests": ("GET",),
    "/_fake/faults": ("GET",),
    "/_fake/memory": ("GET", "POST"),
    "/_fake/events": ("GET",),
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

    def _client_gone(self) -> bool:
        """Whether the client closed its side: Go's net/http then cancels the request context."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _pause(self, seconds: float) -> bool:
        """Sleep for a fault; True means give up (stopping, or with scheduling the client went away and,
        as in Ollama, the cancelled request stops holding its slot)."""
        fake = self.server.fake
        if not fake.scheduling:
            return fake._wait(seconds)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if fake._stopping.wait(min(left, 0.05)) or self._client_gone():
                return True
        return fake._stopping.is_set()

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
        elif path == "/api/embed":
            self._embed(body)
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
        elif path == "/_fake/events":
            self._send_json(200, {"events": fake.events()})
        elif path == "/_fake/memory":
            try:
                self._send_json(200, fake.set_memory(**(body or {})) if self.command == "POST" else fake.memory())
            except (TypeError, ValueError) as exc:
                self._send_json(400, {"error": str(exc)})
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

    def _embed(self, body: dict) -> None:
        """/api/embed as routes.go EmbedHandler: `input` a string or a list of strings (else 400 "invalid input
        type"), the model scheduled like any other (no capability required: scheduleRunner with none), an empty
        input answered with no embeddings once loaded, each embedding L2-normalized (`normalize`), and
        total_duration, load_duration, prompt_eval_count in the answer."""
        fake = self.server.fake
        started = time.perf_counter()
        model = body.get("model")
        raw = body.get("input")
        if isinstance(raw, str):
            inputs = [raw] if raw else []
        elif isinstance(raw, list) and all(isinstance(i, str) for i in raw):
            inputs = list(raw)
        elif raw is None:
            inputs = []
        else:
            self._send_json(400, {"error": "invalid input type"})
            return
        if not isinstance(model, str) or fake._pulled(model) is None:
            self._send_json(404, {"error": f"model '{model}' not found"})
            return
        try:
            session_s = parse_keep_alive(body["keep_alive"]) if body.get("keep_alive") is not None else None
        except ValueError as exc:
            self._send_json(400, {"error": str(exc)})
            return
        has_session = session_s is not None
        session_s = fake._default_keep_alive if session_s is None else session_s
        spec = spec_for(model)
        num_ctx = min(fake.default_num_ctx, spec.context_length)
        if not fake.scheduling:
            fake._begin_load(model, num_ctx, session_s)
            fake._end_load(model, session_s)
            runner = None
        else:
            try:
                runner = fake._get_runner(
                    model, fake._num_ctx(spec, num_ctx), session_s, has_session, self._client_gone
                )
            except _Busy:
                self._send_json(503, {"error": ERR_MAX_QUEUE})
                return
            except _Gone:
                self._abort()
                return
        try:
            loaded = time.perf_counter()
            vectors = [_embedding(text) for text in inputs]
            self._send_json(
                200,
                {
                    "model": model,
                    "embeddings": vectors,
                    "total_duration": int((time.perf_counter() - started) * 1e9),
                    "load_duration": int((loaded - started) * 1e9),
                    "prompt_eval_count": sum(max(1, len(t) // 4) for t in inputs),
                },
            )
        finally:
            if runner is not None:
                fake._release_runner(runner)

    def _inference(self, chat: bool, body: dict, rec: Recorded) -> None:
        """/api/chat and /api/generate, in the order Ollama checks things (routes.go ChatHandler)."""
        fake = self.server.fake
        started = time.perf_counter()  # checkpointStart
        model = body.get("model")
        if not isinstance(model, str) or not model:
            self._send_json(400, {"error": "model is required"})
            return
        try:
            has_session = body.get("keep_alive") is not None
            session_s = parse_keep_alive(body["keep_alive"]) if has_session else fake._default_keep_alive
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
        if empty and has_session and session_s == 0:  # ChatHandler/GenerateHandler: "expire the runner"
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
        if "completion" not in spec.capabilities:  # an embedding model (routes.go ChatHandler/GenerateHandler)
            self._send_json(400, {"error": f'"{model}" does not support {"chat" if chat else "generate"}'})
            return
        if chat and body.get("tools") and "tools" not in spec.capabilities:
            self._send_json(400, {"error": f"{_full_name(name)} does not support tools"})
            return
        if fault and fault.name == "http_500":  # a runner that died on start: nothing gets loaded
            self._send_json(500, {"error": params.get("message") or RUNNER_KILLED})
            return
        delay = 0.0
        if fault and fault.name in ("timeout", "slow"):
            delay = float(params.get("delay_s", 30.0 if fault.name == "timeout" else 0.0))

        def generate(num_ctx: int, loaded: float) -> None:
            self._generate(chat, body, model, num_ctx, num_predict, think_on, stream, fault, started, loaded)

        if not fake.scheduling:
            if delay and fake._wait(delay):
                self._abort()
                return
            num_ctx = min(requested_ctx, spec.context_length)  # Ollama caps num_ctx at the trained length
            fake._begin_load(model, num_ctx, session_s)
            try:
                loaded = time.perf_counter()
                if empty:
                    self._send_json(200, self._frame(chat, model, "", "", done=True, done_reason="load"))
                    return
                generate(num_ctx, loaded)
            finally:
                fake._end_load(model, session_s)
            return

        num_ctx = fake._num_ctx(spec, requested_ctx)
        try:
            # routes.go scheduleRunner → sched.go getRunner: nothing is written until a runner is ready.
            runner = fake._get_runner(model, num_ctx, session_s, has_session, self._client_gone)
        except _Busy:
            self._send_json(503, {"error": ERR_MAX_QUEUE})  # routes.go handleScheduleError
            return
        except _Gone:
            self._abort()  # the client is gone (Ollama would answer 499 to nobody) or the fake was reset
            return
        try:
            loaded = time.perf_counter()  # checkpointLoaded: load_duration = checkpointLoaded - checkpointStart
            if empty:
                self._send_json(200, self._frame(chat, model, "", "", done=True, done_reason="load"))
                return
            if not fake._acquire_slot(runner, self._client_gone):
                self._abort()
                return
            try:
                if delay and self._pause(delay):
                    self._abort()
                    return
                generate(num_ctx, loaded)
            finally:
                fake._release_slot(runner)
        finally:
            # useLoadedRunner's goroutine: the request context is done → finishedReqCh
            fake._release_runner(runner)

    def _frame(
        self,
        chat: bool,
        model: str,
        content: str,
        thinking: str,
        done: bool,
        tool_calls: list[dict] | None = None,
        **extra: Any,
    ) -> dict:
        """One response object in Ollama's shape: message{} for chat, response for generate."""
        obj: dict[str, Any] = {"model": model, "created_at": _rfc3339(time.time())}
        if chat:
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if thinking:
                message["thinking"] = thinking
            if tool_calls:
                message["tool_calls"] = tool_calls
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

        pieces: list[tuple[str, Any]] = [("thinking", p) for p in _pieces(THINKING_TEXT)] if think_on else []
        call = _tool_call(body) if chat else None
        if call is not None:
            pieces.append(("tool", call))
        else:
            text = reply_text(model, prompt_chars)
            if body.get("format"):
                text = _json_answer(body["format"], text)
            pieces += [("content", p) for p in _pieces(text)]
        done_reason = "stop"
        if 0 < num_predict < len(pieces):
            pieces, done_reason = pieces[:num_predict], "length"

        token_delay = float(params.get("token_delay_s", 0.0)) if fault and fault.name == "slow" else 0.0
        # `after`: how many pieces go out before the cut (default 2); 0 is Ollama's error as the stream's first line
        cut_at = (
            min(int(params.get("after", 2)), len(pieces))
            if fault and fault.name in ("drop_mid_stream", "stream_error")
            else None
        )

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
            if token_delay and self._pause(token_delay * len(pieces)):
                self._abort()
                return
            if fault and fault.name == "stream_error":
                self._send_json(500, {"error": params.get("message") or RUNNER_STREAM_ERROR})
                return
            content = "".join(p for kind, p in pieces if kind == "content")
            thinking = "".join(p for kind, p in pieces if kind == "thinking")
            calls = [p for kind, p in pieces if kind == "tool"]  # routes.go writeChatResponse gathers them
            obj = self._frame(chat, model, content, thinking, True, calls, **final(first, time.perf_counter()))
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

        if fault and fault.name == "stream_error" and cut_at == 0:
            # server/routes.go streamResponse: an error before anything was written is an HTTP status with a
            # JSON body (500 unless it says otherwise); only after content is it one more NDJSON line.
            self._send_json(500, {"error": params.get("message") or RUNNER_STREAM_ERROR})
            return
        self._start_stream()
        first = time.perf_counter()
        for i, (kind, piece) in enumerate(pieces):
            if i == cut_at:
                break
            if i and token_delay and self._pause(token_delay):
                self._abort()
                return
            if kind == "tool":
                self._send_line(self._frame(chat, model, "", "", False, [piece]))
                continue
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


def _tool_call(body: dict) -> dict | None:
    """The call a tools-capable model makes when the last user message names one of the request's tools,
    shaped as api/types.go ToolCall (id from routes.go toolCallId, then function{index, name, arguments});
    arguments follow the tool's JSON schema: a string gets the user's words, other types a plain value."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    users = [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"]
    asked = str(users[-1].get("content") or "").lower() if users else ""
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name or name.lower() not in asked:
            continue
        schema = function.get("parameters") if isinstance(function.get("parameters"), dict) else {}
        properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        plain = {"integer": 1, "number": 1, "boolean": True, "array": [], "object": {}}
        arguments = {}
        for key, prop in properties.items():
            prop = prop if isinstance(prop, dict) else {}
            if isinstance(prop.get("enum"), list) and prop["enum"]:
                arguments[key] = prop["enum"][0]
            else:
                arguments[key] = plain.get(prop.get("type"), str(users[-1].get("content") or ""))
        call_id = "call_" + "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
        return {"id": call_id, "function": {"index": 0, "name": name, "arguments": arguments}}
    return None


def main(argv: list[str] | None = None) -> int:
    """Run in the foreground until SIGINT/SIGTERM; prints the URL once it is listening."""
    parser = argparse.ArgumentParser(prog="python -m harness.fake_ollama", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=11434, help="port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated pulled tags")
    parser.add_argument("--keep-alive", default="5m", help="default keep_alive (OLLAMA_KEEP_ALIVE)")
    parser.add_argument("--num-ctx", type=int, default=4096, help="default num_ctx (OLLAMA_CONTEXT_LENGTH)")
    parser.add_argument("--strict-context", action="store_true", help="refuse overflowing prompts (400)")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    parser.add_argument("--no-scheduling", action="store_true", help="the ideal server: no queue, loads, eviction")
    parser.add_argument("--total-gb", type=float, default=24.0, help="RAM of the emulated Mac")
    parser.add_argument("--system-gb", type=float, default=12.0, help="RAM the OS and open apps hold")
    parser.add_argument("--metal-gb", type=float, default=None, help="Metal working set (default 2/3 of RAM)")
    parser.add_argument("--load-gb-per-s", type=float, default=50.0, help="load speed (resident GB a second)")
    parser.add_argument("--num-parallel", type=int, default=1, help="OLLAMA_NUM_PARALLEL")
    parser.add_argument("--max-queue", type=int, default=512, help="OLLAMA_MAX_QUEUE")
    parser.add_argument("--max-loaded-models", type=int, default=3, help="OLLAMA_MAX_LOADED_MODELS")
    parser.add_argument("--unload-s", type=float, default=0.2, help="how long an unloading runner takes")
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
        scheduling=not args.no_scheduling,
        total_gb=args.total_gb,
        system_gb=args.system_gb,
        metal_gb=args.metal_gb,
        load_gb_per_s=args.load_gb_per_s,
        num_parallel=args.num_parallel,
        max_queue=args.max_queue,
        max_loaded_models=args.max_loaded_models,
        unload_s=args.unload_s,
    )
    with fake:
        print(f"fake ollama listening on {fake.url} with {', '.join(fake.models)}", flush=True)
        done.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())


def _embedding(text: str) -> list[float]:
    """A unit vector that depends on the text only: the same input embeds the same, others differ."""
    digest = hashlib.sha256(text.encode()).digest()
    raw = [b - 127.5 for b in digest[:EMBEDDING_DIMENSIONS]]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [round(v / norm, 6) for v in raw]
