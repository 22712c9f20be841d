"""Does concurrent load on fast-9b and coder-30b thrash the machine? The seed's stress test.

    .venv/bin/python bench/stress.py                          # 4 streaming clients per tier for 60 s
    .venv/bin/python bench/stress.py --quick                  # 2 clients per tier for 15 s
    .venv/bin/python bench/stress.py --kill-9b-during-load    # the 9B's runner dies while the 30B loads
    .venv/bin/python bench/stress.py --write-readme           # also rewrites the stress block in bench/README.md

The real proxy (litellm-config.yaml as is) serves both tiers at once while a sampler watches the backend:
`/api/ps` (which models are resident, and their sizes, at the same instant), the backend's RSS, the embedded
model's RSS and the OS's pageouts. Per tier it reports errors, demotions (X-Served-By / X-Demoted-From,
checked against the demotion log) and p50/p95 latency and TTFT.

The backend is the user's Ollama when one answers at OLLAMA_API_BASE (default http://127.0.0.1:11434),
else the emulated one (tests/fake_ollama.py) in its own process, paced like the real models (PACING, an
assumption) with the 30B's first requests waiting out a cold load. With the fake, `/api/ps` sizes are the
emulated models' declared sizes (what a real Ollama reports for them), not memory used here, and the fake
never evicts a model. The `tiny` tier is always the real embedded llama.cpp model, started here.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/stress.py`
    sys.path.insert(0, str(ROOT))

from ask_cli.doctor import GIB, OS_ALLOWANCE_GB, ram_bytes  # noqa: E402
from ask_cli.embedded import wait_ready  # noqa: E402
from ask_cli.models import Tier, tiers_from_config  # noqa: E402
from bench.overhead import FakeOllamaProcess, percentile  # noqa: E402
from bench.readme_block import write_block  # noqa: E402
from tests.fake_ollama import RUNNER_KILLED  # noqa: E402
from tests.stack import CONFIG, KEY, Proxy, closed_port_url, free_port, read_jsonl, stack_env  # noqa: E402

TIERS = ("fast-9b", "coder-30b")  # the seed: "fire concurrent prompts at fast-9b and coder-30b at the same time"
NO_CACHE = {"no-cache": True, "no-store": True}  # every prompt must reach the backend
DEFAULT_OLLAMA = "http://127.0.0.1:11434"
OUT = ROOT / "bench" / "results" / "stress.json"
MB = 1024**2


@dataclass(frozen=True)
class Pace:
    """How the fake answers one tier: prompt evaluation before the first token, then seconds per token."""

    prompt_s: float
    token_s: float


# Assumed, not measured: roughly an M-series Mac with these quants (9B ~22 tok/s; the 30B MoE has 3.3B active
# parameters but barely fits, ~25 tok/s). They only make requests overlap as they would; no figure is derived.
PACING = {
    "fast-9b": Pace(0.20, 0.045),
    "fast-3b": Pace(0.10, 0.020),
    "fast-1b": Pace(0.05, 0.010),
    "coder-30b": Pace(0.35, 0.040),
}


class RunFailed(RuntimeError):
    """The run itself could not be done; the message is one line saying what to do."""


# -- what the OS says --


def rss_bytes(pid: int) -> int | None:
    """Resident memory of one process: /proc on Linux, `ps` elsewhere (macOS); None once it is gone."""
    if Path("/proc/self/status").exists():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        return None
    try:
        out = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True, timeout=2)
        return int(out.stdout.strip()) * 1024 if out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def ollama_pids() -> list[int]:
    """Every process named like ollama: the server and its runners (`ollama runner`, `ollama_llama_server`)."""
    try:
        out = subprocess.run(["ps", "-axo", "pid=,comm="], capture_output=True, text=True, timeout=2).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    pids = []
    for line in out.splitlines():
        pid, _, comm = line.strip().partition(" ")
        if "ollama" in Path(comm.strip()).name.lower() and pid.isdigit():
            pids.append(int(pid))
    return pids


@dataclass
class Pageouts:
    """The OS's count of pages written out to swap: its signal of thrashing."""

    source: str
    page_bytes: int
    swap_note: str

    def read(self) -> int | None:
        if self.source.startswith("/proc/vmstat"):
            for line in Path("/proc/vmstat").read_text().splitlines():
                if line.startswith("pswpout "):
                    return int(line.split()[1])
            return None
        try:
            out = subprocess.run(["vm_stat"], capture_output=True, text=True, timeout=2).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        m = re.search(r"^Pageouts:\s+(\d+)", out, re.MULTILINE)
        return int(m.group(1)) if m else None


