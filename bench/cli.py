"""Is `ask` as fast as curl? The whole `ask` process on a cache miss beside curl sending the identical request,
`python -c pass` (the floor) and `llm -m fast-9b` through the same proxy; `ask --help`, `ask stats` over a
100,000-line log and `ask models`.

    .venv/bin/python bench/cli.py [--rounds 30] [--quick] [--ask CMD] [--also LABEL=CMD] [--arms a,b] [--write-readme]

One run: the emulated Ollama (in-process, answering at once), the real proxy with the project's config, unused
backends at closed ports. Every arm is a fresh process, the arms round-robin (their order rotated each round,
so drift and a proxy's after-response work hit all alike). Every question is unique, so `ask` takes its real
miss path (cache lookup, request, telemetry line, cache write) and the proxy's cache never answers; curl sends
the body `ask` sends (`ask_cli.query.Question.body()`). Wall time is spawn to exit; time to first token is
spawn to the first answer byte on the child's stdout (read unbuffered). Goals: ask's miss within 50 ms of
curl's (median), its first token within 50 ms of curl's, `ask --help` ≤ 150 ms, `ask stats` ≤ 500 ms.
The `ask` processes run with bytecode caching on (this workplace sets PYTHONDONTWRITEBYTECODE=1; a user's
machine keeps __pycache__). `--ask` times another `ask` instead (a command line, e.g. an older tree on
PYTHONPATH); each `--also` adds one more whose miss and `--help` run in the same rounds (the alternatives).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ask_cli import telemetry  # noqa: E402
from ask_cli.query import Question  # noqa: E402
from bench.readme_block import publish  # noqa: E402
from contract import DEFAULT_TIER, FREE_CLOUD, LOCAL, PREMIUM  # noqa: E402
from harness import clients  # noqa: E402
from harness.fake_ollama import FakeOllama  # noqa: E402
from harness.machine import package_version, recorded  # noqa: E402
from harness.stack import KEY, closed_port_url, running_proxy  # noqa: E402
from harness.timing import percentile  # noqa: E402

OUT = ROOT / "bench" / "results" / "cli.json"
LOG_LINES = 100_000
GOAL_MISS_MS = GOAL_TTFT_MS = 50.0  # over curl's, medians
GOAL_HELP_MS, GOAL_STATS_MS = 150.0, 500.0
FIRST_CONTENT = re.compile(rb'"content":\s*"[^"]')  # curl's stdout is the raw SSE stream


@dataclass
class Arm:
    """One command timed each round: `check` says whether its output is right, `answer` marks an arm whose
    first answer byte is timed (`sse`: in curl's raw stream)."""

    cmd: Callable[[int], list[str]]
    env: dict[str, str]
    check: Callable[[bytes], bool]
    answer: str | None = None  # None, "text" (ask) or "sse" (curl)


def timed(arm: Arm, i: int, cwd: Path) -> tuple[float, float | None]:
    """Wall ms (spawn to exit) and first-answer-byte ms of one run; AssertionError if its output is wrong."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        arm.cmd(i), env=arm.env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, bufsize=0
    )
    assert proc.stdout is not None
    out, first = b"", None
    while chunk := os.read(proc.stdout.fileno(), 65536):
        out += chunk
        if first is None and arm.answer and (arm.answer == "text" or FIRST_CONTENT.search(out)):
            first = (time.perf_counter() - started) * 1000
    code = proc.wait()
    wall = (time.perf_counter() - started) * 1000
    assert code == 0 and arm.check(out), f"{shlex.join(arm.cmd(i))}: exit {code}, {out[:300]!r}"
    return wall, first


def llm_exe() -> Path | None:
    """Simon Willison's `llm` in its own venv (harness/clients.py: its openai pin conflicts with litellm's),
    installed if absent; None if it cannot be installed here."""
    try:
        return clients.install_python("llm")
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"llm could not be installed ({exc}): its arm is skipped", file=sys.stderr)
        return None


def llm_home(home: Path, proxy_url: str) -> Path:
    """An `llm` user directory whose one extra OpenAI-compatible model is our default tier at the proxy."""
    path = home / "llm"
    path.mkdir(parents=True, exist_ok=True)
    (path / "extra-openai-models.yaml").write_text(
        f"- model_id: {DEFAULT_TIER}\n  model_name: {DEFAULT_TIER}\n  api_base: {proxy_url}/v1\n"
        "  api_key_name: openai\n"  # the key: $OPENAI_API_KEY, set to the master key
    )
    return path


def write_log(path: Path, lines: int) -> None:
    """A telemetry log as months of cron work leave it: `telemetry.entry` lines over tiers, hits, demotions,
    errors and lanes, oldest first, 30 s apart."""
    rng = random.Random(1)
    tiers = [DEFAULT_TIER] * 6 + ["fast-3b"] * 2 + ["think-9b", "coder-30b", "council", "tiny"]
    end = time.time()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for i in range(lines):
            tier, hit, failed = rng.choice(tiers), rng.random() < 0.3, rng.random() < 0.02
            demoted = not hit and not failed and rng.random() < 0.05
            made = not hit and not failed
            line = telemetry.entry(
                model=tier,
                served_by="" if failed else "fast-3b" if demoted else tier,
                prompt=f"cron question {i % 5000}",
                response="x" * rng.randint(1, 900),
                latency_s=rng.uniform(0.001, 0.01) if hit else rng.uniform(0.3, 9.0),
                cache_hit=hit,
                demoted=demoted,
                exit_code=1 if failed else 0,
                tokens=rng.randint(1, 500) if made else None,
                ttft_s=rng.uniform(0.05, 1.0) if made else None,
                error="HTTP 500: llama runner process has terminated" if failed else None,
                now=end - (lines - i) * 30,
                lane=rng.choice([LOCAL] * 8 + [FREE_CLOUD, PREMIUM]) if made else None,
            )
            fh.write(json.dumps(line, separators=(",", ":")) + "\n")


def figures(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), 1),
        "p95": round(percentile(ordered, 0.95), 1),
        "min": round(ordered[0], 1),
    }


def run(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    ask = shlex.split(args.ask)
    base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE" and not k.startswith("ASK_")}
    base.update(XDG_DATA_HOME=str(home / "data"), XDG_CONFIG_HOME=str(home / "config"), LITELLM_MASTER_KEY=KEY)
    write_log(home / "big" / "ask" / "log.jsonl", LOG_LINES)
    (home / "stack").mkdir()
    with (
        FakeOllama() as fake,
        running_proxy(
            home / "stack",
            OLLAMA_API_BASE=fake.url,
            TINY_API_BASE=closed_port_url("/v1"),
            LLAMA_SWAP_API_BASE=closed_port_url("/v1"),
            LITELLM_LOG="ERROR",
        ) as proxy,
    ):
        env = {**base, "ASK_PROXY_URL": proxy.url}
        tag = f"{os.getpid()}-{time.time():.0f}"

        def prompt(i: int) -> str:
            return f"cli bench {tag} question {i}: say hi"

        def curl_cmd(i: int) -> list[str]:
            body = json.dumps({**Question(model=DEFAULT_TIER, prompt=prompt(i)).body(), "stream": True})
            auth, kind = f"Authorization: Bearer {KEY}", "Content-Type: application/json"
            return ["curl", "-sSN", "-H", auth, "-H", kind, "--data-binary", body, f"{proxy.url}/v1/chat/completions"]

        def answered(out: bytes) -> bool:
            return out.startswith(b"Hello from")

        arms: dict[str, Arm] = {
            "python -c pass": Arm(lambda i: [sys.executable, "-c", "pass"], env, lambda out: out == b""),
            "ask (miss)": Arm(lambda i: [*ask, prompt(i)], env, answered, "text"),
            "curl": Arm(curl_cmd, env, lambda out: b"[DONE]" in out and bool(FIRST_CONTENT.search(out)), "sse"),
            "ask --help": Arm(lambda i: [*ask, "--help"], env, lambda out: b"Commands:" in out),
            "ask stats (100k lines)": Arm(
                lambda i: [*ask, "stats"], {**env, "XDG_DATA_HOME": str(home / "big")}, lambda out: b"total" in out
            ),
            "ask models": Arm(lambda i: [*ask, "models"], env, lambda out: DEFAULT_TIER.encode() in out),
        }
        llm_note = None
        if shutil.which("curl") is None:
            raise SystemExit("bench/cli.py: curl is not installed (apt-get install curl)")
        exe = llm_exe() if "llm" in args.arms else None
        if exe is not None:
            llm_env = {**env, "LLM_USER_PATH": str(llm_home(home, proxy.url)), "OPENAI_API_KEY": KEY}
            arms[f"llm -m {DEFAULT_TIER}"] = Arm(lambda i: [str(exe), "-m", DEFAULT_TIER, prompt(i)], llm_env, answered)
        elif "llm" in args.arms:
            llm_note = "llm could not be installed here: its arm is skipped"
        for label, command in args.also:  # another `ask` (an older tree, another Typer), in the same rounds
            other = shlex.split(command)
            arms[f"{label}: ask (miss)"] = Arm(lambda i, c=other: [*c, prompt(i)], env, answered, "text")
            arms[f"{label}: ask --help"] = Arm(lambda i, c=other: [*c, "--help"], env, lambda out: b"Commands:" in out)
        chosen = {n: a for n, a in arms.items() if any(p in n for p in args.arms)}
        cwd = home  # not the repository: `python -m ask_cli` must find the `ask` under test, not the checkout
        for i, arm in enumerate(chosen.values()):  # warm-up: page cache and __pycache__
            timed(arm, -1 - i, cwd)
        walls: dict[str, list[float]] = {n: [] for n in chosen}
        firsts: dict[str, list[float]] = {n: [] for n, a in chosen.items() if a.answer}
        names = list(chosen)
        for r in range(args.rounds):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                wall, first = timed(chosen[name], r * len(names) + names.index(name), cwd)
                walls[name].append(wall)
                if first is not None:
                    firsts[name].append(first)
        calls = len(fake.chat_requests())
    return {
        "processes": {n: figures(v) for n, v in walls.items()},
        "first_token": {n: figures(v) for n, v in firsts.items() if v},
        "backend_calls": calls,
        "llm_note": llm_note,
    }


def summarize(res: dict[str, Any]) -> None:
    """The headline figures under flat keys (medians, and their p95s), and the goals."""
    procs, first = res["processes"], res["first_token"]
    keys = {
        "ask_miss": "ask (miss)",
        "curl": "curl",
        "python": "python -c pass",
        "ask_help": "ask --help",
        "stats_100k": "ask stats (100k lines)",
        "ask_models": "ask models",
        "llm": f"llm -m {DEFAULT_TIER}",
    }
    for key, name in keys.items():
        res[f"{key}_ms"] = procs.get(name, {}).get("median")
        res[f"{key}_p95_ms"] = procs.get(name, {}).get("p95")
    for key, name in (("ask_ttft", "ask (miss)"), ("curl_ttft", "curl")):
        res[f"{key}_ms"] = first.get(name, {}).get("median")
        res[f"{key}_p95_ms"] = first.get(name, {}).get("p95")

    def over(a: str, b: str) -> float | None:
        return None if res[a] is None or res[b] is None else round(res[a] - res[b], 1)

    res["ask_miss_over_curl_ms"] = over("ask_miss_ms", "curl_ms")
    res["ask_ttft_over_curl_ms"] = over("ask_ttft_ms", "curl_ttft_ms")
    res["ask_miss_over_python_ms"] = over("ask_miss_ms", "python_ms")
    res["alternatives"] = [
        {
            "alternative": label,
            "ask_miss_ms": procs.get(f"{prefix}ask (miss)", {}).get("median"),
            "ask_ttft_ms": first.get(f"{prefix}ask (miss)", {}).get("median"),
            "ask_help_ms": procs.get(f"{prefix}ask --help", {}).get("median"),
        }
        for label, prefix in [("this tree", ""), *((label, f"{label}: ") for label, _ in res["also"])]
    ]
    for alt in res["alternatives"]:
        for key, base in (("ask_miss_ms", res["curl_ms"]), ("ask_ttft_ms", res["curl_ttft_ms"])):
            value = alt[key]
            alt[key.replace("_ms", "_over_curl_ms")] = None if value is None or base is None else round(value - base, 1)
    res["goals"] = [
        {"goal": f"ask miss − curl ≤ {GOAL_MISS_MS:g} ms", "value": res["ask_miss_over_curl_ms"], "max": GOAL_MISS_MS},
        {
            "goal": f"ask TTFT − curl's ≤ {GOAL_TTFT_MS:g} ms",
            "value": res["ask_ttft_over_curl_ms"],
            "max": GOAL_TTFT_MS,
        },
        {"goal": f"ask --help ≤ {GOAL_HELP_MS:g} ms", "value": res["ask_help_ms"], "max": GOAL_HELP_MS},
        {"goal": f"ask stats, 100k lines ≤ {GOAL_STATS_MS:g} ms", "value": res["stats_100k_ms"], "max": GOAL_STATS_MS},
    ]
    for goal in res["goals"]:
        goal["met"] = None if goal["value"] is None else goal["value"] <= goal["max"]


def block(res: dict[str, Any]) -> str:
    env = res["environment"]
    load = f"{env['loadavg_start'][0]:.2f} → {env['loadavg_end'][0]:.2f}"
    lines = [
        f"Run {res['date']} with `{res['command']}`, typer {res['typer']}, {env['cpu_count']} CPUs, load average "
        f"{load}, {res['rounds']} interleaved rounds, `ask` = `{res['ask']}`.",
        "",
        "| command | median ms | p95 ms | min ms | first token median ms | first token p95 ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, fig in res["processes"].items():
        ttft = res["first_token"].get(name)
        tt = [f"{ttft['median']:.1f}", f"{ttft['p95']:.1f}"] if ttft else ["-", "-"]
        lines.append(f"| `{name}` | {fig['median']:.1f} | {fig['p95']:.1f} | {fig['min']:.1f} | {' | '.join(tt)} |")
    lines += ["", "| goal | measured (median) | met |", "|---|---|---|"]
    for g in res["goals"]:
        value = "-" if g["value"] is None else f"{g['value']:.1f} ms"
        lines.append(f"| {g['goal']} | {value} | {'-' if g['met'] is None else 'yes' if g['met'] else '**no**'} |")
    if res["also"]:
        lines += [
            "",
            "| alternative | ask_miss_ms | − curl | first token − curl's | ask_help_ms |",
            "|---|---|---|---|---|",
        ]
        for alt in res["alternatives"]:
            cells = [alt["ask_miss_ms"], alt["ask_miss_over_curl_ms"], alt["ask_ttft_over_curl_ms"], alt["ask_help_ms"]]
            lines.append(
                f"| {alt['alternative']} | " + " | ".join("-" if c is None else f"{c:.1f}" for c in cells) + " |"
            )
    if res.get("llm_note"):
        lines += ["", res["llm_note"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="rounds of every arm (default 30, quick 5)")
    parser.add_argument("--quick", action="store_true", help="5 rounds: a try in under a minute")
    parser.add_argument("--ask", default=str(Path(sys.executable).parent / "ask"), help="the `ask` to time")
    parser.add_argument(
        "--arms",
        type=lambda text: text.split(","),
        default=["python", "ask (miss)", "curl", "help", "stats", "models", "llm"],
        help="which arms (substrings of their names), comma-separated",
    )
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        type=lambda text: tuple(text.split("=", 1)),
        metavar="LABEL=CMD",
        help="another `ask` whose miss and --help run in the same rounds (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=OUT, help="JSON results file")
    parser.add_argument("--write-readme", action="store_true", help="rewrite its block in bench/README.md")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (5 if args.quick else 30)
    home = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    try:
        first = {"rounds": args.rounds, "ask": args.ask, "also": args.also, "typer": package_version("typer")}
        with recorded("bench/cli.py", argv, **first) as res:
            res.update(run(args, home))
        summarize(res)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    text = block(res)
    print(text)
    publish("cli", args.out, json.dumps(res, indent=2) + "\n", text, args.write_readme)
    return 0 if all(g["met"] is not False for g in res["goals"]) else 1


if __name__ == "__main__":
    sys.exit(main())
