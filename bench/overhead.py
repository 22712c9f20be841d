"""What the proxy costs over talking to Ollama directly, and what our plugins add over bare LiteLLM.

Three targets, measured side by side in one run and interleaved round-robin (direct, bare, full, direct,
full, bare, ...) so that drift on a shared machine hits all three equally:

  direct  the emulated Ollama's own ``/api/chat`` (the body LiteLLM itself sends, captured at start)
  bare    the real ``litellm`` proxy with litellm-config.yaml minus our plugins in ``litellm_settings.callbacks``
          (``plugins.hot_path`` stays: it tunes LiteLLM itself, so full - bare is what the plugins cost)
  full    the real ``litellm`` proxy with litellm-config.yaml as is (our plugins loaded)

The backend is ``tests.fake_ollama`` in its own process, so its work does not share this client's GIL.
Every request asks tier ``fast-9b`` with a unique prompt and ``cache: {no-cache, no-store}``, and the
fake's request log is checked to grow by one per request: a cache hit would time the cache, not the proxy.

With ``--ab`` the two proxies are instead ``full`` (as is) and ``variant`` (the full stack plus
``--extra-settings``/``--env``/``--proxy-args``): a candidate setting is judged against the same run's
baseline, because run-to-run drift on a shared 2-core machine is larger than most settings' effect.

    .venv/bin/python bench/overhead.py                       # N=200 per target and phase, 8 and 32 clients
    .venv/bin/python bench/overhead.py --quick --write-readme
    .venv/bin/python bench/overhead.py --ab --concurrency '' --env LITELLM_LOG=ERROR --label log-error
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
TUNING = "plugins.hot_path.handler"  # tunes LiteLLM itself: kept in `bare` too
if str(ROOT) not in sys.path:  # run as `python bench/overhead.py`: make `tests.stack` importable
    sys.path.insert(0, str(ROOT))

from bench.readme_block import write_block  # noqa: E402
from tests.stack import CONFIG, KEY, closed_port_url, free_port, litellm_command, stack_env  # noqa: E402

TIER = "fast-9b"
OLLAMA_TAG = "qwen3.5:9b"  # what fast-9b's deployment asks Ollama for
NO_CACHE = {"no-cache": True, "no-store": True}
DEFAULT_NAMES = ("direct", "bare", "full")
AB_NAMES = ("direct", "full", "variant")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "overhead.json"
GOALS = {"added_ms": 8.0, "ttft_added_ms": 10.0, "plugins_ms": 1.0, "errors_at": 32}


# -- processes --


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Poll until `url` answers 200; fail early (with the log) if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            how = (
                f"was killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exited with {proc.returncode}"
            )
            raise RuntimeError(f"{shlex.join(map(str, proc.args))} {how} while starting:\n{_tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready in {timeout:.0f} s:\n{_tail(log)}")


def _tail(path: Path, lines: int = 40) -> str:
    with contextlib.suppress(FileNotFoundError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the process group we started (start_new_session), SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _group_cpu_s(pgid: int) -> float:
    """CPU seconds (user+sys) used so far by every process in a group: the proxy and any workers it forked."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:  # fields[0] is state; pgrp is the 5th field of stat
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


@dataclass
class FakeOllamaProcess:
    """The `tests.fake_ollama` server in its own process: the backend's CPU is not the client's GIL."""

    log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeOllamaProcess:
        # socketserver's listen backlog is 5: a burst of 32 new connections overflowed it (a reset, a 1 s SYN
        # retry) and made `direct` look slow at 32 clients. Real Ollama (Go net/http) uses the system's.
        boot = "import sys, tests.fake_ollama as f; f._Server.request_queue_size = 1024; sys.exit(f.main())"
        cmd = [sys.executable, "-c", boot, "--port", str(self.port)]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_http(f"{self.url}/api/version", self.proc, self.log, 30)
        return self

    def requests(self) -> list[dict[str, Any]]:
        """Every request the fake has received, oldest first."""
        resp = httpx.get(f"{self.url}/_fake/requests", timeout=60, trust_env=False)
        resp.raise_for_status()
        return resp.json()["requests"]

    def chats(self) -> list[dict[str, Any]]:
        """Only the ``/api/chat`` requests: one per answered request, whoever sent it."""
        return [r for r in self.requests() if r["path"] == "/api/chat"]

    def stop(self) -> None:
        _stop(self.proc)