def pageouts_source() -> Pageouts | None:
    """macOS `vm_stat` "Pageouts", Linux /proc/vmstat pswpout; None where neither exists."""
    if Path("/proc/vmstat").exists():
        swap_kb = 0
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("SwapTotal:"):
                    swap_kb = int(line.split()[1])
        note = f"{swap_kb * 1024 / GIB:.1f} GB swap" if swap_kb else "no swap on this machine: pages cannot go out"
        return Pageouts("/proc/vmstat pswpout", os.sysconf("SC_PAGE_SIZE"), note)
    if sys.platform == "darwin":
        try:
            head = subprocess.run(["vm_stat"], capture_output=True, text=True, timeout=2).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        m = re.search(r"page size of (\d+) bytes", head)
        return Pageouts("vm_stat Pageouts", int(m.group(1)) if m else 16384, "macOS swaps on demand")
    return None


# -- the parts --


@dataclass
class Backend:
    """Where the proxy's Ollama tiers go, and which processes hold its memory."""

    url: str
    real: bool
    version: str
    fake: FakeOllamaProcess | None = None

    def pids(self) -> list[int]:
        if self.fake and self.fake.proc:
            return [self.fake.proc.pid]
        return ollama_pids()

    @property
    def rss_what(self) -> str:
        if self.real:
            return "every `ollama` process (server and runners)"
        return "the fake Ollama's Python process: a real process, not the models' memory"

    def control(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The fake's own API (`/_fake/*`): faults in, records out."""
        if body is None:
            resp = httpx.get(f"{self.url}{path}", timeout=30, trust_env=False)
        else:
            resp = httpx.post(f"{self.url}{path}", json=body, timeout=5, trust_env=False)
        resp.raise_for_status()
        return resp.json()

    def set_fault(self, tag: str, fault: str | None, **params: Any) -> None:
        self.control("/_fake/fault", {"model": tag, "fault": fault, **params})

    def pace(self, tag: str, pace: Pace, extra_s: float = 0.0, times: int | None = None) -> None:
        params: dict[str, Any] = {"delay_s": pace.prompt_s + extra_s, "token_delay_s": pace.token_s}
        if times is not None:
            params["times"] = times
        self.set_fault(tag, "slow", **params)


def ollama_version(url: str) -> str | None:
    """Ollama's `/api/version`, or None when nothing (or something else) answers there."""
    try:
        resp = httpx.get(f"{url}/api/version", timeout=1.5, trust_env=False)
        return str(resp.json()["version"]) if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


@dataclass
class Embedded:
    """The real embedded llama.cpp model (`python -m ask_cli.embedded`), the `tiny` tier, in its own process."""

    log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def launch(self) -> None:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ask_cli.embedded", "--port", str(self.port)],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait(self) -> None:
        if not wait_ready(self.url, 60):
            tail = self.log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise RunFailed(
                f"the embedded model did not start ({tail[0]}): run `python -m ask_cli.embedded` to see why"
            )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


# -- sampling memory --


@dataclass
class MemorySample:
    t: float  # seconds since the load started
    ps: list[tuple[str, int]] | None  # (model, size bytes) as /api/ps listed them; None if it did not answer
    backend_rss: int | None
    embedded_rss: int | None
    pageouts: int | None

    @property
    def ps_bytes(self) -> int:
        return sum(size for _, size in self.ps or [])


class Sampler(threading.Thread):
    """Every `interval` s: /api/ps, the backend's and the embedded model's RSS, the pageout counter."""

    def __init__(self, backend: Backend, embedded: Embedded, pageouts: Pageouts | None, interval: float) -> None:
        super().__init__(name="sampler", daemon=True)
        self.backend, self.embedded, self.pageouts, self.interval = backend, embedded, pageouts, interval
        self.samples: list[MemorySample] = []
        self.t0 = time.monotonic()
        self.done = threading.Event()
        self.client = httpx.Client(base_url=backend.url, timeout=2, trust_env=False)
        self.baseline = self.sample(keep=False)  # before the load: where the pageout count starts

    def begin(self) -> None:
        self.t0 = time.monotonic()
        self.start()

    def sample(self, keep: bool = True) -> MemorySample:
        ps: list[tuple[str, int]] | None = None
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
            models = self.client.get("/api/ps").json()["models"]
            ps = [(str(m["name"]), int(m.get("size") or 0)) for m in models]
        rss = [r for r in (rss_bytes(p) for p in self.backend.pids()) if r is not None]
        emb = rss_bytes(self.embedded.proc.pid) if self.embedded.proc else None
        out = self.pageouts.read() if self.pageouts else None
        s = MemorySample(round(time.monotonic() - self.t0, 3), ps, sum(rss) if rss else None, emb, out)
        if keep:
            self.samples.append(s)
        return s

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=5)
        self.sample()
        self.client.close()


# -- the load --


