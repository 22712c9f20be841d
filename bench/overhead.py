"""What the proxy costs over talking to Ollama directly, and what our plugins add over bare LiteLLM.

Three targets in one run, interleaved round-robin so drift on a shared machine hits all alike: `direct` (the
emulated Ollama's own /api/chat, with the body LiteLLM sends it), `bare` (the real proxy with the project's
yaml minus our plugins) and `full` (the yaml as is). Every request has a unique prompt and the no-cache body,
and the fake's log must grow by one per request: a cache hit would time the cache, not the proxy. `--ab`
compares `full` with `variant` (full plus --extra-settings/--env/--proxy-args) in the same run instead.
What each figure means: bench/README.md.

    .venv/bin/python bench/overhead.py [--quick] [--write-readme]
    .venv/bin/python bench/overhead.py --ab --concurrency '' --env LITELLM_LOG=ERROR --label log-error
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import shlex
import shutil
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/overhead.py`
    sys.path.insert(0, str(ROOT))

from bench.common import Options, cache_check, goals_table, num, report, scratch, serve, table  # noqa: E402
from harness.fake_ollama import FakeOllamaControl  # noqa: E402
from harness.machine import recorded  # noqa: E402
from harness.stack import CONFIG, KEY, Proxy, derived_config, fake_ollama_server, free_port, isolated_env  # noqa: E402
from harness.timing import NO_CACHE, Timed, call, client, litellm_timings, spread, stream, tally  # noqa: E402

TUNING = "plugins.hot_path.handler"  # tunes LiteLLM itself: kept in `bare` too
TIER = "fast-9b"
OLLAMA_TAG = "qwen3.5:9b"  # what fast-9b's deployment asks Ollama for
DEFAULT_NAMES = ("direct", "bare", "full")
AB_NAMES = ("direct", "full", "variant")
GOALS = (  # what, phase, figure, limit in ms: the project's goals on a 2-core machine
    ("full-stack added latency (median)", "seq/latency", "full_added_ms", 8.0),
    ("full-stack added TTFT (median)", "seq/ttft", "full_added_ms", 10.0),
    ("plugins over bare LiteLLM (median latency)", "seq/latency", "plugins_ms", 1.0),
    ("plugins over bare LiteLLM (median TTFT)", "seq/ttft", "plugins_ms", 1.0),
)
ERRORS_AT = 32  # clients at which the full stack must make no errors


def proxy_config(tmp: Path, name: str, plugins: bool, extra: dict[str, Any] | None) -> Path:
    """The full stack with nothing extra runs litellm-config.yaml itself, untouched; `bare` keeps only TUNING."""
    if plugins and not extra:
        return CONFIG
    return derived_config(tmp / f"{name}.yaml", None if plugins else [TUNING], extra)


@dataclass
class Target:
    """One way to get an answer, with its own keep-alive client, like a real client would hold."""

    name: str
    base_url: str
    proxy: Proxy | None = None
    backend_body: dict[str, Any] = field(default_factory=dict)  # direct only: LiteLLM's own body, mirrored
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = client(self.base_url, KEY if self.proxy else None, timeout=30.0)

    def body(self, prompt: str, no_cache: bool = True) -> dict[str, Any]:
        messages = [{"role": "user", "content": prompt}]
        if self.proxy is None:
            return {**self.backend_body, "model": OLLAMA_TAG, "messages": messages}
        return {"model": TIER, "messages": messages, **({"cache": NO_CACHE} if no_cache else {})}

    def measure(self, prompt: str, streaming: bool, no_cache: bool = True) -> Timed:
        """Latency (non-streaming: to the parsed answer) or TTFT (streaming: to the first content chunk)."""
        wire = "openai" if self.proxy else "ollama"
        return (stream if streaming else call)(self.client, self.body(prompt, no_cache), wire)


def summarize(samples: list[Timed], streaming: bool) -> dict[str, Any]:
    good = [s for s in samples if s.ok]
    ok = sorted((s.ttft_ms if streaming else s.e2e_ms) or 0.0 for s in good)
    out = tally(samples)
    out |= {f"{k}_ms": v for k, v in (spread(ok) or {}).items() if k != "p5"}  # median, p95, mean, min, max
    if streaming and good:
        out["stream_total_median_ms"] = statistics.median(s.e2e_ms or 0.0 for s in good)
    if not streaming:  # LiteLLM's own timing headers: x-litellm-overhead-duration-ms and the detailed ones
        timing = [litellm_timings(s.headers) for s in good]
        medians = {k: statistics.median(t[k] for t in timing if k in t) for k in sorted({k for t in timing for k in t})}
        if "x-litellm-overhead-duration-ms" in medians:
            out["litellm_overhead_header_median_ms"] = medians["x-litellm-overhead-duration-ms"]
        if medians:
            out["litellm_timing_header_medians_ms"] = medians
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
        return f"{how}, {'streaming TTFT' if self.stream else 'non-streaming latency'}"


class Prompts:
    """Unique prompts that name their target, so the fake's log can be attributed afterwards."""

    def __init__(self) -> None:
        self._n = 0
        self._lock = threading.Lock()
        self.sent: collections.Counter[str] = collections.Counter()

    def prompt(self, target: str, phase: str) -> str:
        with self._lock:
            self._n += 1
            self.sent[target] += 1
            n = self._n
        return f"[{target}] {phase} #{n} {uuid.uuid4().hex}: say hello"


