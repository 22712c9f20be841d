"""Does concurrent load on fast-9b and coder-30b thrash the machine, with the RAM budget and without? The seed's test.

Two arms on the same work, one after the other, each with its own fresh backend and proxy (litellm-config.yaml
as is, the real embedded SmolLM2-135M as `tiny`):
- `with_budget`: plugins/ram_budget.py on, RAM_BUDGET_GB = the emulated machine's RAM minus what the OS and
  apps hold;
- `ollama_only`: RAM_BUDGET=off, Ollama's own scheduler alone.
In each, the 9B is warmed by one request, then `--clients` streaming clients per tier, released together, each
send `--requests` unique uncached prompts, one at a time, pausing a think time between an answer and the next
prompt; the arm ends when every client has had all its answers (or errors), while a sampler reads /api/ps (the
models resident at one instant), the backend's and the embedded model's RSS and the OS's pageouts.

Why this workload: the seed's use is cron jobs and a person at a prompt, each asking, reading the answer, asking
again, on the 9B and the coder at once. A fixed number of requests per client makes both arms do the same work,
so p50/p95 are over the same requests (a fixed duration let the faster arm send more of them, and a client stuck
behind the other tier sent few); the think times (uniform in `--think-s`, 0.5–3 s: a script's next step, a person
glancing at a short answer) come from one seeded RNG per client, the same in both arms, and give the 9B the idle
moments in which Ollama switches models. Every `--system-gb` given is one machine profile, run in turn: 12.5 GB
held (a 24 GB Mac with apps open: 11.5 GB budget, the coder would not fit even alone) and 4 GB (a quiet Mac:
20 GB, the coder fits alone but not beside the 9B, so the budget unloads an idle 9B, waits for a busy one and
demotes with `busy` after switch_wait_s).

The backend is the emulated Ollama (harness/fake_ollama.py, own process) scheduling as Ollama does: a
`--total-gb` Mac with `--system-gb` held by macOS and apps, loads at `--load-gb-per-s` (an assumed disk speed),
one request at a time per model, each paced as PACING says (an assumption). Its sizes are its declared
resident sizes, not memory used here. When a real Ollama answers at OLLAMA_API_BASE (and no --fake), both arms
run once against it as it is, the budget left to the plugin to derive from this machine (no RAM_BUDGET_GB):
that path is untested here. Goals per profile (with the budget: every sample within it, no failed request,
fewer loads and a lower p95 than Ollama alone): the exit status is 1 when one is missed. Reading the figures:
bench/README.md.

    .venv/bin/python bench/stress.py [--quick] [--clients 4] [--requests 12] [--think-s 0.5 3] [--seed 1]
        [--system-gb 12.5 4] [--load-gb-per-s 3] [--write-readme]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/stress.py`
    sys.path.insert(0, str(ROOT))

from bench.common import Options, embedded_stack, goals_table, num, project_tiers, report, scratch, serve, table  # noqa: E402
from contract import tiers as tier_model  # noqa: E402
from harness.fake_ollama import FakeOllamaControl, spec_for  # noqa: E402
from harness.machine import MemorySample, Sampler, ollama_pids, ollama_version, pageouts_source, recorded  # noqa: E402
from harness.processes import Server  # noqa: E402
from harness.stack import KEY, Proxy, fake_ollama_server, read_jsonl  # noqa: E402
from harness.timing import NO_CACHE, Timed, call, client, spread, stream  # noqa: E402

TIERS = ("fast-9b", "coder-30b")  # the seed: "fire concurrent prompts at fast-9b and coder-30b at the same time"
ARMS = ("with_budget", "ollama_only")
DEFAULT_OLLAMA = "http://127.0.0.1:11434"
GB = 1e9  # as Ollama's /api/ps sizes, the fake and the plugin count


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


@dataclass
class Backend:
    """Where the proxy's Ollama tiers go, and which processes hold its memory."""

    url: str
    real: bool
    version: str
    fake: Server | None = None

    def pids(self) -> list[int]:
        return [self.fake.proc.pid] if self.fake and self.fake.proc else ollama_pids()

    @property
    def control(self) -> FakeOllamaControl:
        return FakeOllamaControl(self.url)


def one_request(http: httpx.Client, tier: str, prompt: str, streaming: bool) -> Timed:
    """One chat completion through the proxy, labelled with its tier: wall time, time to the first content."""
    body = {"model": tier, "messages": [{"role": "user", "content": prompt}], "cache": NO_CACHE}
    t = (stream if streaming else call)(http, body)
    t.label = tier
    return t