@dataclass
class Result:
    tier: str
    ok: bool
    latency_s: float
    ttft_s: float | None
    served_by: str | None
    demoted_from: str | None
    call_id: str | None
    error: str | None = None


def one_request(client: httpx.Client, tier: str, prompt: str, stream: bool) -> Result:
    """One chat completion through the proxy: wall time to the end, time to the first content chunk."""
    body = {"model": tier, "messages": [{"role": "user", "content": prompt}], "stream": stream, "cache": NO_CACHE}
    start = time.perf_counter()
    first: float | None = None
    headers: httpx.Headers | None = None

    def result(ok: bool, error: str | None = None) -> Result:
        h = headers or httpx.Headers()
        return Result(
            tier,
            ok,
            time.perf_counter() - start,
            None if first is None else first - start,
            h.get("x-served-by"),
            h.get("x-demoted-from"),
            h.get("x-litellm-call-id"),
            error,
        )

    try:
        with client.stream("POST", "/v1/chat/completions", json=body) as resp:
            headers = resp.headers
            if resp.status_code != 200:
                return result(False, f"HTTP {resp.status_code}: {_error_text(resp.read())}")
            if not stream:
                resp.read()
                choices = resp.json().get("choices") or [{}]
                content = (choices[0].get("message") or {}).get("content")
                return result(True) if content else result(False, "answer without content")
            for line in resp.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return result(True) if first is not None else result(False, "stream without content")
                event = json.loads(data)
                if "error" in event:
                    return result(False, f"stream error: {_error_text(json.dumps(event['error']).encode())}")
                if first is None and any((c.get("delta") or {}).get("content") for c in event.get("choices") or []):
                    first = time.perf_counter()
            return result(False, "stream ended without [DONE]")
    except (httpx.HTTPError, ValueError) as exc:
        return result(False, f"{type(exc).__name__}: {exc}")


def _error_text(raw: bytes, limit: int = 160) -> str:
    """The error's message, in a few words: the same failure must read the same across requests."""
    text = raw.decode(errors="replace")
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        data = json.loads(text)
        err = data.get("error", data)
        text = str(err.get("message", err) if isinstance(err, dict) else err)
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "<id>", text)  # call ids make every message unique
    return " ".join(text.split())[:limit]