def rounds(targets: list[Target], i: int) -> list[Target]:
    """Round i's order: direct first, the two proxies swapped every other round.

    A proxy keeps working after its response is sent (logging callbacks, cost tracking); on 2 cores that
    tail slows whatever request comes next. A fixed order biased an A/A control by ~1 ms; alternating makes
    each proxy follow the other equally often.
    """
    return targets if i % 2 == 0 else [targets[0], *reversed(targets[1:])]


def run_phase(phase: Phase, targets: list[Target], n: int, warmup: int, prompts: Prompts) -> dict[str, Any]:
    """Measure all targets under one condition, round-robin, warm-up discarded."""
    measured: dict[str, list[Timed]] = {t.name: [] for t in targets}
    busy_s: dict[str, float] = dict.fromkeys(measured, 0.0)
    cpu0 = {t.name: t.proxy.cpu_s() for t in targets if t.proxy}

    def one(t: Target) -> Timed:
        return t.measure(prompts.prompt(t.name, phase.key), phase.stream)

    if phase.clients == 1:
        for i in range(warmup + n):
            for t in rounds(targets, i):
                start = time.perf_counter()
                sample = one(t)
                if i >= warmup:
                    measured[t.name].append(sample)
                    busy_s[t.name] += time.perf_counter() - start
    else:  # round-robin in blocks: each target's turn is 2 x clients requests kept `clients` deep
        with ThreadPoolExecutor(max_workers=phase.clients) as pool:
            for t in targets:  # warm-up: open `clients` keep-alive connections per target
                wait([pool.submit(one, t) for _ in range(max(warmup, phase.clients))])
            left, turn = dict.fromkeys(measured, n), 0
            while any(left.values()):
                turn += 1
                for t in rounds(targets, turn):
                    if not (k := min(2 * phase.clients, left[t.name])):
                        continue
                    start = time.perf_counter()
                    futures = [pool.submit(one, t) for _ in range(k)]
                    wait(futures)
                    busy_s[t.name] += time.perf_counter() - start
                    measured[t.name].extend(f.result() for f in futures)
                    left[t.name] -= k
    result: dict[str, Any] = {}
    for t in targets:
        stats = summarize(measured[t.name], phase.stream)
        stats["throughput_rps"] = len(measured[t.name]) / busy_s[t.name] if busy_s[t.name] else None
        if t.proxy:
            total = (warmup if phase.clients == 1 else max(warmup, phase.clients)) + n
            stats["proxy_cpu_ms_per_request"] = (t.proxy.cpu_s() - cpu0[t.name]) * 1000 / total
        result[t.name] = stats
    return result