def think_times(seed: int, tier: str, n: int, requests: int, think_s: tuple[float, float]) -> list[float]:
    """Client `n` of `tier`'s pauses after each answer but the last: its own seeded RNG, so both arms (and any
    thread order) get the same ones."""
    rng = random.Random(f"{seed}:{tier}:{n}")
    return [round(rng.uniform(*think_s), 3) for _ in range(requests - 1)]


def run_clients(proxy: Proxy, args: argparse.Namespace, streaming: bool) -> list[Timed]:
    """`args.clients` threads per tier, released at once, each sending `args.requests` requests one at a time
    with its think times between them; returns when every client has had every answer (or error)."""
    results: list[Timed] = []
    lock, go = threading.Lock(), threading.Event()
    http = client(proxy.url, KEY, timeout=240, connections=args.clients * len(TIERS) + 4)

    def worker(tier: str, n: int) -> None:
        pauses = think_times(args.seed, tier, n, args.requests, tuple(args.think_s))
        go.wait()
        for i in range(args.requests):
            prompt = f"stress {tier} client {n} request {i} {uuid.uuid4().hex[:8]}: say hello"
            try:
                r = one_request(http, tier, prompt, streaming)
            except RuntimeError:  # the client was closed under us: the run was interrupted
                return
            with lock:
                results.append(r)
            if i < len(pauses):
                time.sleep(pauses[i])

    threads = [threading.Thread(target=worker, args=(t, n), daemon=True) for t in TIERS for n in range(args.clients)]
    for t in threads:
        t.start()
    go.set()
    try:
        for t in threads:
            t.join()
    finally:
        http.close()
    return results


def pace_backend(backend: Backend, tiers: tier_model.Tiers) -> dict[str, Any]:
    """Every Ollama tag the two chains reach answers at its PACING (the fake's `slow` fault, struck once the
    model is loaded and holds a slot, so loads and queueing come on top)."""
    tier = {t.name: t for t in tiers}
    reach = {name for t in TIERS for name in (t, *tier[t].fallbacks)}
    paced = {name: PACING[name] for name in sorted(reach) if name in PACING and tier[name].is_ollama}
    for name, pace in paced.items():
        backend.control.set_fault(tier[name].primary.model, "slow", delay_s=pace.prompt_s, token_delay_s=pace.token_s)
    return {n: asdict(p) for n, p in paced.items()}


def pcts(values: list[float]) -> dict[str, float | None]:
    """Median, p95 and max of some seconds."""
    got = spread(values)
    return {k: round(got[f], 4) if got else None for k, f in (("p50", "median"), ("p95", "p95"), ("max", "max"))}


def tier_stats(results: list[Timed], tier: str, duration: float) -> dict[str, Any]:
    mine = [r for r in results if r.label == tier]
    ok = [r for r in mine if r.ok]
    return {
        "requests": len(mine),
        "failed": len(mine) - len(ok),
        "demoted": sum(1 for r in ok if r.headers.get("x-demoted-from")),
        "served_by": dict(Counter(r.headers.get("x-served-by") or "?" for r in ok).most_common()),
        "latency_s": pcts([(r.e2e_ms or 0.0) / 1000 for r in ok]),
        "ttft_s": pcts([r.ttft_ms / 1000 for r in ok if r.ttft_ms is not None]),
        "requests_per_s": round(len(mine) / duration, 2) if duration else None,
        "errors_by_kind": dict(Counter(r.error for r in mine if not r.ok).most_common(5)),
    }


def demotion_log(proxy: Proxy, results: list[Timed], timeout: float = 5.0) -> dict[str, Any]:
    """The log's records for this run's calls, once every demoted response's record has been written; each
    failed hop is recorded as "tier: reason"."""
    ours = {r.headers["x-litellm-call-id"] for r in results if "x-litellm-call-id" in r.headers}
    wanted = {r.headers.get("x-litellm-call-id") for r in results if r.ok and r.headers.get("x-demoted-from")}
    deadline = time.monotonic() + timeout
    while True:
        records = [x for x in read_jsonl(Path(proxy.env["DEMOTION_LOG"])) if x.get("call_id") in ours]
        if wanted <= {x["call_id"] for x in records} or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    routes = Counter(f"{x['requested']} → {x['served'] or 'failed'}" for x in records)
    reasons = Counter(str(h) for x in records for h in x.get("failed") or [])
    return {
        "records": len(records),
        "routes": dict(routes.most_common()),
        "failed_hops": dict(reasons.most_common(10)),
        "demoted_by_header": len(wanted),
        "headers_match_log": {x["call_id"] for x in records if x.get("served")} == wanted,
    }


