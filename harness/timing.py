"""One request as a client sees it (latency, time to first token, chunk times), and the statistics over many.

The benchmarks measure with these, so every script reads a stream the same way: an OpenAI SSE stream
(`data:` events ending in `[DONE]`) or Ollama's NDJSON (`/api/chat` lines ending in `done: true`).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

Wire = Literal["openai", "ollama"]
NO_CACHE = {"no-cache": True, "no-store": True}  # LiteLLM's per-request cache bypass: every prompt reaches a model
PATHS: dict[str, str] = {"openai": "/v1/chat/completions", "ollama": "/api/chat"}


@dataclass
class Timed:
    """What one request got back, with `time.perf_counter()` stamps; `error` says why it does not count."""

    start: float
    label: str = ""  # what it was for (a tier, a target), for whoever groups many
    status: int = 0
    headers: httpx.Headers = field(default_factory=httpx.Headers)
    error: str | None = None
    end: float | None = None
    first: float | None = None  # the first chunk that carried content
    last: float | None = None  # the last one
    chunks: int = 0
    text: str = ""
    usage: dict[str, Any] | None = None
    response_id: str | None = None
    final: dict[str, Any] = field(default_factory=dict)  # Ollama's `done` line, or a non-streaming body

    @property
    def ok(self) -> bool:
        return self.error is None

    def _ms(self, stamp: float | None) -> float | None:
        return None if stamp is None else (stamp - self.start) * 1000

    @property
    def ttft_ms(self) -> float | None:
        return self._ms(self.first)

    @property
    def e2e_ms(self) -> float | None:
        return self._ms(self.end)

    def completion_tokens(self) -> tuple[int, str]:
        """Tokens generated and where the count came from: Ollama's `eval_count`, the stream's usage, or chunks."""
        if self.final.get("eval_count"):
            return int(self.final["eval_count"]), "eval_count"
        if tokens := (self.usage or {}).get("completion_tokens"):
            return int(tokens), "usage"
        return self.chunks, "chunks"

    def decode_tps(self, tokens: int) -> float | None:
        """Decode rate on the client: (tokens - 1) over the time between the first and last content chunk."""
        if self.first is None or self.last is None or tokens < 2 or self.last <= self.first:
            return None
        return (tokens - 1) / (self.last - self.first)

    def fail(self, error: str) -> Timed:
        self.error, self.end = error, self.end or time.perf_counter()
        return self


def content(event: dict[str, Any], wire: Wire) -> str:
    """The text one chunk (SSE event or NDJSON line) adds to the answer."""
    if wire == "ollama":
        return (event.get("message") or {}).get("content") or ""
    return "".join((c.get("delta") or {}).get("content") or "" for c in event.get("choices") or [])


def events(resp: httpx.Response, wire: Wire) -> Iterator[dict[str, Any] | str]:
    """Parsed chunks of a streamed answer; `"[DONE]"` for the SSE end marker."""
    for raw in resp.iter_lines():
        line = raw.strip()
        if not line:
            continue
        if wire == "ollama":
            yield json.loads(line)
        elif line.startswith("data:"):
            data = line[5:].strip()
            yield "[DONE]" if data == "[DONE]" else json.loads(data)


def error_text(raw: bytes | str, limit: int = 160) -> str:
    """An error's message in a few words, call ids masked: the same failure must read the same every time."""
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        data = json.loads(text)
        err = data.get("error", data)
        text = str(err.get("message", err) if isinstance(err, dict) else err)
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "<id>", text)
    return " ".join(text.split())[:limit]


def stream(client: httpx.Client, body: dict[str, Any], wire: Wire = "openai", path: str | None = None) -> Timed:
    """One streamed request read to its end: content chunk times, text, usage and the end marker checked."""
    t = Timed(time.perf_counter())
    done = False
    pieces: list[str] = []
    try:
        with client.stream("POST", path or PATHS[wire], json={**body, "stream": True}) as resp:
            t.status, t.headers = resp.status_code, resp.headers
            if resp.status_code != 200:
                return t.fail(f"HTTP {resp.status_code}: {error_text(resp.read())}")
            for event in events(resp, wire):
                if event == "[DONE]":
                    done = True
                    break
                assert isinstance(event, dict)
                if "error" in event:
                    return t.fail(f"stream error: {error_text(json.dumps(event['error']))}")
                if piece := content(event, wire):
                    t.last = time.perf_counter()
                    t.first = t.first or t.last
                    t.chunks += 1
                    pieces.append(piece)
                t.response_id = t.response_id or event.get("id")
                t.usage = event.get("usage") or t.usage
                if wire == "ollama" and event.get("done"):
                    done, t.final = True, event
        t.end, t.text = time.perf_counter(), "".join(pieces)
    except (httpx.HTTPError, ValueError) as exc:
        return t.fail(f"{type(exc).__name__}: {exc}")
    if t.first is None or not done:
        return t.fail("stream ended without content or without its end")
    return t


def call(client: httpx.Client, body: dict[str, Any], wire: Wire = "openai", path: str | None = None) -> Timed:
    """One non-streaming request: wall time until the whole answer is read and parsed, which must have content."""
    t = Timed(time.perf_counter())
    try:
        resp = client.post(path or PATHS[wire], json={**body, "stream": False})
        t.end, t.status, t.headers = time.perf_counter(), resp.status_code, resp.headers
        if resp.status_code != 200:
            return t.fail(f"HTTP {resp.status_code}: {error_text(resp.content)}")
        t.final = resp.json()
        message = t.final.get("message") if wire == "ollama" else (t.final.get("choices") or [{}])[0].get("message")
        t.text = (message or {}).get("content") or ""
        t.usage = t.final.get("usage")
    except (httpx.HTTPError, ValueError) as exc:
        return t.fail(f"{type(exc).__name__}: {exc}")
    return t if t.text else t.fail(f"no content: {resp.text[:200]}")


def litellm_timings(headers: httpx.Headers) -> dict[str, float]:
    """LiteLLM's own timing headers (`x-litellm-overhead-duration-ms`, ...), as numbers."""
    out = {}
    for name, value in headers.items():
        if name.startswith("x-litellm-") and name.endswith("-ms"):
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def tally(samples: list[Any]) -> dict[str, Any]:
    """How many requests (anything with `ok` and `error`, a `Timed`) were made and failed, the first errors."""
    ok = sum(1 for s in samples if s.ok)
    out: dict[str, Any] = {"n": len(samples), "ok": ok, "errors": len(samples) - ok}
    if errors := sorted({s.error for s in samples if s.error}):
        out["first_errors"] = errors[:5]
    return out


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile: a value that was actually observed."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def spread(values: list[float]) -> dict[str, float] | None:
    """Median, p95, p5, mean, min, max: p95 is the slow tail of a time, p5 the slow tail of a rate."""
    if not values:
        return None
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "p95": percentile(ordered, 0.95),
        "p5": percentile(ordered, 0.05),
        "mean": statistics.fmean(ordered),
        "min": ordered[0],
        "max": ordered[-1],
    }


def client(base_url: str, key: str | None = None, timeout: float = 60.0, connections: int = 128) -> httpx.Client:
    """A keep-alive client, like a real one holds; `key` as a bearer token (the proxy's master key)."""
    return httpx.Client(
        base_url=base_url,
        headers={"Authorization": f"Bearer {key}"} if key else {},
        timeout=timeout,
        trust_env=False,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )
