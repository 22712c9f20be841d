"""What the machine and the OS say during a run: the record every benchmark result starts with, memory signals.

Figures on a shared 2-core machine only mean something next to the load average and versions they came from.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import platform
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import httpx

from harness.processes import Server, rss_bytes

GIB = 1024**3
MB = 1024**2


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def now() -> str:
    """The date of a run, to the second, with the local offset."""
    return datetime.now(UTC).astimezone().isoformat(timespec="seconds")


def run_record(script: str, argv: list[str]) -> dict[str, Any]:
    """The command line as typed and the date."""
    return {"command": shlex.join([script, *argv]), "date": now()}


@contextlib.contextmanager
def recorded(script: str, argv: list[str], **first: Any) -> Iterator[dict[str, Any]]:
    """A result being filled in: `first`, the run record and the environment; if the run ends well, the load
    average at its end and its wall time."""
    started = time.monotonic()
    res: dict[str, Any] = {**first, **run_record(script, argv), "environment": environment()}
    yield res
    res["environment"]["loadavg_end"] = list(os.getloadavg())
    res["wall_seconds"] = round(time.monotonic() - started, 1)


def environment() -> dict[str, Any]:
    """Platform, CPUs, load average at start and the pinned LiteLLM; add `loadavg_end` when done."""
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "loadavg_start": list(os.getloadavg()),
        "litellm_version": package_version("litellm"),
    }


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def ollama_version(url: str) -> str | None:
    """Ollama's `/api/version`, or None when nothing (or something else) answers there."""
    try:
        resp = httpx.get(f"{url}/api/version", timeout=1.5, trust_env=False)
        return str(resp.json()["version"]) if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
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
        m = re.search(r"^Pageouts:\s+(\d+)", _vm_stat(), re.MULTILINE)
        return int(m.group(1)) if m else None


def _vm_stat() -> str:
    try:
        return subprocess.run(["vm_stat"], capture_output=True, text=True, timeout=2).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


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
        m = re.search(r"page size of (\d+) bytes", _vm_stat())
        return Pageouts("vm_stat Pageouts", int(m.group(1)) if m else 16384, "macOS swaps on demand")
    return None


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
    """Every `interval` s: Ollama's /api/ps, the backend's and the embedded model's RSS, the pageout counter.

    The models co-resident at one instant come from one /api/ps answer, never from two instants added up.
    """

    def __init__(
        self,
        ollama_url: str,
        backend_pids: Callable[[], list[int]],
        embedded: Server,
        pageouts: Pageouts | None,
        interval: float,
    ) -> None:
        super().__init__(name="sampler", daemon=True)
        self.backend_pids, self.embedded, self.pageouts, self.interval = backend_pids, embedded, pageouts, interval
        self.samples: list[MemorySample] = []
        self.t0 = time.monotonic()
        self.done = threading.Event()
        self.client = httpx.Client(base_url=ollama_url, timeout=2, trust_env=False)
        self.baseline = self.sample(keep=False)  # before the load: where the pageout count starts

    def sample(self, keep: bool = True) -> MemorySample:
        ps: list[tuple[str, int]] | None = None
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
            ps = [(str(m["name"]), int(m.get("size") or 0)) for m in self.client.get("/api/ps").json()["models"]]
        rss = [r for r in (rss_bytes(p) for p in self.backend_pids()) if r is not None]
        emb = rss_bytes(self.embedded.proc.pid) if self.embedded.proc else None
        out = self.pageouts.read() if self.pageouts else None
        s = MemorySample(round(time.monotonic() - self.t0, 3), ps, sum(rss) if rss else None, emb, out)
        if keep:
            self.samples.append(s)
        return s

    def begin(self) -> None:
        self.t0 = time.monotonic()
        self.start()

    def figures(self, tags: set[str]) -> dict[str, Any]:
        """Peaks over the samples, and how long every one of `tags` was listed in /api/ps at once."""
        samples, pageouts = self.samples, self.pageouts
        listed = [s for s in samples if s.ps is not None]
        peak = max(listed, key=lambda s: s.ps_bytes + (s.embedded_rss or 0), default=None)
        pairs = itertools.pairwise(samples)
        both = sum(b.t - a.t for a, b in pairs if a.ps is not None and tags <= {n for n, _ in a.ps})
        out: dict[str, Any] = {
            "ps_unanswered_samples": len(samples) - len(listed),
            "both_tiers_resident_s": round(both, 1),
            "run_sampled_s": round(samples[-1].t - samples[0].t, 1) if samples else 0.0,
        }
        if peak is not None:
            out["peak"] = {
                "t_s": peak.t,
                "ps_gb": round(peak.ps_bytes / GIB, 2),
                "models": [{"name": n, "gb": round(b / GIB, 2)} for n, b in peak.ps or []],
                "embedded_rss_gb": round((peak.embedded_rss or 0) / GIB, 2),
                "total_gb": round((peak.ps_bytes + (peak.embedded_rss or 0)) / GIB, 2),
            }
            out["peak_ps_gb"] = round(max(s.ps_bytes for s in listed) / GIB, 2)
        rss = [s.backend_rss for s in samples if s.backend_rss is not None]
        emb = [s.embedded_rss for s in samples if s.embedded_rss is not None]
        out["backend_rss_peak_mb"] = round(max(rss) / MB, 1) if rss else None
        out["embedded_rss_peak_mb"] = round(max(emb) / MB, 1) if emb else None
        counts = [(s.t, s.pageouts) for s in (self.baseline, *samples) if s.pageouts is not None]
        out["pageouts"] = None
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
        return out

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=5)
        self.sample()
        self.client.close()