def budget_log(proxy: Proxy) -> dict[str, int]:
    """The proxy log's `ram budget:` lines, timestamps dropped, counted."""
    lines: Counter[str] = Counter()
    with contextlib.suppress(OSError):
        for line in proxy.log_text().splitlines():
            if "ram budget:" in line:
                lines[line.split("ram budget:", 1)[1].strip()] += 1
    return dict(lines.most_common(10))


def scheduler_record(backend: Backend, before: dict[str, Any], since: float) -> dict[str, Any]:
    """What the fake's scheduler did during the load: loads (finished, and aborted with their seconds),
    evictions, its exact peaks (since it started: the warm-up loaded only the 9B)."""
    after = backend.control.memory()
    events = [e for e in backend.control.events() if e["ts"] >= since]
    kinds = Counter(e["event"] for e in events)
    load_s = sum(e.get("load_s", 0.0) for e in events if e["event"] == "loaded")
    load_s += sum(e.get("after_s", 0.0) for e in events if e["event"] == "load_aborted")
    return {
        "peak_resident_gb": after["peak_resident_gb"],
        "peak_swapped_gb": after["peak_swapped_gb"],
        "loads": after["loads"] - before["loads"],
        "loads_aborted": kinds["load_aborted"],
        "load_seconds": round(load_s, 2),
        "evictions": after["evictions"] - before["evictions"],
        "loaded_per_model": dict(Counter(e["model"] for e in events if e["event"] == "loaded")),
        "events": dict(kinds),
        "memory_after": after,
    }


def sampled_memory(sampler: Sampler, tags: set[str], budget_gb: float | None) -> dict[str, Any]:
    """The /api/ps peaks in GB (1e9 bytes, as the budget), samples over the budget, loads seen by sampling
    (a model listed that the sample before did not list), and the sampler's RSS and pageout figures."""
    listed = [s for s in sampler.samples if s.ps is not None]
    peak: MemorySample | None = max(listed, key=lambda s: s.ps_bytes, default=None)
    seen, appeared = set(n for n, _ in sampler.baseline.ps or []), 0
    for s in listed:
        now = {n for n, _ in s.ps or []}
        appeared += len(now - seen)
        seen = now
    fig = sampler.figures(tags)
    out: dict[str, Any] = {"samples": len(sampler.samples), "sample_interval_s": sampler.interval}
    out["peak_resident_gb"] = round(peak.ps_bytes / GB, 2) if peak else None
    if peak:
        out["peak_at_s"], out["peak_models"] = peak.t, {n: round(b / GB, 2) for n, b in peak.ps or []}
        out["peak_with_embedded_rss_gb"] = round((peak.ps_bytes + (peak.embedded_rss or 0)) / GB, 2)
    if budget_gb is not None:
        out["samples_over_budget"] = sum(1 for s in listed if s.ps_bytes / GB > budget_gb)
    out["loads_seen"] = appeared
    keep = ("ps_unanswered_samples", "both_tiers_resident_s", "run_sampled_s", "backend_rss_peak_mb")
    out |= {k: fig[k] for k in (*keep, "embedded_rss_peak_mb", "pageouts")}
    return out


@contextlib.contextmanager
def arm_stack(
    args: argparse.Namespace, system_gb: float, tmp: Path, env: dict[str, str]
) -> Iterator[tuple[Backend, Server, Proxy]]:
    """A fresh fake Ollama (or the real one), the embedded model and the proxy with `env`; all ours stopped."""
    with contextlib.ExitStack() as stop:
        if args.real:
            backend = Backend(args.real, True, ollama_version(args.real) or "?")
        else:
            flags = ["--total-gb", f"{args.total_gb:g}", "--system-gb", f"{system_gb:g}"]
            flags += ["--load-gb-per-s", f"{args.load_gb_per_s:g}"]
            fake = serve(stop, fake_ollama_server(tmp / "fake-ollama.log", *flags)).wait(30)
            backend = Backend(fake.url, False, ollama_version(fake.url) or "?", fake)
        yield backend, *stop.enter_context(embedded_stack(tmp, OLLAMA_API_BASE=backend.url, **env))