@dataclass
class ProxyProcess:
    """One real `litellm --config ...` process on loopback, run from the repository root like `ask serve`."""

    name: str
    config: Path
    env: dict[str, str]
    log: Path
    extra_args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> None:
        cmd = [
            litellm_command(),
            "--config",
            str(self.config),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *self.extra_args,
        ]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout: float = 120.0) -> None:
        assert self.proc is not None
        _wait_http(f"{self.url}/health/liveliness", self.proc, self.log, timeout)

    def cpu_s(self) -> float:
        return _group_cpu_s(self.proc.pid) if self.proc else 0.0

    def stop(self) -> None:
        _stop(self.proc)


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` over `base`, recursively for mappings; anything else in `extra` replaces."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def proxy_config(tmp: Path, name: str, plugins: bool, extra: dict[str, Any] | None) -> Path:
    """The config a proxy runs: the project's yaml, without our plugins unless `plugins`, plus `extra`.

    The full stack with nothing extra runs litellm-config.yaml itself, untouched. Derived configs live in
    `tmp`; the proxy's cwd is the repository root, so `plugins.*` still resolve by normal import.
    """
    if plugins and not extra:
        return CONFIG
    config = yaml.safe_load(CONFIG.read_text())
    ours = config.get("litellm_settings", {}).pop("callbacks", None) or []
    kept = ours if plugins else [c for c in ours if c == TUNING]
    if extra:
        config = deep_merge(config, extra)
    if kept:  # an `extra` that lists callbacks adds to ours
        settings = config.setdefault("litellm_settings", {})
        settings["callbacks"] = [*kept, *(settings.get("callbacks") or [])]
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# -- one request --


@dataclass
class Sample:
    ok: bool
    ms: float  # latency (non-streaming) or time to the first content chunk (streaming)
    total_ms: float | None = None  # streaming: time to the end of the stream
    overhead_hdr_ms: float | None = None  # LiteLLM's own claim: x-litellm-overhead-duration-ms
    timing_hdrs: dict[str, float] = field(default_factory=dict)  # x-litellm-*-ms, e.g. LITELLM_DETAILED_TIMING
    error: str | None = None


@dataclass
class Target:
    """One way to get an answer: its own keep-alive client, like a real client would hold."""

    name: str
    base_url: str
    proxy: ProxyProcess | None = None
    backend_body: dict[str, Any] = field(default_factory=dict)  # direct only: LiteLLM's own body, mirrored
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        headers = {"Authorization": f"Bearer {KEY}"} if self.proxy else {}
        self.client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=30.0,
            trust_env=False,
            limits=httpx.Limits(max_connections=128, max_keepalive_connections=128),
        )

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.proxy else "/api/chat"

    def body(self, prompt: str, stream: bool, no_cache: bool = True) -> dict[str, Any]:
        messages = [{"role": "user", "content": prompt}]
        if self.proxy is None:
            return {**self.backend_body, "model": OLLAMA_TAG, "messages": messages, "stream": stream}
        body: dict[str, Any] = {"model": TIER, "messages": messages, "stream": stream}
        if no_cache:
            body["cache"] = NO_CACHE
        return body

    def call(self, prompt: str, no_cache: bool = True) -> Sample:
        """One non-streaming request: client-side wall time until the whole answer is read."""
        start = time.perf_counter()
        try:
            resp = self.client.post(self.path, json=self.body(prompt, False, no_cache))
            ms = (time.perf_counter() - start) * 1000
            if resp.status_code != 200:
                return Sample(False, ms, error=f"HTTP {resp.status_code}: {resp.text[:200]}")
            data = resp.json()
            msg = data.get("message") if self.proxy is None else (data.get("choices") or [{}])[0].get("message")
            if not (msg or {}).get("content"):
                return Sample(False, ms, error=f"no content: {resp.text[:200]}")
            hdr = resp.headers.get("x-litellm-overhead-duration-ms")
            timing = {
                k: float(v)
                for k, v in resp.headers.items()
                if k.startswith("x-litellm-") and k.endswith("-ms") and _is_number(v)
            }
            return Sample(True, ms, overhead_hdr_ms=float(hdr) if hdr else None, timing_hdrs=timing)
        except (httpx.HTTPError, ValueError) as exc:
            return Sample(False, (time.perf_counter() - start) * 1000, error=f"{type(exc).__name__}: {exc}")

    def stream(self, prompt: str) -> Sample:
        """One streaming request: time to the first chunk that carries content, and to the stream's end."""
        start = time.perf_counter()
        first: float | None = None
        try:
            with self.client.stream("POST", self.path, json=self.body(prompt, True)) as resp:
                if resp.status_code != 200:
                    resp.read()
                    return Sample(
                        False,
                        (time.perf_counter() - start) * 1000,
                        error=f"HTTP {resp.status_code}: {resp.text[:200]}",
                    )
                done = False
                for line in resp.iter_lines():
                    event = self._event(line)
                    if event is None:
                        continue
                    if event == "[DONE]":
                        done = True
                        break
                    if "error" in event:
                        return Sample(False, (time.perf_counter() - start) * 1000, error=f"stream: {event}")
                    if first is None and self._content(event):
                        first = time.perf_counter()
                    if self.proxy is None and event.get("done"):
                        done = True
            end = time.perf_counter()
        except (httpx.HTTPError, ValueError) as exc:
            return Sample(False, (time.perf_counter() - start) * 1000, error=f"{type(exc).__name__}: {exc}")
        if first is None or not done:
            return Sample(False, (end - start) * 1000, error="stream ended without content or without its end")
        return Sample(True, (first - start) * 1000, total_ms=(end - start) * 1000)

    def _event(self, line: str) -> dict[str, Any] | str | None:
        """A parsed NDJSON line (direct) or SSE `data:` event (proxy); None for blank/comment lines."""
        line = line.strip()
        if not line:
            return None
        if self.proxy is None:
            return json.loads(line)
        if not line.startswith("data:"):
            return None
        data = line[5:].strip()
        return "[DONE]" if data == "[DONE]" else json.loads(data)

    def _content(self, event: dict[str, Any]) -> str:
        if self.proxy is None:
            return (event.get("message") or {}).get("content") or ""
        return "".join((c.get("delta") or {}).get("content") or "" for c in event.get("choices") or [])

    def close(self) -> None:
        self.client.close()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# -- measuring --


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile: a value that was actually observed."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def summarize(samples: list[Sample]) -> dict[str, Any]:
    ok = sorted(s.ms for s in samples if s.ok)
    out: dict[str, Any] = {"n": len(samples), "ok": len(ok), "errors": len(samples) - len(ok)}
    if ok:
        out |= {
            "median_ms": statistics.median(ok),
            "p95_ms": percentile(ok, 0.95),
            "mean_ms": statistics.fmean(ok),
            "min_ms": ok[0],
            "max_ms": ok[-1],
        }
    totals = sorted(s.total_ms for s in samples if s.ok and s.total_ms is not None)
    if totals:
        out["stream_total_median_ms"] = statistics.median(totals)
    hdr = [s.overhead_hdr_ms for s in samples if s.ok and s.overhead_hdr_ms is not None]
    if hdr:
        out["litellm_overhead_header_median_ms"] = statistics.median(hdr)
    names = sorted({k for s in samples if s.ok for k in s.timing_hdrs})
    if names:
        out["litellm_timing_header_medians_ms"] = {
            k: statistics.median([s.timing_hdrs[k] for s in samples if s.ok and k in s.timing_hdrs]) for k in names
        }
    errors = [s.error for s in samples if not s.ok]
    if errors:
        out["first_errors"] = sorted(set(errors))[:5]
    return out


@dataclass
class Phase:
    """One measurement condition: sequential or `clients` concurrent, latency or TTFT."""

    clients: int  # 1 = sequential
    stream: bool

    @property
    def key(self) -> str:
        return f"{'seq' if self.clients == 1 else f'c{self.clients}'}/{'ttft' if self.stream else 'latency'}"

    @property
    def title(self) -> str:
        how = "sequential" if self.clients == 1 else f"{self.clients} concurrent clients"
        what = "streaming TTFT" if self.stream else "non-streaming latency"
        return f"{how}, {what}"


class Counter:
    """Unique prompts that name their target, so the fake's log can be attributed afterwards."""

    def __init__(self) -> None:
        self._n = 0
        self._lock = threading.Lock()
        self.sent: dict[str, int] = {}

    def prompt(self, target: str, phase: str) -> str:
        with self._lock:
            self._n += 1
            self.sent[target] = self.sent.get(target, 0) + 1
            n = self._n
        return f"[{target}] {phase} #{n} {uuid.uuid4().hex}: say hello"


def rounds(targets: list[Target], i: int) -> list[Target]:
    """Round i's order: direct first, the two proxies swapped every other round.

    A proxy keeps working after its response is sent (logging callbacks, cost tracking); on 2 cores that
    tail slows whatever request comes next. With a fixed order the second proxy would always pay for the
    first one's tail, which biased an A/A control by ~1 ms; alternating makes each proxy follow the other
    equally often.
    """
    return targets if i % 2 == 0 else [targets[0], *reversed(targets[1:])]


def run_phase(phase: Phase, targets: list[Target], n: int, warmup: int, counter: Counter) -> dict[str, Any]:
    """Measure all targets under one condition, round-robin, warm-up discarded."""
    measured: dict[str, list[Sample]] = {t.name: [] for t in targets}
    busy_s: dict[str, float] = dict.fromkeys(measured, 0.0)
    cpu0 = {t.name: t.proxy.cpu_s() for t in targets if t.proxy}

    def one(t: Target) -> Sample:
        prompt = counter.prompt(t.name, phase.key)
        return t.stream(prompt) if phase.stream else t.call(prompt)

    if phase.clients == 1:
        for i in range(warmup + n):
            for t in rounds(targets, i):
                start = time.perf_counter()
                sample = one(t)
                if i >= warmup:
                    measured[t.name].append(sample)
                    busy_s[t.name] += time.perf_counter() - start
    else:
        # Round-robin in blocks: each target's turn is 2 x clients requests kept `clients` deep.
        block = 2 * phase.clients
        with ThreadPoolExecutor(max_workers=phase.clients) as pool:
            for t in targets:  # warm-up: open `clients` keep-alive connections per target
                wait([pool.submit(one, t) for _ in range(max(warmup, phase.clients))])
            left = dict.fromkeys(measured, n)
            turn = 0
            while any(left.values()):
                turn += 1
                for t in rounds(targets, turn):
                    k = min(block, left[t.name])
                    if not k:
                        continue
                    start = time.perf_counter()
                    futures = [pool.submit(one, t) for _ in range(k)]
                    wait(futures)
                    busy_s[t.name] += time.perf_counter() - start
                    measured[t.name].extend(f.result() for f in futures)
                    left[t.name] -= k
    result: dict[str, Any] = {}
    for t in targets:
        stats = summarize(measured[t.name])
        stats["throughput_rps"] = len(measured[t.name]) / busy_s[t.name] if busy_s[t.name] else None
        if t.proxy:
            total = (warmup if phase.clients == 1 else max(warmup, phase.clients)) + n
            stats["proxy_cpu_ms_per_request"] = (t.proxy.cpu_s() - cpu0[t.name]) * 1000 / total
        result[t.name] = stats
    return result


def derive(phase_result: dict[str, Any], names: tuple[str, str, str]) -> dict[str, Any]:
    """Added latency over direct, the second proxy's cost over the first, and their ratio (medians).

    With the default names the difference is what our plugins cost (full - bare).
    """
    direct, first, second = names
    med = {name: phase_result[name].get("median_ms") for name in names}
    p95 = {name: phase_result[name].get("p95_ms") for name in names}
    if None in med.values() or None in p95.values():
        return {}
    cpu = [phase_result[name].get("proxy_cpu_ms_per_request") for name in (first, second)]
    out = {
        f"{first}_added_ms": med[first] - med[direct],
        f"{second}_added_ms": med[second] - med[direct],
        "delta_ms": med[second] - med[first],
        "delta_p95_ms": p95[second] - p95[first],
        "delta_cpu_ms_per_request": cpu[1] - cpu[0] if None not in cpu else None,
        "ratio": med[second] / med[first],
    }
    if names == DEFAULT_NAMES:
        out |= {
            "plugins_ms": out["delta_ms"],
            "plugins_p95_ms": out["delta_p95_ms"],
            "full_over_bare_ratio": out["ratio"],
        }
    return out


# -- checks --


def check_cache_bypass(fake: FakeOllamaProcess, proxies: list[Target]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Prove the per-request no-cache body reaches the backend every time, and that the cache is on.

    Returns the check's record and the body LiteLLM sent to Ollama (the direct target sends the same).
    """
    record: dict[str, Any] = {}
    backend_body: dict[str, Any] = {}
    for t in proxies:
        before = len(fake.chats())
        prompt = f"[{t.name}] cache-check {uuid.uuid4().hex}"
        a, b = t.call(prompt), t.call(prompt)
        chats = fake.chats()
        bypassed = len(chats) - before
        backend_body = backend_body or {k: v for k, v in chats[-1]["body"].items() if k not in ("messages",)}
        control = f"[{t.name}] cache-control {uuid.uuid4().hex}"
        c, d = t.call(control, no_cache=False), t.call(control, no_cache=False)
        cached = len(fake.chats()) - before - bypassed
        record[t.name] = {
            "same_prompt_twice_with_no_cache_backend_calls": bypassed,
            "same_prompt_twice_without_no_cache_backend_calls": cached,
            "ok": bypassed == 2 and all(s.ok for s in (a, b, c, d)),
        }
        if not record[t.name]["ok"]:
            raise RuntimeError(f"cache check failed for {t.name}: {record[t.name]} {[a, b, c, d]}")
    return record, backend_body


def account(fake: FakeOllamaProcess, counter: Counter, names: tuple[str, ...]) -> dict[str, Any]:
    """Backend calls per target vs requests sent: equal means no cache hit, retry or lost request."""
    seen: dict[str, int] = dict.fromkeys(names, 0)
    everything = fake.requests()
    paths: dict[str, int] = {}
    for rec in everything:
        paths[rec["path"]] = paths.get(rec["path"], 0) + 1
    for rec in (r for r in everything if r["path"] == "/api/chat"):
        messages = (rec.get("body") or {}).get("messages") or [{}]
        content = str(messages[-1].get("content") or "")
        for name in names:
            if content.startswith(f"[{name}] ") and "cache-c" not in content:
                seen[name] += 1
    out: dict[str, Any] = {
        name: {
            "requests_sent": counter.sent.get(name, 0),
            "backend_calls": seen[name],
            "one_backend_call_per_request": counter.sent.get(name, 0) == seen[name],
        }
        for name in names
    }
    out["backend_requests_by_path"] = paths  # all targets together, checks included
    return out


# -- output --


def _f(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def text_report(results: dict[str, Any]) -> str:
    names, label = results["targets"], results["delta"]
    lines = []
    for phase in results["phases"].values():
        d = phase["derived"]
        lines.append(f"\n{phase['title']}  (N={results['settings']['requests']} per target; ms)")
        lines.append(
            f"  {'target':<7} {'median':>8} {'p95':>8} {'mean':>8} {'errors':>6} {'added':>8} "
            f"{'req/s':>7} {'cpu/req':>8}"
        )
        for name in names:
            s = phase["targets"][name]
            added = None if name == "direct" else d.get(f"{name}_added_ms")
            rps = f"{s['throughput_rps']:.0f}" if s.get("throughput_rps") else "-"
            lines.append(
                f"  {name:<7} {_f(s.get('median_ms')):>8} {_f(s.get('p95_ms')):>8} {_f(s.get('mean_ms')):>8} "
                f"{s['errors']:>6} {_f(added, True):>8} {rps:>7} "
                f"{_f(s.get('proxy_cpu_ms_per_request')):>8}"
            )
        if d:
            lines.append(
                f"  {label}: median {_f(d['delta_ms'], True)} ms, p95 {_f(d['delta_p95_ms'], True)} ms, "
                f"cpu/req {_f(d['delta_cpu_ms_per_request'], True)} ms; "
                f"{names[2]}/{names[1]} = {d['ratio']:.3f}x"
            )
        for name in names[1:]:
            hdr = phase["targets"][name].get("litellm_overhead_header_median_ms")
            if hdr is not None:
                lines.append(f"  {name}: LiteLLM's own x-litellm-overhead-duration-ms median {hdr:.2f}")
    lines.append("")
    for goal in results["goals"]:
        verdict = "not measured" if goal["value"] == "-" else "MET" if goal["met"] else "NOT MET"
        lines.append(f"goal: {goal['goal']:<55} {goal['value']:>9}  {verdict}")
    return "\n".join(lines)


def markdown_report(results: dict[str, Any]) -> str:
    """The block pasted into bench/README.md between the overhead markers."""
    s = results["settings"]
    env = results["environment"]
    names, label = results["targets"], results["delta"]
    out = [
        f"Run {results['date']} with `{results['command']}`, litellm {env['litellm_version']}, "
        f"{env['cpu_count']} CPUs, load average {env['loadavg_start'][0]:.2f} at start and "
        f"{env['loadavg_end'][0]:.2f} at end, N={s['requests']} per target and phase "
        f"(warm-up {s['warmup']} discarded). Milliseconds; median / p95.",
        "",
        f"| condition | {' | '.join(names)} | {names[1]} added | {names[2]} added | {label} "
        f"| {names[2]}/{names[1]} | req/s {'/'.join(n[0] for n in names[1:])} "
        f"| cpu ms/req {'/'.join(n[0] for n in names[1:])} | errors {'/'.join(n[0] for n in names)} |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for phase in results["phases"].values():
        t, d = phase["targets"], phase["derived"]
        cells = [f"{_f(t[n].get('median_ms'))} / {_f(t[n].get('p95_ms'))}" for n in names]
        derived = (
            [
                _f(d[f"{names[1]}_added_ms"], True),
                _f(d[f"{names[2]}_added_ms"], True),
                _f(d["delta_ms"], True),
                f"{d['ratio']:.2f}x",
            ]
            if d
            else ["-"] * 4
        )
        errors = "/".join(str(t[n]["errors"]) for n in names)
        rps = "/".join(f"{t[n]['throughput_rps']:.0f}" if t[n].get("throughput_rps") else "-" for n in names[1:])
        cpu = "/".join(_f(t[n].get("proxy_cpu_ms_per_request")) for n in names[1:])
        out.append(f"| {phase['title']} | {' | '.join(cells)} | {' | '.join(derived)} | {rps} | {cpu} | {errors} |")
    if results["goals"]:
        out += ["", "| goal | measured | met |", "|---|---|---|"]
        out += [
            f"| {g['goal']} | {g['value']} | {'-' if g['value'] == '-' else 'yes' if g['met'] else '**no**'} |"
            for g in results["goals"]
        ]
    return "\n".join(out)


def evaluate_goals(phases: dict[str, Any]) -> list[dict[str, Any]]:
    goals = []

    def add(goal: str, value: float | None, limit: float, unit: str = "ms") -> None:
        goals.append(
            {
                "goal": goal,
                "value": "-" if value is None else f"{value:.2f} {unit}" if unit else f"{value:g}",
                "met": value is not None and value <= limit,
            }
        )

    seq, ttft = (
        phases.get("seq/latency", {}).get("derived", {}),
        phases.get("seq/ttft", {}).get("derived", {}),
    )
    add(
        f"full-stack added latency (median) <= {GOALS['added_ms']:g} ms",
        seq.get("full_added_ms"),
        GOALS["added_ms"],
    )
    add(
        f"full-stack added TTFT (median) <= {GOALS['ttft_added_ms']:g} ms",
        ttft.get("full_added_ms"),
        GOALS["ttft_added_ms"],
    )
    add(
        f"plugins over bare LiteLLM (median latency) <= {GOALS['plugins_ms']:g} ms",
        seq.get("plugins_ms"),
        GOALS["plugins_ms"],
    )
    add(
        f"plugins over bare LiteLLM (median TTFT) <= {GOALS['plugins_ms']:g} ms",
        ttft.get("plugins_ms"),
        GOALS["plugins_ms"],
    )
    c = GOALS["errors_at"]
    keys = [k for k in (f"c{c}/latency", f"c{c}/ttft") if k in phases]
    errors = sum(phases[k]["targets"]["full"]["errors"] for k in keys) if keys else None
    add(f"zero errors at {c} concurrent clients (full stack)", errors, 0, unit="")
    return goals


# -- main --


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--requests", type=int, default=200, help="measured requests per target and phase")
    p.add_argument("--warmup", type=int, default=None, help="discarded requests per target (default 20, quick 10)")
    p.add_argument("--quick", action="store_true", help="N=50")
    p.add_argument("--concurrency", default="8,32", help="comma-separated client counts ('' for none)")
    p.add_argument("--modes", default="latency,ttft", help="latency (non-streaming), ttft (streaming) or both")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument("--write-readme", action="store_true", help="rewrite the marked block in bench/README.md")
    p.add_argument("--ab", action="store_true", help="proxies are full (as is) and variant (full + the options below)")
    p.add_argument("--extra-settings", type=Path, help="yaml merged into both proxies' configs (--ab: variant)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="proxy env (--ab: variant)")
    p.add_argument(
        "--proxy-args",
        default="",
        help="extra litellm CLI arguments (--ab: variant), written --proxy-args='--num_workers 2'",
    )
    p.add_argument("--keep-logs", type=Path, metavar="DIR", help="copy the proxy logs and configs here")
    p.add_argument("--label", default="", help="a name for this run in the JSON (settings experiments)")
    p.add_argument(
        "--hold",
        type=float,
        default=0.0,
        help="after start-up, run sequential load on the full stack for this many seconds (profiling)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.requests = 50
    if args.warmup is None:
        args.warmup = 10 if args.quick else 20
    return args


def hold_load(target: Target, seconds: float, counter: Counter) -> dict[str, Any]:
    """Sequential non-streaming load on one proxy only, e.g. while py-spy samples its pid."""
    samples, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(target.call(counter.prompt(target.name, "hold")))
    return summarize(samples)


@contextlib.contextmanager
def stack(
    args: argparse.Namespace, names: tuple[str, str, str], tmp: Path
) -> Iterator[tuple[FakeOllamaProcess, list[Target]]]:
    """The fake Ollama and both proxies (started concurrently), torn down whatever happens."""
    extra = yaml.safe_load(args.extra_settings.read_text()) if args.extra_settings else None
    overrides = dict(kv.split("=", 1) for kv in args.env)
    proxy_args = shlex.split(args.proxy_args)
    if args.ab:  # (name, plugins, extra, env overrides, CLI args): only the variant differs
        specs = [("full", True, None, {}, []), ("variant", True, extra, overrides, proxy_args)]
    else:
        specs = [("bare", False, extra, overrides, proxy_args), ("full", True, extra, overrides, proxy_args)]
    fake = FakeOllamaProcess(log=tmp / "fake-ollama.log")
    proxies: list[ProxyProcess] = []
    targets: list[Target] = []
    try:
        fake.start()
        for name, plugins, settings, env_over, cli in specs:
            home = tmp / name
            home.mkdir()
            # The unused backends point at closed ports, the same for both (plugins/environment.py would
            # default them for the full stack only).
            env = stack_env(
                home,
                OLLAMA_API_BASE=fake.url,
                LLAMA_SWAP_API_BASE=closed_port_url("/v1"),
                TINY_API_BASE=closed_port_url("/v1"),
                LITELLM_LOG="ERROR",  # as `ask serve` runs the proxy (ask_cli/serve.py)
            )
            config = proxy_config(tmp, name, plugins, settings)
            proxies.append(ProxyProcess(name, config, env | env_over, tmp / f"{name}.log", cli))
        for p in proxies:
            p.launch()
        for p in proxies:
            p.wait_ready()
        targets = [Target(names[0], fake.url)] + [Target(p.name, p.url, proxy=p) for p in proxies]
        yield fake, targets
    finally:
        for t in targets:
            t.close()
        for p in proxies:
            p.stop()
        fake.stop()
        if args.keep_logs:  # the proxies' output and the configs they ran, for checking a variant took effect
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for path in [*tmp.glob("*.log"), *tmp.glob("*.yaml")]:
                shutil.copy(path, args.keep_logs / path.name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    phases = [Phase(c, m == "ttft") for c in [1, *concurrency] for m in modes]
    names = AB_NAMES if args.ab else DEFAULT_NAMES
    results: dict[str, Any] = {
        "label": args.label,
        "targets": list(names),
        "delta": "variant - full" if args.ab else "plugins (full - bare)",
        "command": shlex.join(["bench/overhead.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.now(UTC).astimezone().isoformat(timespec="seconds"),
        "environment": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "loadavg_start": list(os.getloadavg()),
            "litellm_version": version("litellm"),
        },
        "settings": {
            "requests": args.requests,
            "warmup": args.warmup,
            "concurrency": concurrency,
            "modes": modes,
            "tier": TIER,
            "no_cache_body": NO_CACHE,
            "extra_settings": yaml.safe_load(args.extra_settings.read_text()) if args.extra_settings else None,
            "env": args.env,
            "proxy_args": args.proxy_args,
        },
        "phases": {},
    }
    counter = Counter()
    with (
        tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmpdir,
        stack(args, names, Path(tmpdir)) as (fake, targets),
    ):
        direct, *proxies = targets
        pids = ", ".join(f"{t.name} {t.base_url} (pid {t.proxy.proc.pid})" for t in proxies)
        print(f"started in {time.monotonic() - started:.1f} s: fake ollama {fake.url}, {pids}", flush=True)
        results["cache_check"], direct.backend_body = check_cache_bypass(fake, proxies)
        results["settings"]["direct_body_template"] = direct.backend_body
        if args.hold:
            results["hold"] = hold_load(proxies[-1], args.hold, counter)
        for phase in phases:
            t0 = time.monotonic()
            load = os.getloadavg()[0]
            res = run_phase(phase, targets, args.requests, args.warmup, counter)
            results["phases"][phase.key] = {
                "title": phase.title,
                "loadavg_1m_at_start": load,
                "seconds": round(time.monotonic() - t0, 1),
                "targets": res,
                "derived": derive(res, names),
            }
            print(f"  {phase.title}: {time.monotonic() - t0:.1f} s", flush=True)
        results["backend_accounting"] = account(fake, counter, names)
    results["environment"]["loadavg_end"] = list(os.getloadavg())
    results["goals"] = [] if args.ab else evaluate_goals(results["phases"])
    results["wall_seconds"] = round(time.monotonic() - started, 1)

    print(text_report(results))
    bad = [n for n in names if not results["backend_accounting"][n]["one_backend_call_per_request"]]
    verdict = "MISMATCH for " + ", ".join(bad) if bad else "1 for every target"
    print(
        f"backend calls per request: {verdict}; "
        f"load average {results['environment']['loadavg_start'][0]:.2f} -> "
        f"{results['environment']['loadavg_end'][0]:.2f}; {results['wall_seconds']:.0f} s"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    if args.write_readme:
        write_block("overhead", markdown_report(results))
        print("updated bench/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