def run_clients(proxy: Proxy, clients: int, duration: float, stream: bool) -> list[Result]:
    """`clients` threads per tier, released at once, each sending requests back to back for `duration` s."""
    results: list[Result] = []
    lock = threading.Lock()
    go, halt = threading.Event(), threading.Event()
    deadline = 0.0
    n_threads = clients * len(TIERS)
    limits = httpx.Limits(max_connections=n_threads + 4, max_keepalive_connections=n_threads)
    client = httpx.Client(
        base_url=proxy.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=240, trust_env=False, limits=limits
    )

    def worker(tier: str, n: int) -> None:
        go.wait()
        i = 0
        while not halt.is_set() and time.monotonic() < deadline:
            prompt = f"stress {tier} client {n} request {i} {uuid.uuid4().hex[:8]}: say hello"
            try:
                r = one_request(client, tier, prompt, stream)
            except RuntimeError:  # the client was closed under us: the run was interrupted
                return
            with lock:
                results.append(r)
            i += 1

    threads = [
        threading.Thread(target=worker, args=(tier, n), daemon=True, name=f"{tier}-{n}")
        for tier in TIERS
        for n in range(clients)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + duration
    go.set()
    try:
        for t in threads:
            t.join()
    finally:
        halt.set()
        client.close()
    return results


# -- the fake's scenario --


def scenario(
    backend: Backend,
    tiers: dict[str, Tier],
    clients: int,
    load_s: float,
    kill_9b: bool,
    started: threading.Event,
    stop: threading.Event,
) -> dict[str, Any]:
    """Pace every tag the two chains reach; the 30B's first `clients` requests wait out its cold load.

    With `kill_9b`, the 9B's requests fail with Ollama's "runner killed" error until the load is over, then
    it answers again. Returns what was set, for the JSON; a thread undoes the load faults once the clients go.
    """
    reach = {name for t in TIERS for name in (t, *tiers[t].fallbacks)}
    paced = {name: PACING[name] for name in sorted(reach) if name in PACING and tiers[name].is_ollama}
    coder, nine = tiers["coder-30b"].model, tiers["fast-9b"].model
    for name, pace in paced.items():
        if name not in ("coder-30b", "fast-9b") or (name == "fast-9b" and not kill_9b):
            backend.pace(tiers[name].model, pace)
    if kill_9b:
        backend.set_fault(nine, "http_500", message=RUNNER_KILLED)
    backend.pace(coder, paced["coder-30b"], extra_s=load_s, times=clients)
    setup = {
        "paced": {n: asdict(p) for n, p in paced.items()},
        "load_s": load_s,
        "load_requests": clients,
        "kill_9b_during_load": kill_9b,
    }

    def restore() -> None:
        started.wait()
        t0 = time.monotonic()
        coder_loaded = nine_back = False
        while not stop.is_set() and not (coder_loaded and (nine_back or not kill_9b)):
            if not coder_loaded and coder not in backend.control("/_fake/faults")["faults"]:
                backend.pace(coder, paced["coder-30b"])  # loaded: every later request is warm
                coder_loaded = True
            if kill_9b and not nine_back and time.monotonic() - t0 >= load_s:
                backend.pace(nine, paced["fast-9b"])  # the load is over: the 9B's runner is back
                nine_back = True
            stop.wait(0.05)

    threading.Thread(target=restore, daemon=True, name="scenario").start()
    return setup


# -- the figures --


def tier_stats(results: list[Result], tier: str, duration: float) -> dict[str, Any]:
    mine = [r for r in results if r.tier == tier]
    ok = [r for r in mine if r.ok]
    lat = sorted(r.latency_s for r in ok)
    ttft = sorted(r.ttft_s for r in ok if r.ttft_s is not None)

    def pcts(values: list[float]) -> dict[str, float | None]:
        if not values:
            return {"p50": None, "p95": None, "max": None}
        return {
            "p50": round(statistics.median(values), 4),
            "p95": round(percentile(values, 0.95), 4),
            "max": round(values[-1], 4),  # a cold load hits a few requests: below p95, not below max
        }

    return {
        "requests": len(mine),
        "errors": len(mine) - len(ok),
        "demoted": sum(1 for r in ok if r.demoted_from),
        "served_by": dict(Counter(r.served_by or "?" for r in ok).most_common()),
        "latency_s": pcts(lat),
        "ttft_s": pcts(ttft),
        "requests_per_s": round(len(mine) / duration, 2) if duration else None,
        "errors_by_kind": dict(Counter(r.error for r in mine if not r.ok).most_common(5)),
    }


def demotion_log(proxy: Proxy, results: list[Result], timeout: float = 5.0) -> dict[str, Any]:
    """The log's records for this run's calls, once every demoted response's record has been written."""
    ours = {r.call_id for r in results if r.call_id}
    wanted = {r.call_id for r in results if r.ok and r.demoted_from}
    deadline = time.monotonic() + timeout
    while True:
        records = [x for x in read_jsonl(Path(proxy.env["DEMOTION_LOG"])) if x.get("call_id") in ours]
        if wanted <= {x["call_id"] for x in records} or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    routes = Counter(f"{x['requested']} → {x['served'] or 'failed'}" for x in records)
    reasons = Counter(str(h) for x in records for h in x.get("failed") or [])  # "tier: reason"
    logged = {x["call_id"] for x in records if x.get("served")}
    return {
        "records": len(records),
        "routes": dict(routes.most_common()),
        "failed_hops": dict(reasons.most_common(5)),
        "demoted_by_header": len(wanted),
        "headers_match_log": logged == wanted,
    }


def fake_record(backend: Backend, since: int) -> dict[str, Any]:
    """What the fake itself answered during the run: chats per tag, and how many it failed on purpose."""
    chats = [r for r in backend.control("/_fake/requests")["requests"][since:] if r["path"] == "/api/chat"]
    per: dict[str, dict[str, int]] = {}
    for r in chats:
        entry = per.setdefault(str(r["model"]), {"chats": 0, "http_500": 0})
        entry["chats"] += 1
        entry["http_500"] += r.get("status") == 500
    return per


def memory_report(sampler: Sampler, budget: dict[str, Any], tiers: dict[str, Tier]) -> dict[str, Any]:
    """Peaks over the samples; co-residency only from one /api/ps answer, never from two instants added up."""
    samples, backend, pageouts = sampler.samples, sampler.backend, sampler.pageouts
    listed = [s for s in samples if s.ps is not None]
    peak = max(listed, key=lambda s: s.ps_bytes + (s.embedded_rss or 0), default=None)
    tags = {tiers[t].model for t in TIERS}
    both = sum(
        b.t - a.t for a, b in itertools.pairwise(samples) if a.ps is not None and tags <= {name for name, _ in a.ps}
    )
    out: dict[str, Any] = {
        "samples": len(samples),
        "sample_interval_s": sampler.interval,
        "ps_sizes_are": "a real Ollama's report"
        if backend.real
        else "the fake's declared sizes for these models (what a real Ollama reports for them), not memory used here",
        "budget": budget,
        "ps_unanswered_samples": len(samples) - len(listed),
        "both_tiers_resident_s": round(both, 1),
        "run_sampled_s": round(samples[-1].t - samples[0].t, 1) if samples else 0.0,
    }
    if peak is not None:
        total = peak.ps_bytes + (peak.embedded_rss or 0)
        out["peak"] = {
            "t_s": peak.t,
            "ps_gb": round(peak.ps_bytes / GIB, 2),
            "models": [{"name": n, "gb": round(b / GIB, 2)} for n, b in peak.ps or []],
            "embedded_rss_gb": round((peak.embedded_rss or 0) / GIB, 2),
            "total_gb": round(total / GIB, 2),
        }
        out["exceeded"] = total / GIB > budget["available_gb"]
        out["peak_ps_gb"] = round(max(s.ps_bytes for s in listed) / GIB, 2)
    rss = [s.backend_rss for s in samples if s.backend_rss is not None]
    emb = [s.embedded_rss for s in samples if s.embedded_rss is not None]
    out["backend_rss_peak_mb"] = round(max(rss) / MB, 1) if rss else None
    out["backend_rss_is"] = backend.rss_what
    out["embedded_rss_peak_mb"] = round(max(emb) / MB, 1) if emb else None
    counts = [(s.t, s.pageouts) for s in (sampler.baseline, *samples) if s.pageouts is not None]
    if pageouts and counts:
        delta = counts[-1][1] - counts[0][1]
        rates = [(b[1] - a[1]) / max(1e-3, b[0] - a[0]) for a, b in itertools.pairwise(counts)]
        out["pageouts"] = {
            "source": pageouts.source,
            "delta_pages": delta,
            "delta_mb": round(delta * pageouts.page_bytes / MB, 1),
            "peak_pages_per_s": round(max(rates, default=0.0), 1),
            "note": pageouts.swap_note,
        }
    else:
        out["pageouts"] = None
    return out


def budget_for(ram_gb: float | None) -> dict[str, Any]:
    """`ask doctor`'s budget: this machine's RAM (or --ram-gb) minus what the OS and open apps hold."""
    ram = ram_gb * GIB if ram_gb is not None else ram_bytes()
    if ram is None:
        raise RunFailed("cannot read this machine's RAM: pass --ram-gb")
    total = ram / GIB
    return {
        "ram_gb": round(total, 1),
        "os_allowance_gb": OS_ALLOWANCE_GB,
        "available_gb": round(max(0.0, total - OS_ALLOWANCE_GB), 1),
        "ram_from": "--ram-gb" if ram_gb is not None else "this machine",
    }


# -- output --


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _trio(p: dict[str, float | None]) -> str:
    return " / ".join(_s(p.get(k)) for k in ("p50", "p95", "max"))


def _served(stats: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in stats["served_by"].items()) or "-"


def text_report(res: dict[str, Any]) -> str:
    lines = [
        f"\n{'tier':<10} {'requests':>8} {'errors':>6} {'demoted':>7}  {'latency p50/p95/max s':>21}  "
        f"{'TTFT p50/p95/max s':>18}  {'req/s':>5}  served by"
    ]
    for tier, st in res["tiers"].items():
        lat, ttft = st["latency_s"], st["ttft_s"]
        lines.append(
            f"{tier:<10} {st['requests']:>8} {st['errors']:>6} {st['demoted']:>7}  "
            f"{_trio(lat):>21}  {_trio(ttft):>18}  "
            f"{st['requests_per_s']:>5}  {_served(st)}"
        )
        for kind, n in st["errors_by_kind"].items():
            lines.append(f"{'':<10} error x{n}: {kind}")
    log = res["demotion_log"]
    routes = ", ".join(f"{k} x{v}" for k, v in log["routes"].items()) or "none"
    lines.append(
        f"demotion log: {log['records']} records ({routes}); "
        f"{'matches' if log['headers_match_log'] else 'DOES NOT match'} the X-Demoted-From headers"
    )
    for hop, n in log["failed_hops"].items():
        lines.append(f"  failed hop x{n}: {hop}")
    if res.get("fake_backend"):
        lines.append(
            "fake Ollama answered: "
            + "; ".join(
                f"{k} {v['chats']} chats" + (f" ({v['http_500']} HTTP 500 injected)" if v["http_500"] else "")
                for k, v in res["fake_backend"].items()
            )
        )
    lines += ["", *memory_lines(res)]
    return "\n".join(lines)


def memory_lines(res: dict[str, Any]) -> list[str]:
    m, b = res["memory"], res["memory"]["budget"]
    lines = [f"memory ({m['samples']} samples, every {m['sample_interval_s']:g} s)"]
    peak = m.get("peak")
    if peak:
        models = " + ".join(f"{x['name']} {x['gb']:.1f}" for x in peak["models"]) or "none"
        lines.append(
            f"  peak co-resident models (/api/ps, one instant): {peak['ps_gb']:.1f} GB at "
            f"t={peak['t_s']:.1f} s: {models}"
        )
        lines.append(f"    sizes are {m['ps_sizes_are']}")
        lines.append(f"  + embedded model's real RSS {peak['embedded_rss_gb']:.2f} GB = {peak['total_gb']:.1f} GB")
        verdict = (
            f"EXCEEDED by {peak['total_gb'] - b['available_gb']:.1f} GB"
            if m["exceeded"]
            else f"within it ({b['available_gb'] - peak['total_gb']:.1f} GB to spare)"
        )
        lines.append(
            f"  budget ({b['ram_from']}): {b['ram_gb']:.1f} GB RAM - {b['os_allowance_gb']:g} GB for the OS "
            f"and open apps = {b['available_gb']:.1f} GB for models: {verdict}"
        )
        lines.append(
            f"  {' and '.join(res['settings']['tier_tags'])} both in /api/ps for "
            f"{m['both_tiers_resident_s']:.0f} of {m['run_sampled_s']:.0f} s sampled"
        )
    else:
        lines.append("  /api/ps never answered: no co-resident figure")
    lines.append(
        f"  backend RSS peak: {_mb(m['backend_rss_peak_mb'])} ({m['backend_rss_is']})"
        if m["backend_rss_peak_mb"] is not None
        else "  backend RSS: no process named ollama found here (in a container, or on another host?)"
    )
    lines.append(f"  embedded RSS peak: {_mb(m['embedded_rss_peak_mb'])} (SmolLM2-135M in llama.cpp, its own process)")
    p = m["pageouts"]
    lines.append(
        "  pageouts: not available on this OS"
        if not p
        else f"  pageouts: +{p['delta_pages']} pages ({p['delta_mb']:.1f} MB), peak {p['peak_pages_per_s']:g}/s "
        f"({p['source']}; {p['note']})"
    )
    return lines


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} MB"