def derive(res: dict[str, Any], names: tuple[str, str, str]) -> dict[str, Any]:
    """Added latency over direct, the second proxy's cost over the first, and their ratio (medians)."""
    direct, first, second = names
    med = {name: res[name].get("median_ms") for name in names}
    p95 = {name: res[name].get("p95_ms") for name in names}
    if None in med.values() or None in p95.values():
        return {}
    cpu = [res[name].get("proxy_cpu_ms_per_request") for name in (first, second)]
    out = {
        f"{first}_added_ms": med[first] - med[direct],
        f"{second}_added_ms": med[second] - med[direct],
        "delta_ms": med[second] - med[first],
        "delta_p95_ms": p95[second] - p95[first],
        "delta_cpu_ms_per_request": cpu[1] - cpu[0] if None not in cpu else None,
        "ratio": med[second] / med[first],
    }
    if names == DEFAULT_NAMES:  # the difference is what our plugins cost
        out |= {
            "plugins_ms": out["delta_ms"],
            "plugins_p95_ms": out["delta_p95_ms"],
            "full_over_bare_ratio": out["ratio"],
        }
    return out


def check_cache_bypass(fake: FakeOllamaControl, proxies: list[Target]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The per-request no-cache body reaches the backend every time, and the cache is on (`cache_check`).

    Returns the check's record and the body the first proxy's LiteLLM sent Ollama (the direct target sends it).
    """
    record: dict[str, Any] = {}
    body: dict[str, Any] = {}
    for t in proxies:
        runs = cache_check(
            lambda p, no_cache, t=t: t.measure(f"[{t.name}] {p}", False, no_cache), lambda: len(fake.chats())
        )
        bypassed = sum(calls for _, calls in runs[True])
        body = body or {k: v for k, v in fake.chats()[-1]["body"].items() if k != "messages"}
        record[t.name] = {
            "same_prompt_twice_with_no_cache_backend_calls": bypassed,
            "same_prompt_twice_without_no_cache_backend_calls": sum(calls for _, calls in runs[False]),
            "ok": bypassed == 2 and all(s.ok for s, _ in runs[True] + runs[False]),
        }
        if not record[t.name]["ok"]:
            raise RuntimeError(f"cache check failed for {t.name}: {record[t.name]} {runs}")
    return record, body


def account(fake: FakeOllamaControl, prompts: Prompts, names: tuple[str, ...]) -> dict[str, Any]:
    """Backend calls per target vs requests sent: equal means no cache hit, retry or lost request."""
    everything = fake.requests()
    chats = [r for r in everything if r["path"] == "/api/chat"]
    prompted = [str(((r.get("body") or {}).get("messages") or [{}])[-1].get("content") or "") for r in chats]
    out: dict[str, Any] = {}
    for name in names:
        seen = sum(1 for p in prompted if p.startswith(f"[{name}] ") and "cache-c" not in p)
        sent = prompts.sent[name]
        out[name] = {"requests_sent": sent, "backend_calls": seen, "one_backend_call_per_request": sent == seen}
    out["backend_requests_by_path"] = dict(collections.Counter(r["path"] for r in everything))  # checks included
    return out


def markdown_report(results: dict[str, Any]) -> str:
    """The block pasted into bench/README.md between the overhead markers (also what a run prints)."""
    s, env = results["settings"], results["environment"]
    names, label = results["targets"], results["delta"]
    short = "/".join(n[0] for n in names[1:])
    head = ["condition", *names, f"{names[1]} added", f"{names[2]} added", label, f"{names[2]}/{names[1]}"]
    head += [f"req/s {short}", f"cpu ms/req {short}", f"errors {'/'.join(n[0] for n in names)}"]
    rows = []
    for phase in results["phases"].values():
        t, d = phase["targets"], phase["derived"]
        derived = ["-"] * 4
        if d:
            derived = [num(d[f"{n}_added_ms"], signed=True) for n in names[1:]]
            derived += [num(d["delta_ms"], signed=True), f"{d['ratio']:.2f}x"]
        cells = [f"{num(t[n].get('median_ms'))} / {num(t[n].get('p95_ms'))}" for n in names]
        rps = "/".join(num(t[n].get("throughput_rps") or None, ".0f") for n in names[1:])
        cpu = "/".join(num(t[n].get("proxy_cpu_ms_per_request")) for n in names[1:])
        rows.append([phase["title"], *cells, *derived, rps, cpu, "/".join(str(t[n]["errors"]) for n in names)])
    out = [
        f"Run {results['date']} with `{results['command']}`, litellm {env['litellm_version']}, "
        f"{env['cpu_count']} CPUs, load average {env['loadavg_start'][0]:.2f} at start and "
        f"{env['loadavg_end'][0]:.2f} at end, N={s['requests']} per target and phase "
        f"(warm-up {s['warmup']} discarded). Milliseconds; median / p95.",
        "",
        *table(head, rows),
    ]
    return "\n".join(out + (["", *goals_table(results["goals"])] if results["goals"] else []))


def evaluate_goals(phases: dict[str, Any]) -> list[dict[str, Any]]:
    goals = []
    for what, key, figure, limit in GOALS:
        value = phases.get(key, {}).get("derived", {}).get(figure)
        shown = "-" if value is None else f"{value:.2f} ms"
        goals.append({"goal": f"{what} <= {limit:g} ms", "value": shown, "met": value is not None and value <= limit})
    keys = [k for k in (f"c{ERRORS_AT}/latency", f"c{ERRORS_AT}/ttft") if k in phases]
    errors = sum(phases[k]["targets"]["full"]["errors"] for k in keys) if keys else None
    goal = f"zero errors at {ERRORS_AT} concurrent clients (full stack)"
    goals.append({"goal": goal, "value": "-" if errors is None else f"{errors:g}", "met": errors == 0})
    return goals


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = Options(__doc__, "overhead", quick="N=50")
    p.count("--requests", 200, 50, "measured requests per target and phase")
    p.count("--warmup", 20, 10, "discarded requests per target")
    p.add_argument("--concurrency", default="8,32", help="comma-separated client counts ('' for none)")
    p.add_argument("--modes", default="latency,ttft", help="latency (non-streaming), ttft (streaming) or both")
    p.add_argument("--ab", action="store_true", help="proxies are full (as is) and variant (full + the options below)")
    p.add_argument("--extra-settings", type=Path, help="yaml merged into both proxies' configs (--ab: variant)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="proxy env (--ab: variant)")
    p.add_argument(
        "--proxy-args", default="", help="extra litellm arguments (--ab: variant): --proxy-args='--num_workers 2'"
    )
    p.add_argument("--keep-logs", type=Path, metavar="DIR", help="copy the proxy logs and configs here")
    p.add_argument("--label", default="", help="a name for this run in the JSON (settings experiments)")
    p.add_argument(
        "--hold", type=float, default=0.0, help="first, sequential load on the full stack for this many s (profiling)"
    )
    return p.parse(argv)


@contextlib.contextmanager
def stack(
    args: argparse.Namespace, names: tuple[str, str, str], tmp: Path
) -> Iterator[tuple[FakeOllamaControl, list[Target]]]:
    """The fake Ollama and both proxies (started concurrently), torn down whatever happens."""
    extra = yaml.safe_load(args.extra_settings.read_text()) if args.extra_settings else None
    overrides = dict(kv.split("=", 1) for kv in args.env)
    cli = shlex.split(args.proxy_args)
    if args.ab:  # (name, plugins, extra, env overrides, CLI args): only the variant differs
        specs = [("full", True, None, {}, []), ("variant", True, extra, overrides, cli)]
    else:
        specs = [("bare", False, extra, overrides, cli), ("full", True, extra, overrides, cli)]
    with contextlib.ExitStack() as stop:
        # The proxy's own cost is the question: an Ollama that serves each model one request at a time would
        # queue the concurrent phases inside the backend and hide it (bench/stress.py measures that scheduling).
        fake = serve(stop, fake_ollama_server(tmp / "fake-ollama.log", "--no-scheduling")).wait(30)
        proxies = []
        for name, plugins, settings, env_over, extra_args in specs:
            (tmp / name).mkdir()
            # The unused backends at closed ports, the same for both (plugins/environment.py would default
            # them for the full stack only).
            env = isolated_env(tmp / name, OLLAMA_API_BASE=fake.url) | env_over
            config = proxy_config(tmp, name, plugins, settings)
            proxies.append(serve(stop, Proxy(env, free_port(), tmp / f"{name}.log", config, extra_args)))
        targets = [Target(names[0], fake.url)]
        targets += [
            Target(name, proxy.wait().url, proxy=proxy) for (name, *_), proxy in zip(specs, proxies, strict=True)
        ]
        for t in targets:
            stop.callback(t.client.close)
        if args.keep_logs:  # the proxies' output and the configs they ran, to check a variant took effect
            stop.callback(keep_logs, tmp, args.keep_logs)
        yield FakeOllamaControl(fake.url), targets


def keep_logs(tmp: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for path in [*tmp.glob("*.log"), *tmp.glob("*.yaml")]:
        shutil.copy(path, dest / path.name)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    started = time.monotonic()
    concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    phases = [Phase(c, m == "ttft") for c in [1, *concurrency] for m in modes]
    names = AB_NAMES if args.ab else DEFAULT_NAMES
    delta = "variant - full" if args.ab else "plugins (full - bare)"
    prompts = Prompts()
    with (
        scratch("overhead") as tmp,
        recorded("bench/overhead.py", argv, label=args.label, targets=list(names), delta=delta) as results,
        stack(args, names, tmp) as (fake, targets),
    ):
        extra = yaml.safe_load(args.extra_settings.read_text()) if args.extra_settings else None
        settings = {"requests": args.requests, "warmup": args.warmup, "concurrency": concurrency, "modes": modes}
        settings |= {"tier": TIER, "no_cache_body": NO_CACHE, "extra_settings": extra, "env": args.env}
        results["settings"] = settings | {"proxy_args": args.proxy_args}
        results["phases"] = {}
        direct, *proxies = targets
        pids = ", ".join(f"{t.name} {t.base_url} (pid {t.proxy.proc.pid})" for t in proxies if t.proxy)
        print(f"started in {time.monotonic() - started:.1f} s: fake ollama {fake.url}, {pids}", flush=True)
        results["cache_check"], direct.backend_body = check_cache_bypass(fake, proxies)
        results["settings"]["direct_body_template"] = direct.backend_body
        if args.hold:  # sequential load on one proxy only, e.g. while py-spy samples its pid
            deadline, held = time.monotonic() + args.hold, []
            while time.monotonic() < deadline:
                held.append(proxies[-1].measure(prompts.prompt(proxies[-1].name, "hold"), False))
            results["hold"] = summarize(held, False)
        for phase in phases:
            t0, load = time.monotonic(), os.getloadavg()[0]
            res = run_phase(phase, targets, args.requests, args.warmup, prompts)
            results["phases"][phase.key] = {
                "title": phase.title,
                "loadavg_1m_at_start": load,
                "seconds": round(time.monotonic() - t0, 1),
                "targets": res,
                "derived": derive(res, names),
            }
            print(f"  {phase.title}: {time.monotonic() - t0:.1f} s", flush=True)
        results["backend_accounting"] = account(fake, prompts, names)
        results["goals"] = [] if args.ab else evaluate_goals(results["phases"])
    bad = [n for n in names if not results["backend_accounting"][n]["one_backend_call_per_request"]]
    print(f"backend calls per request: {'MISMATCH for ' + ', '.join(bad) if bad else '1 for every target'}")
    report("overhead", args, results, markdown_report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
