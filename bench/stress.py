"""Does concurrent load on fast-9b and coder-30b thrash the machine? The seed's stress test.

The real proxy (litellm-config.yaml as is) serves both tiers at once, streaming clients released together,
while a sampler reads /api/ps (models resident at one instant), the backend's and the embedded model's RSS
and the OS's pageouts. The backend is the user's Ollama when one answers at OLLAMA_API_BASE, else the
emulated one in its own process, paced like the real models (PACING, an assumption) with the 30B cold.
What each figure means and how to read the fake's sizes: bench/README.md.

    .venv/bin/python bench/stress.py [--quick] [--kill-9b-during-load] [--write-readme]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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

from ask_cli.doctor import GIB, OS_ALLOWANCE_GB, ram_bytes  # noqa: E402
from bench.common import CannotRun, Options, embedded_stack, num, project_tiers, report, scratch, serve, table  # noqa: E402
from contract import tiers as tier_model  # noqa: E402
from harness.fake_ollama import RUNNER_KILLED, FakeOllamaControl  # noqa: E402
from harness.machine import Sampler, ollama_pids, ollama_version, pageouts_source, recorded  # noqa: E402
from harness.processes import Server  # noqa: E402
from harness.stack import KEY, Proxy, fake_ollama_server, read_jsonl  # noqa: E402
from harness.timing import NO_CACHE, Timed, call, client, spread, stream  # noqa: E402

TIERS = ("fast-9b", "coder-30b")  # the seed: "fire concurrent prompts at fast-9b and coder-30b at the same time"
DEFAULT_OLLAMA = "http://127.0.0.1:11434"
FAKE_SIZES = "the fake's declared sizes for these models (what a real Ollama reports for them), not memory used here"


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
    def rss_what(self) -> str:
        if self.real:
            return "every `ollama` process (server and runners)"
        return "the fake Ollama's Python process: a real process, not the models' memory"

    @property
    def control(self) -> FakeOllamaControl:
        return FakeOllamaControl(self.url)

    def pace(self, tag: str, pace: Pace, extra_s: float = 0.0, times: int | None = None) -> None:
        params: dict[str, Any] = {"delay_s": pace.prompt_s + extra_s, "token_delay_s": pace.token_s}
        self.control.set_fault(tag, "slow", **params, **({"times": times} if times is not None else {}))


def one_request(http: httpx.Client, tier: str, prompt: str, streaming: bool) -> Timed:
    """One chat completion through the proxy, labelled with its tier: wall time, time to the first content."""
    body = {"model": tier, "messages": [{"role": "user", "content": prompt}], "cache": NO_CACHE}
    t = (stream if streaming else call)(http, body)
    t.label = tier
    return t


def run_clients(proxy: Proxy, clients: int, duration: float, streaming: bool) -> list[Timed]:
    """`clients` threads per tier, released at once, each sending requests back to back for `duration` s."""
    results: list[Timed] = []
    lock, go, halt = threading.Lock(), threading.Event(), threading.Event()
    deadline = 0.0
    http = client(proxy.url, KEY, timeout=240, connections=clients * len(TIERS) + 4)

    def worker(tier: str, n: int) -> None:
        go.wait()
        i = 0
        while not halt.is_set() and time.monotonic() < deadline:
            prompt = f"stress {tier} client {n} request {i} {uuid.uuid4().hex[:8]}: say hello"
            try:
                r = one_request(http, tier, prompt, streaming)
            except RuntimeError:  # the client was closed under us: the run was interrupted
                return
            with lock:
                results.append(r)
            i += 1

    threads = [threading.Thread(target=worker, args=(t, n), daemon=True) for t in TIERS for n in range(clients)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + duration
    go.set()
    try:
        for t in threads:
            t.join()
    finally:
        halt.set()
        http.close()
    return results


def scenario(
    backend: Backend, tiers: tier_model.Tiers, args: argparse.Namespace, started: threading.Event, stop: threading.Event
) -> dict[str, Any]:
    """Pace every tag the two chains reach; the 30B's first `clients` requests wait out its cold load.

    With --kill-9b-during-load, the 9B's requests fail with Ollama's "runner killed" error until the load is
    over, then it answers again. Returns what was set, for the JSON; a thread undoes the load faults later.
    """
    tier = {t.name: t for t in tiers}
    reach = {name for t in TIERS for name in (t, *tier[t].fallbacks)}
    paced = {name: PACING[name] for name in sorted(reach) if name in PACING and tier[name].is_ollama}
    coder, nine, kill_9b = tier["coder-30b"].primary.model, tier["fast-9b"].primary.model, args.kill_9b_during_load
    for name, pace in paced.items():
        if name not in ("coder-30b", "fast-9b") or (name == "fast-9b" and not kill_9b):
            backend.pace(tier[name].primary.model, pace)
    if kill_9b:
        backend.control.set_fault(nine, "http_500", message=RUNNER_KILLED)
    backend.pace(coder, paced["coder-30b"], extra_s=args.load_s, times=args.clients)

    def restore() -> None:
        started.wait()
        t0 = time.monotonic()
        coder_loaded = nine_back = False
        while not stop.is_set() and not (coder_loaded and (nine_back or not kill_9b)):
            if not coder_loaded and coder not in backend.control.faults():
                backend.pace(coder, paced["coder-30b"])  # loaded: every later request is warm
                coder_loaded = True
            if kill_9b and not nine_back and time.monotonic() - t0 >= args.load_s:
                backend.pace(nine, paced["fast-9b"])  # the load is over: the 9B's runner is back
                nine_back = True
            stop.wait(0.05)

    threading.Thread(target=restore, daemon=True, name="scenario").start()
    paced_json = {n: asdict(p) for n, p in paced.items()}
    return {"paced": paced_json, "load_s": args.load_s, "load_requests": args.clients, "kill_9b_during_load": kill_9b}


def tier_stats(results: list[Timed], tier: str, duration: float) -> dict[str, Any]:
    mine = [r for r in results if r.label == tier]
    ok = [r for r in mine if r.ok]

    def pcts(values: list[float]) -> dict[str, float | None]:
        """Median, p95 and max: a cold load hits a few requests, below p95, not below max."""
        got = spread(values)
        return {k: round(got[f], 4) if got else None for k, f in (("p50", "median"), ("p95", "p95"), ("max", "max"))}

    return {
        "requests": len(mine),
        "errors": len(mine) - len(ok),
        "demoted": sum(1 for r in ok if r.headers.get("x-demoted-from")),
        "served_by": dict(Counter(r.headers.get("x-served-by") or "?" for r in ok).most_common()),
        "latency_s": pcts([(r.e2e_ms or 0.0) / 1000 for r in ok]),
        "ttft_s": pcts([r.ttft_ms / 1000 for r in ok if r.ttft_ms is not None]),
        "requests_per_s": round(len(mine) / duration, 2) if duration else None,
        "errors_by_kind": dict(Counter(r.error for r in mine if not r.ok).most_common(5)),
    }


def demotion_log(proxy: Proxy, results: list[Timed], timeout: float = 5.0) -> dict[str, Any]:
    """The log's records for this run's calls, once every demoted response's record has been written."""
    ours = {r.headers["x-litellm-call-id"] for r in results if "x-litellm-call-id" in r.headers}
    wanted = {r.headers.get("x-litellm-call-id") for r in results if r.ok and r.headers.get("x-demoted-from")}
    deadline = time.monotonic() + timeout
    while True:
        records = [x for x in read_jsonl(Path(proxy.env["DEMOTION_LOG"])) if x.get("call_id") in ours]
        if wanted <= {x["call_id"] for x in records} or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    routes = Counter(f"{x['requested']} → {x['served'] or 'failed'}" for x in records)
    reasons = Counter(str(h) for x in records for h in x.get("failed") or [])  # "tier: reason"
    return {
        "records": len(records),
        "routes": dict(routes.most_common()),
        "failed_hops": dict(reasons.most_common(5)),
        "demoted_by_header": len(wanted),
        "headers_match_log": {x["call_id"] for x in records if x.get("served")} == wanted,
    }