def markdown_report(res: dict[str, Any]) -> str:
    """The block between the stress markers in bench/README.md."""
    env, s, m = res["environment"], res["settings"], res["memory"]
    backend = (
        f"a real Ollama {res['backend']['version']}"
        if res["backend"]["real"]
        else "the emulated Ollama (`tests/fake_ollama.py`, own process, paced as `PACING` says; "
        f"the 30B's cold load {s['scenario']['load_s']:g} s)"
    )
    fault = "the 9B's runner killed (HTTP 500) while the 30B loads" if s["kill_9b_during_load"] else "none"
    out = [
        f"Run {res['date']} with `{res['command']}`, litellm {env['litellm_version']}, {env['cpu_count']} CPUs, "
        f"load average {env['loadavg_start'][0]:.2f} → {env['loadavg_end'][0]:.2f}. Backend: {backend}, plus the "
        f"real embedded SmolLM2-135M (`tiny`). {s['clients_per_tier']} "
        f"{'streaming' if s['stream'] else 'non-streaming'} clients per tier for "
        f"{s['duration_s']:g} s, at the same time. Injected fault: {fault}.",
        "",
        "| tier | requests | errors | demoted | served by | latency p50 / p95 / max s | TTFT p50 / p95 / max s |",
        "|---|---|---|---|---|---|---|",
    ]
    for tier, st in res["tiers"].items():
        out.append(
            f"| {tier} | {st['requests']} | {st['errors']} | {st['demoted']} | {_served(st)} | "
            f"{_trio(st['latency_s'])} | {_trio(st['ttft_s'])} |"
        )
    log = res["demotion_log"]
    out += [
        "",
        f"Demotion log: {log['records']} records"
        + (" (" + ", ".join(f"{k} ×{v}" for k, v in log["routes"].items()) + ")" if log["routes"] else "")
        + f", {'matching' if log['headers_match_log'] else '**not** matching'} the `X-Demoted-From` headers.",
        "",
    ]
    out += ["| memory | measured |", "|---|---|"]
    peak, b = m.get("peak"), m["budget"]
    if peak:
        models = " + ".join(f"{x['name']} {x['gb']:.1f}" for x in peak["models"]) or "none"
        label = "" if res["backend"]["real"] else "; the fake's declared sizes"
        out.append(f"| peak co-resident models (`/api/ps`, one instant{label}) | {peak['ps_gb']:.1f} GB: {models} |")
        out.append(
            f"| + the embedded model's real RSS | {peak['embedded_rss_gb']:.2f} GB → {peak['total_gb']:.1f} GB |"
        )
        verdict = "**exceeded**" if m["exceeded"] else "within"
        out.append(
            f"| budget: {b['ram_gb']:.1f} GB RAM ({b['ram_from']}) − {b['os_allowance_gb']:g} GB OS and apps "
            f"(`ask doctor`'s) | {b['available_gb']:.1f} GB: {verdict} |"
        )
        out.append(
            f"| both tiers' models in `/api/ps` | {m['both_tiers_resident_s']:.0f} of {m['run_sampled_s']:.0f}"
            " s sampled |"
        )
    out.append(f"| backend RSS peak | {_mb(m['backend_rss_peak_mb'])} ({m['backend_rss_is']}) |")
    out.append(f"| embedded RSS peak | {_mb(m['embedded_rss_peak_mb'])} |")
    p = m["pageouts"]
    out.append(
        "| pageouts | not available |"
        if not p
        else f"| pageouts ({p['source']}) | +{p['delta_pages']} pages, peak {p['peak_pages_per_s']:g}/s ({p['note']}) |"
    )
    if not res["backend"]["real"]:
        out += [
            "",
            "With the fake, `/api/ps` sizes are the emulated models' declared sizes (what a real Ollama "
            "reports for them), not memory used on this machine, and the fake never evicts a model to make "
            "room: the co-resident figure is what the keep_alive policy asks Ollama to hold.",
        ]
    return "\n".join(out)