def run_arm(
    name: str, args: argparse.Namespace, system_gb: float, tmp: Path, budget_gb: float | None
) -> dict[str, Any]:
    """One arm: start its stack, warm the 9B, let every client do its requests while sampling, return its figures."""
    tiers = project_tiers()
    tags = {tiers.get(t).primary.model for t in TIERS}  # type: ignore[union-attr]
    env = {"RAM_BUDGET": "off"} if name == "ollama_only" else {}
    if name == "with_budget":  # the real Ollama's budget: the plugin's own, from this machine
        env["RAM_BUDGET_GB"] = f"{budget_gb:g}" if budget_gb is not None else ""
    (tmp := tmp / name).mkdir()
    started = time.monotonic()
    out: dict[str, Any] = {"proxy_env": env or {"RAM_BUDGET_GB": "(unset: derived from this machine)"}}
    with arm_stack(args, system_gb, tmp, env) as (backend, embedded, proxy):
        print(f"{name}: stack up in {time.monotonic() - started:.1f} s, {env}", flush=True)
        if not backend.real:
            out["paced"] = pace_backend(backend, tiers)
        with client(proxy.url, KEY, timeout=120) as http:
            warm = one_request(http, "fast-9b", f"stress warm-up {uuid.uuid4().hex[:8]}", False)
        out["warm_up"] = {"ok": warm.ok, "s": round((warm.e2e_ms or 0) / 1000, 2), "error": warm.error}
        before = {} if backend.real else backend.control.memory()
        sampler = Sampler(backend.url, backend.pids, embedded, pageouts_source(), args.sample_s)
        out["resident_at_start"] = [n for n, _ in sampler.baseline.ps or []]
        since = time.time()
        sampler.begin()
        try:
            each = f"{args.requests} requests each, think {args.think_s[0]:g}–{args.think_s[1]:g} s"
            print(f"{name}: {args.clients} clients per tier on {' and '.join(TIERS)}, {each}", flush=True)
            t0 = time.monotonic()
            results = run_clients(proxy, args, not args.no_stream)
            wall = time.monotonic() - t0
        finally:
            sampler.stop()
        out["load_wall_s"] = round(wall, 1)
        print(f"{name}: done in {wall:.1f} s", flush=True)
        if backend.real and budget_gb is None and name == "with_budget":
            with contextlib.suppress(OSError, ValueError):
                budget_gb = json.loads(Path(proxy.env["RAM_BUDGET_STATE"]).read_text()).get("budget_gb")
        out["budget_gb"] = budget_gb
        out["tiers"] = {t: tier_stats(results, t, wall) for t in TIERS}
        ok = [r for r in results if r.ok]
        out["requests"], out["failed"] = len(results), len(results) - len(ok)
        out["latency_s"] = pcts([(r.e2e_ms or 0.0) / 1000 for r in ok])
        out["p95_s"] = out["latency_s"]["p95"]
        out["demotion_log"] = log = demotion_log(proxy, results)
        out["demoted"] = log["demoted_by_header"]
        out["demoted_by_reason"] = log["failed_hops"]
        out["ram_budget_log"] = budget_log(proxy)
        out["memory"] = sampled_memory(sampler, tags, budget_gb)
        if backend.real:
            out["scheduler"] = None
            out["peak_resident_gb"], out["loads"] = out["memory"]["peak_resident_gb"], out["memory"]["loads_seen"]
        else:
            out["scheduler"] = sched = scheduler_record(backend, before, since)
            out["peak_resident_gb"], out["loads"] = sched["peak_resident_gb"], sched["loads"]
        out["backend"] = {"real": backend.real, "version": backend.version}
        out["samples"] = [asdict(s) for s in sampler.samples]
    return out