def fake_record(backend: Backend, since: int) -> dict[str, Any]:
    """What the fake itself answered during the run: chats per tag, and how many it failed on purpose."""
    per: dict[str, dict[str, int]] = {}
    for r in [r for r in backend.control.requests()[since:] if r["path"] == "/api/chat"]:
        entry = per.setdefault(str(r["model"]), {"chats": 0, "http_500": 0})
        entry["chats"] += 1
        entry["http_500"] += r.get("status") == 500
    return per


def memory_report(sampler: Sampler, backend: Backend, budget: dict[str, Any], tags: set[str]) -> dict[str, Any]:
    """The sampler's peaks, held against `ask doctor`'s budget."""
    sizes = "a real Ollama's report" if backend.real else FAKE_SIZES
    out = {"samples": len(sampler.samples), "sample_interval_s": sampler.interval, "ps_sizes_are": sizes}
    out |= {"budget": budget, **sampler.figures(tags), "backend_rss_is": backend.rss_what}
    if "peak" in out:
        out["exceeded"] = out["peak"]["total_gb"] > budget["available_gb"]
    return out


def budget_for(ram_gb: float | None) -> dict[str, Any]:
    """`ask doctor`'s budget: this machine's RAM (or --ram-gb) minus what the OS and open apps hold."""
    ram = ram_gb * GIB if ram_gb is not None else ram_bytes()
    if ram is None:
        raise CannotRun("cannot read this machine's RAM: pass --ram-gb")
    total = ram / GIB
    return {
        "ram_gb": round(total, 1),
        "os_allowance_gb": OS_ALLOWANCE_GB,
        "available_gb": round(max(0.0, total - OS_ALLOWANCE_GB), 1),
        "ram_from": "--ram-gb" if ram_gb is not None else "this machine",
    }