# -- main --


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=float, default=None, help="seconds of load (default 60, quick 15)")
    p.add_argument("--clients", type=int, default=None, help="concurrent clients per tier (default 4, quick 2)")
    p.add_argument("--quick", action="store_true", help="a short run: 2 clients per tier for 15 s")
    p.add_argument("--no-stream", action="store_true", help="non-streaming requests (no TTFT)")
    p.add_argument(
        "--kill-9b-during-load",
        action="store_true",
        help="fake only: the 9B answers HTTP 500 'runner killed' until the 30B has loaded",
    )
    p.add_argument("--load-s", type=float, default=None, help="fake only: the 30B's cold load (default 6, quick 3)")
    p.add_argument("--fake", action="store_true", help="use the emulated Ollama even when a real one answers")
    p.add_argument("--ram-gb", type=float, default=None, help="RAM to budget (default: this machine's, as ask doctor)")
    p.add_argument("--sample-s", type=float, default=0.25, help="memory sampling interval")
    p.add_argument("--out", type=Path, default=OUT, help="JSON results file")
    p.add_argument("--write-readme", action="store_true", help="rewrite the stress block in bench/README.md")
    args = p.parse_args(argv)
    args.duration = args.duration if args.duration is not None else 15.0 if args.quick else 60.0
    args.clients = args.clients if args.clients is not None else 2 if args.quick else 4
    args.load_s = args.load_s if args.load_s is not None else 3.0 if args.quick else 6.0
    if args.duration <= 0 or args.clients < 1 or args.load_s < 0 or args.sample_s <= 0:
        p.error("--duration, --clients and --sample-s must be positive, --load-s not negative")
    return args