def evaluate(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The goals: with the budget, nothing over it (every sample, and the fake's exact peak), no failed
    request, fewer loads and a lower p95 than Ollama alone."""
    b, o, budget = res["with_budget"], res["ollama_only"], res["budget_gb"]
    over = b["memory"].get("samples_over_budget")
    within = budget is not None and over == 0 and (b["peak_resident_gb"] or 0) <= budget
    return [
        {
            "goal": f"with the budget, resident ≤ {num(budget, '.1f', unit=' GB')} in every sample (and the "
            "fake's exact peak)",
            "value": f"{num(b['memory']['peak_resident_gb'], '.2f')} GB sampled, {over} samples over; exact "
            f"{num(b['peak_resident_gb'], '.2f')} GB",
            "met": within,
        },
        {"goal": "with the budget, 0 failed requests", "value": str(b["failed"]), "met": b["failed"] == 0},
        {
            "goal": "with the budget, fewer model loads than Ollama alone",
            "value": f"{b['loads']} vs {o['loads']}",
            "met": b["loads"] < o["loads"],
        },
        {
            "goal": "with the budget, a lower p95 latency (the same requests in both arms) than Ollama alone",
            "value": f"{num(b['p95_s'])} s vs {num(o['p95_s'])} s ("
            + ", ".join(f"{t} {tier_p95(b, t)} vs {tier_p95(o, t)}" for t in TIERS)
            + ")",
            "met": b["p95_s"] is not None and (o["p95_s"] is None or b["p95_s"] < o["p95_s"]),
        },
    ]


def tier_p95(arm: dict[str, Any], tier: str) -> str:
    return num(arm["tiers"][tier]["latency_s"]["p95"])


def side_by_side(res: dict[str, Any]) -> list[str]:
    """The arms' figures, one column each."""
    arms = [res[a] for a in ARMS]

    def row(label: str, cell: Any) -> list[str]:
        return [label, *(str(cell(a)) for a in arms)]

    def trio(a: dict[str, Any], tier: str, field: str) -> str:
        st = a["tiers"][tier][field]
        return " / ".join(num(st[k]) for k in ("p50", "p95", "max"))

    def served(a: dict[str, Any], tier: str) -> str:
        return ", ".join(f"{k} {v}" for k, v in a["tiers"][tier]["served_by"].items()) or "-"

    rows = [
        row("proxy env", lambda a: ", ".join(f"`{k}={v}`" for k, v in a["proxy_env"].items())),
        row("requests (fast-9b + coder-30b)", lambda a: " + ".join(str(a["tiers"][t]["requests"]) for t in TIERS)),
        row("failed", lambda a: a["failed"]),
        row("demoted (`X-Demoted-From`)", lambda a: a["demoted"]),
        *(row(f"{t} served by", lambda a, t=t: served(a, t)) for t in TIERS),
        *(row(f"{t} latency p50 / p95 / max s", lambda a, t=t: trio(a, t, "latency_s")) for t in TIERS),
        *(row(f"{t} TTFT p50 / p95 / max s", lambda a, t=t: trio(a, t, "ttft_s")) for t in TIERS),
        row("p95 latency, all requests", lambda a: num(a["p95_s"], unit=" s")),
        row("peak co-resident, sampled `/api/ps`", lambda a: peak_cell(a["memory"])),
    ]
    if not res["real"]:
        s = "scheduler"
        rows += [
            row("peak resident, the fake's exact", lambda a: num(a[s]["peak_resident_gb"], unit=" GB")),
            row("peak swapped (beyond RAM)", lambda a: num(a[s]["peak_swapped_gb"], unit=" GB")),
            row("model loads (aborted)", lambda a: f"{a[s]['loads']} ({a[s]['loads_aborted']}): {loaded(a[s])}"),
            row("seconds spent loading", lambda a: num(a[s]["load_seconds"], ".1f", unit=" s")),
            row("evictions", lambda a: a[s]["evictions"]),
        ]
    else:
        rows.append(row("loads seen by sampling", lambda a: a["memory"]["loads_seen"]))
    rows += [
        row("both tiers' models listed together", lambda a: f"{a['memory']['both_tiers_resident_s']:.0f} s"),
        row("headers match the demotion log", lambda a: "yes" if a["demotion_log"]["headers_match_log"] else "**no**"),
        row("arm wall time (every client done)", lambda a: f"{a['load_wall_s']:g} s"),
    ]
    return table(["", *ARMS], rows)


def peak_cell(m: dict[str, Any]) -> str:
    models = " + ".join(f"{n} {gb:.1f}" for n, gb in (m.get("peak_models") or {}).items()) or "none"
    return f"{num(m['peak_resident_gb'], unit=' GB')} ({models})"


def loaded(sched: dict[str, Any]) -> str:
    return ", ".join(f"{n} ×{c}" for n, c in sched["loaded_per_model"].items()) or "none"


def profiles(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's machine profiles: the first at the top level of the result, the others under `more_profiles`."""
    return [res, *res.get("more_profiles", [])]


def markdown_report(res: dict[str, Any]) -> str:
    """The block between the stress markers in bench/README.md (also what a run prints)."""
    env, s = res["environment"], res["settings"]
    think = "–".join(f"{x:g}" for x in s["think_s"])
    out = [
        f"Run {res['date']} with `{res['command']}`, litellm {env['litellm_version']}, {env['cpu_count']} CPUs, "
        f"load average {env['loadavg_start'][0]:.2f} → {env['loadavg_end'][0]:.2f}. Each arm: its own fresh "
        "backend and proxy plus the real embedded SmolLM2-135M (`tiny`), the 9B warmed by one request, then "
        f"{s['clients_per_tier']} {'streaming' if s['stream'] else 'non-streaming'} clients per tier released "
        f"together, each sending {s['requests_per_client']} requests one at a time with a think time of "
        f"{think} s (uniform, seed {s['seed']}, the same in both arms) between an answer and its next prompt: "
        f"{s['clients_per_tier'] * s['requests_per_client']} requests per tier in each arm.",
    ]
    if not res["real"]:
        listed = ", ".join(f"{n} {gb:.1f} GB" for n, gb in s["declared_gb"].items())
        out[0] += (
            " Backend: the emulated Ollama (`harness/fake_ollama.py`, own process, scheduling as Ollama does), "
            f"loading at an assumed {s['load_gb_per_s']:g} GB/s, each model paced as `PACING` says. Sizes are "
            f"the emulator's declared resident sizes at num_ctx 8192 ({listed}), not this machine's memory."
        )
    for prof in profiles(res):
        if res["real"]:
            head = (
                f"**A real Ollama {prof['with_budget']['backend']['version']} at {s['ollama_url']}**: the budget "
                f"is the plugin's, derived from this machine ({num(prof['budget_gb'], '.1f', unit=' GB')})."
            )
        else:
            head = (
                f"**A {s['total_gb']:g} GB Mac with {prof['system_gb']:g} GB held by macOS and open apps**: "
                f"{prof['budget_gb']:g} GB for models (the `with_budget` arm's `RAM_BUDGET_GB`)."
            )
        out += ["", head, "", *side_by_side(prof), ""]
        for arm in ARMS:
            a = prof[arm]
            hops = "; ".join(f"`{k}` ×{v}" for k, v in list(a["demoted_by_reason"].items())[:4]) or "none"
            lines = "; ".join(f"`{k}` ×{v}" for k, v in list(a["ram_budget_log"].items())[:4]) or "none"
            out.append(f"- `{arm}`: failed hops in the demotion log: {hops}. Proxy log `ram budget:` lines: {lines}.")
        out += ["", *goals_table(prof["goals"])]
    return "\n".join(out)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = Options(__doc__, "stress", quick="a short run: 2 clients per tier, 4 requests each, one profile")
    p.count("--requests", 12, 4, "requests per client", int)
    p.count("--clients", 4, 2, "concurrent clients per tier")
    p.add_argument(
        "--think-s",
        type=float,
        nargs=2,
        default=[0.5, 3.0],
        metavar=("MIN", "MAX"),
        help="think time between an answer and the next prompt, uniform (default 0.5 3)",
    )
    p.add_argument("--seed", type=int, default=1, help="the think times' RNG seed (default 1)")
    p.add_argument("--no-stream", action="store_true", help="non-streaming requests (no TTFT)")
    p.add_argument("--fake", action="store_true", help="use the emulated Ollama even when a real one answers")
    p.add_argument("--total-gb", type=float, default=24.0, help="fake: the emulated Mac's RAM (default 24)")
    p.add_argument(
        "--system-gb",
        type=float,
        nargs="+",
        default=None,
        help="fake: held by macOS and open apps, one machine profile each (default 12.5 4; quick 12.5)",
    )
    p.add_argument("--load-gb-per-s", type=float, default=3.0, help="fake: assumed disk speed for loads (default 3)")
    p.add_argument("--sample-s", type=float, default=0.25, help="memory sampling interval")
    args = p.parse(argv)
    if args.system_gb is None:
        args.system_gb = [12.5] if args.quick else [12.5, 4.0]
    if args.requests < 1 or args.clients < 1 or args.sample_s <= 0 or args.load_gb_per_s <= 0:
        p.error("--requests, --clients, --sample-s and --load-gb-per-s must be positive")
    if not 0 <= args.think_s[0] <= args.think_s[1]:
        p.error("--think-s wants 0 ≤ MIN ≤ MAX")
    if not all(0 <= g < args.total_gb for g in args.system_gb):
        p.error("--system-gb must be below --total-gb")
    return args


def run_profile(args: argparse.Namespace, system_gb: float, tmp: Path) -> dict[str, Any]:
    """Both arms on one machine profile, one after the other, then its goals."""
    budget = None if args.real else round(args.total_gb - system_gb, 3)
    prof: dict[str, Any] = {"system_gb": None if args.real else system_gb, "budget_gb": budget, "real": bool(args.real)}
    (tmp := tmp / f"system-{system_gb:g}").mkdir()
    for arm in ARMS:
        print(f"profile {system_gb:g} GB held, budget {num(budget, 'g')} GB: {arm}", flush=True)
        prof[arm] = run_arm(arm, args, system_gb, tmp, budget)
    if prof["budget_gb"] is None:
        prof["budget_gb"] = prof["with_budget"]["budget_gb"]
    prof["goals"] = evaluate(prof)
    return prof


def run(args: argparse.Namespace, res: dict[str, Any], tmp: Path) -> None:
    """Every profile into `res`: the first at its top level, the others under `more_profiles`."""
    url = (os.environ.get("OLLAMA_API_BASE") or DEFAULT_OLLAMA).rstrip("/")
    args.real = None if args.fake else (url if ollama_version(url) else None)
    systems = args.system_gb[:1] if args.real else args.system_gb  # a real Ollama is one machine as it is
    res["real"] = bool(args.real)
    res["settings"] = {"tiers": list(TIERS), "clients_per_tier": args.clients, "requests_per_client": args.requests}
    res["settings"] |= {"think_s": list(args.think_s), "seed": args.seed}
    primaries = [project_tiers().get(t).primary for t in TIERS]  # type: ignore[union-attr]
    res["settings"]["declared_gb"] = {
        d.model: round(spec_for(d.model).resident(d.num_ctx or 4096) / GB, 2) for d in primaries
    }
    res["settings"] |= {"stream": not args.no_stream, "sample_s": args.sample_s, "ollama_url": args.real}
    if not args.real:
        res["settings"] |= {"total_gb": args.total_gb, "system_gb": list(systems)}
        res["settings"] |= {"load_gb_per_s": args.load_gb_per_s, "budget_is": "total_gb − system_gb"}
    res["p95_s_is"] = "over every successful request of the arm, both tiers (the same requests in both arms)"
    first, *more = [run_profile(args, g, tmp) for g in systems]
    res |= first
    if more:
        res["more_profiles"] = more


def to_json(res: dict[str, Any]) -> str:
    """Indented JSON, but one line per memory sample: a minute of samples stays a readable file."""
    blocks: dict[str, str] = {}

    def strip(prof: dict[str, Any], key: str) -> dict[str, Any]:
        prof = dict(prof)
        for arm in ARMS:
            mark = f"@samples {key} {arm}@"
            rows = ",\n        ".join(json.dumps(row, ensure_ascii=False) for row in prof[arm]["samples"])
            blocks[mark] = f"[\n        {rows}\n      ]" if rows else "[]"
            prof[arm] = {**prof[arm], "samples": mark}
        return prof

    out = strip(res, "0")
    if "more_profiles" in res:
        out["more_profiles"] = [strip(p, str(i + 1)) for i, p in enumerate(res["more_profiles"])]
    text = json.dumps(out, indent=2, ensure_ascii=False)
    for mark, rows in blocks.items():
        text = text.replace(json.dumps(mark), rows)
    return text + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    with scratch("stress") as tmp, recorded("bench/stress.py", argv) as res:
        run(args, res, tmp)
    for prof in profiles(res):
        for arm in ARMS:
            for tier, st in prof[arm]["tiers"].items():
                for kind, n in st["errors_by_kind"].items():
                    print(f"{prof['system_gb']} GB held, {arm} {tier} error x{n}: {kind}")
    block = markdown_report(res)
    report("stress", args, res, block, to_json(res))
    missed = [f"{p['system_gb']} GB held: {g['goal']}" for p in profiles(res) for g in p["goals"] if not g["met"]]
    for goal in missed:
        print(f"goal missed: {goal}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