def tier_cells(st: dict[str, Any]) -> list[Any]:
    """A tier's row: counts, who served it, latency and TTFT as p50 / p95 / max."""
    served = ", ".join(f"{k} {v}" for k, v in st["served_by"].items()) or "-"
    trios = [" / ".join(num(st[f].get(k)) for k in ("p50", "p95", "max")) for f in ("latency_s", "ttft_s")]
    return [st["requests"], st["errors"], st["demoted"], served, *trios]


def markdown_report(res: dict[str, Any]) -> str:
    """The block between the stress markers in bench/README.md (also what a run prints)."""
    env, s, m = res["environment"], res["settings"], res["memory"]
    backend = (
        f"a real Ollama {res['backend']['version']}"
        if res["backend"]["real"]
        else "the emulated Ollama (`harness/fake_ollama.py`, own process, paced as `PACING` says; "
        f"the 30B's cold load {s['scenario']['load_s']:g} s)"
    )
    fault = "the 9B's runner killed (HTTP 500) while the 30B loads" if s["kill_9b_during_load"] else "none"
    head = "tier | requests | errors | demoted | served by | latency p50 / p95 / max s | TTFT p50 / p95 / max s"
    out = [
        f"Run {res['date']} with `{res['command']}`, litellm {env['litellm_version']}, {env['cpu_count']} CPUs, "
        f"load average {env['loadavg_start'][0]:.2f} → {env['loadavg_end'][0]:.2f}. Backend: {backend}, plus the "
        f"real embedded SmolLM2-135M (`tiny`). {s['clients_per_tier']} "
        f"{'streaming' if s['stream'] else 'non-streaming'} clients per tier for {s['duration_s']:g} s, at the same "
        f"time. Injected fault: {fault}.",
        "",
        *table(head.split(" | "), [[t, *tier_cells(st)] for t, st in res["tiers"].items()]),
    ]
    log = res["demotion_log"]
    routes = " (" + ", ".join(f"{k} ×{v}" for k, v in log["routes"].items()) + ")" if log["routes"] else ""
    match = "matching" if log["headers_match_log"] else "**not** matching"
    out += ["", f"Demotion log: {log['records']} records{routes}, {match} the `X-Demoted-From` headers.", ""]
    out += table(("memory", "measured"), [])
    peak, b, p = m.get("peak"), m["budget"], m["pageouts"]
    if peak:
        models = " + ".join(f"{x['name']} {x['gb']:.1f}" for x in peak["models"]) or "none"
        label = "" if res["backend"]["real"] else "; the fake's declared sizes"
        verdict = "**exceeded**" if m["exceeded"] else "within"
        out += [
            f"| peak co-resident models (`/api/ps`, one instant{label}) | {peak['ps_gb']:.1f} GB: {models} |",
            f"| + the embedded model's real RSS | {peak['embedded_rss_gb']:.2f} GB → {peak['total_gb']:.1f} GB |",
            f"| budget: {b['ram_gb']:.1f} GB RAM ({b['ram_from']}) − {b['os_allowance_gb']:g} GB OS and apps "
            f"(`ask doctor`'s) | {b['available_gb']:.1f} GB: {verdict} |",
            f"| both tiers' models in `/api/ps` | {m['both_tiers_resident_s']:.0f} of "
            f"{m['run_sampled_s']:.0f} s sampled |",
        ]
    mb = {k: num(m[f"{k}_rss_peak_mb"], ".0f", unit=" MB") for k in ("backend", "embedded")}
    out += [
        f"| backend RSS peak | {mb['backend']} ({m['backend_rss_is']}) |",
        f"| embedded RSS peak | {mb['embedded']} |",
    ]
    out.append(
        f"| pageouts ({p['source']}) | +{p['delta_pages']} pages, peak {p['peak_pages_per_s']:g}/s ({p['note']}) |"
        if p
        else "| pageouts | not available |"
    )
    if not res["backend"]["real"]:
        out += [
            "",
            "With the fake, `/api/ps` sizes are the emulated models' declared sizes (what a real Ollama "
            "reports for them), not memory used on this machine, and the fake never evicts a model to make "
            "room: the co-resident figure is what the keep_alive policy asks Ollama to hold.",
        ]
    return "\n".join(out)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = Options(__doc__, "stress", quick="a short run: 2 clients per tier for 15 s")
    p.count("--duration", 60, 15, "seconds of load", float)
    p.count("--clients", 4, 2, "concurrent clients per tier")
    p.add_argument("--no-stream", action="store_true", help="non-streaming requests (no TTFT)")
    p.add_argument(
        "--kill-9b-during-load", action="store_true", help="fake only: the 9B's runner dies until the 30B loaded"
    )
    p.count("--load-s", 6, 3, "fake only: the 30B's cold load", float)
    p.add_argument("--fake", action="store_true", help="use the emulated Ollama even when a real one answers")
    p.add_argument("--ram-gb", type=float, default=None, help="RAM to budget (default: this machine's, as ask doctor)")
    p.add_argument("--sample-s", type=float, default=0.25, help="memory sampling interval")
    args = p.parse(argv)
    if args.duration <= 0 or args.clients < 1 or args.load_s < 0 or args.sample_s <= 0:
        p.error("--duration, --clients and --sample-s must be positive, --load-s not negative")
    return args