@contextlib.contextmanager
def stack(args: argparse.Namespace, tmp: Path) -> Iterator[tuple[Backend, Embedded, Proxy]]:
    """The backend (a real Ollama, or the fake started here), the embedded model and the proxy; all ours stopped."""
    with contextlib.ExitStack() as stop:
        url = (os.environ.get("OLLAMA_API_BASE") or DEFAULT_OLLAMA).rstrip("/")
        found = None if args.fake else ollama_version(url)
        if found and args.kill_9b_during_load:
            raise RunFailed(
                f"--kill-9b-during-load needs the emulated Ollama, and a real one answers at {url}: add --fake"
            )
        if found:
            backend = Backend(url, True, found)
        else:
            fake = FakeOllamaProcess(log=tmp / "fake-ollama.log")
            stop.callback(fake.stop)
            try:
                fake.start()
            except RuntimeError as exc:
                raise RunFailed(f"the emulated Ollama did not start: {str(exc).splitlines()[0]}") from exc
            backend = Backend(fake.url, False, ollama_version(fake.url) or "?", fake)
        embedded = Embedded(tmp / "embedded.log")
        stop.callback(embedded.stop)
        embedded.launch()  # loads while the proxy starts
        # What tests.stack.running_proxy does, but with the stop registered before the start: a Ctrl-C while
        # the proxy boots must not leave it running (it has its own session, so the terminal's signal misses it).
        env = stack_env(
            tmp,
            OLLAMA_API_BASE=backend.url,
            TINY_API_BASE=embedded.url,
            LLAMA_SWAP_API_BASE=closed_port_url("/v1"),
            LITELLM_LOG="ERROR",
        )
        proxy = Proxy(env=env, port=free_port(), log_path=tmp / "proxy.log")
        stop.callback(proxy.stop)
        try:
            proxy.start()
        except RuntimeError as exc:
            raise RunFailed(
                f"the proxy did not start (see {tmp / 'proxy.log'}): run `litellm --config "
                f"litellm-config.yaml` to see why ({str(exc).splitlines()[0]})"
            ) from exc
        embedded.wait()
        yield backend, embedded, proxy


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    tiers = {t.name: t for t in tiers_from_config(yaml.safe_load(CONFIG.read_text()))}
    budget = budget_for(args.ram_gb)
    pageouts = pageouts_source()
    res: dict[str, Any] = {
        "command": shlex.join(["bench/stress.py", *argv]),
        "date": datetime.now(UTC).astimezone().isoformat(timespec="seconds"),
        "environment": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "loadavg_start": list(os.getloadavg()),
            "litellm_version": version("litellm"),
        },
        "settings": {
            "tiers": list(TIERS),
            "tier_tags": [tiers[t].model for t in TIERS],
            "clients_per_tier": args.clients,
            "duration_s": args.duration,
            "stream": not args.no_stream,
            "kill_9b_during_load": args.kill_9b_during_load,
            "sample_s": args.sample_s,
        },
    }
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="bench-stress-") as tmpdir,
        stack(args, Path(tmpdir)) as (backend, embedded, proxy),
    ):
        res["backend"] = {
            "real": backend.real,
            "url": backend.url,
            "version": backend.version,
            "kind": "ollama" if backend.real else "fake (tests/fake_ollama.py, own process)",
        }
        print(
            f"stack up in {time.monotonic() - started:.1f} s: proxy {proxy.url}, "
            f"{'real Ollama ' + backend.version if backend.real else 'fake Ollama'} at {backend.url} "
            f"(pids {backend.pids()}), embedded {embedded.url} (pid {embedded.proc.pid if embedded.proc else '?'})",
            flush=True,
        )
        with httpx.Client(
            base_url=proxy.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120, trust_env=False
        ) as client:
            warm = one_request(client, "fast-9b", f"stress warm-up {uuid.uuid4().hex[:8]}", False)
        if not warm.ok:  # the 9B is the warm tier (keep_alive 15m); the 30B stays cold, as the seed has it
            print(f"warm-up of fast-9b failed: {warm.error}", flush=True)
        since = 0 if backend.real else len(backend.control("/_fake/requests")["requests"])
        sampler = Sampler(backend, embedded, pageouts, args.sample_s)
        res["settings"]["resident_at_start"] = [n for n, _ in sampler.baseline.ps or []]
        started_evt, stop_evt = threading.Event(), threading.Event()
        if not backend.real:
            res["settings"]["scenario"] = scenario(
                backend, tiers, args.clients, args.load_s, args.kill_9b_during_load, started_evt, stop_evt
            )
        sampler.begin()
        started_evt.set()
        try:
            print(
                f"load: {args.clients} clients per tier on {' and '.join(TIERS)} for {args.duration:g} s ...",
                flush=True,
            )
            t0 = time.monotonic()
            results = run_clients(proxy, args.clients, args.duration, not args.no_stream)
            wall = time.monotonic() - t0
        finally:
            stop_evt.set()
            sampler.stop()
        res["settings"]["load_wall_s"] = round(wall, 1)
        res["tiers"] = {t: tier_stats(results, t, wall) for t in TIERS}
        res["demotion_log"] = demotion_log(proxy, results)
        if not backend.real:
            res["fake_backend"] = fake_record(backend, since)
        res["memory"] = memory_report(sampler, budget, tiers)
        res["samples"] = [asdict(s) for s in sampler.samples]
    res["environment"]["loadavg_end"] = list(os.getloadavg())
    res["wall_seconds"] = round(time.monotonic() - started, 1)
    return res


def to_json(res: dict[str, Any]) -> str:
    """Indented JSON, but one line per memory sample: a minute of samples stays a readable file."""
    rows = ",\n    ".join(json.dumps(row, ensure_ascii=False) for row in res["samples"])
    text = json.dumps({**res, "samples": "@samples@"}, indent=2, ensure_ascii=False)
    return text.replace('"@samples@"', f"[\n    {rows}\n  ]" if rows else "[]") + "\n"


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # the stack's exit stops every process this script started


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a shell's background job starts ignoring it
        signal.signal(sig, _interrupt)
    try:
        res = run(args, argv)
    except RunFailed as exc:
        print(f"stress: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stress: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    print(text_report(res))
    print(
        f"\nload average {res['environment']['loadavg_start'][0]:.2f} -> {res['environment']['loadavg_end'][0]:.2f}; "
        f"{res['wall_seconds']:.0f} s in all"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(to_json(res))
    print(f"wrote {args.out}")
    if args.write_readme:
        write_block("stress", markdown_report(res))
        print("updated bench/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