@contextlib.contextmanager
def stack(args: argparse.Namespace, tmp: Path) -> Iterator[tuple[Backend, Server, Proxy]]:
    """The backend (a real Ollama, or the fake started here), the embedded model and the proxy; all ours stopped."""
    with contextlib.ExitStack() as stop:
        url = (os.environ.get("OLLAMA_API_BASE") or DEFAULT_OLLAMA).rstrip("/")
        found = None if args.fake else ollama_version(url)
        if found and args.kill_9b_during_load:
            raise CannotRun(
                f"--kill-9b-during-load needs the emulated Ollama, and a real one answers at {url}: add --fake"
            )
        backend = Backend(url, True, found) if found else None
        if backend is None:
            fake = serve(stop, fake_ollama_server(tmp / "fake-ollama.log")).wait(30)
            backend = Backend(fake.url, False, ollama_version(fake.url) or "?", fake)
        yield backend, *stop.enter_context(embedded_stack(tmp, OLLAMA_API_BASE=backend.url))


def run(args: argparse.Namespace, res: dict[str, Any], tmp: Path) -> None:
    """Start the stack, put both tiers under load while sampling memory, and record what happened in `res`."""
    tiers = project_tiers()
    tags = [tiers.get(t).primary.model for t in TIERS]  # type: ignore[union-attr]
    budget, pageouts = budget_for(args.ram_gb), pageouts_source()
    res["settings"] = {"tiers": list(TIERS), "tier_tags": tags, "clients_per_tier": args.clients}
    res["settings"] |= {"duration_s": args.duration, "stream": not args.no_stream, "sample_s": args.sample_s}
    res["settings"]["kill_9b_during_load"] = args.kill_9b_during_load
    started = time.monotonic()
    with stack(args, tmp) as (backend, embedded, proxy):
        kind = "ollama" if backend.real else "fake (harness/fake_ollama.py, own process)"
        res["backend"] = {"real": backend.real, "url": backend.url, "version": backend.version, "kind": kind}
        print(
            f"stack up in {time.monotonic() - started:.1f} s: proxy {proxy.url}, {kind} {backend.version} at "
            f"{backend.url} (pids {backend.pids()}), embedded {embedded.url}",
            flush=True,
        )
        with client(proxy.url, KEY, timeout=120) as http:
            warm = one_request(http, "fast-9b", f"stress warm-up {uuid.uuid4().hex[:8]}", False)
        if not warm.ok:  # the 9B is the warm tier (keep_alive 15m); the 30B stays cold, as the seed has it
            print(f"warm-up of fast-9b failed: {warm.error}", flush=True)
        since = 0 if backend.real else len(backend.control.requests())
        sampler = Sampler(backend.url, backend.pids, embedded, pageouts, args.sample_s)
        res["settings"]["resident_at_start"] = [n for n, _ in sampler.baseline.ps or []]
        started_evt, stop_evt = threading.Event(), threading.Event()
        if not backend.real:
            res["settings"]["scenario"] = scenario(backend, tiers, args, started_evt, stop_evt)
        sampler.begin()
        started_evt.set()
        try:
            print(f"load: {args.clients} clients per tier on {' and '.join(TIERS)} for {args.duration:g} s", flush=True)
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
        res["memory"] = memory_report(sampler, backend, budget, set(tags))
        res["samples"] = [asdict(s) for s in sampler.samples]


def to_json(res: dict[str, Any]) -> str:
    """Indented JSON, but one line per memory sample: a minute of samples stays a readable file."""
    rows = ",\n    ".join(json.dumps(row, ensure_ascii=False) for row in res["samples"])
    text = json.dumps({**res, "samples": "@samples@"}, indent=2, ensure_ascii=False)
    return text.replace('"@samples@"', f"[\n    {rows}\n  ]" if rows else "[]") + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    with scratch("stress") as tmp, recorded("bench/stress.py", argv) as res:
        run(args, res, tmp)
    for tier, st in res["tiers"].items():
        for kind, n in st["errors_by_kind"].items():
            print(f"{tier} error x{n}: {kind}")
    report("stress", args, res, markdown_report(res), to_json(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
