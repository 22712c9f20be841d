"""How fast is `ask` when the answer is already cached? In-process lookup, and the whole process on a hit
beside `python -c pass` (the floor) and `llm --version` (Simon Willison's `llm`, the peer users know).

    .venv/bin/python bench/cache_hit.py [--runs 30] [--write-readme]

`llm` is installed on first run into .clients/llm (harness/clients.py: its openai pin conflicts with litellm's).
The cache is filled directly, so no proxy or model is needed: this measures only the hit path. Runs are
interleaved so machine load hits every command alike; medians are reported.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import Options, report, table  # noqa: E402
from harness import clients  # noqa: E402
from harness.machine import now  # noqa: E402
from harness.timing import percentile  # noqa: E402

PROMPT = "classify this headline: central bank holds rates"
GOAL_FRACTION = 0.2  # an ask cache hit must cost less than a fifth of `llm --version`


def llm_command() -> list[str]:
    return [str(clients.install_python("llm")), "--version"]


def fill_cache(rows: int) -> None:
    """The question under test plus `rows` others, as a month of cron work would leave it."""
    from ask_cli import cache

    with cache.PromptCache() as store:
        for i in range(rows):
            store.put(
                cache.cache_key("fast-9b", None, f"headline {i}", None, None), f"answer {i}", "fast-9b", "fast-9b"
            )
        store.put(cache.cache_key("fast-9b", None, PROMPT, None, None), "markets", "fast-9b", "fast-9b")


def lookup_us(samples: int) -> dict[str, float]:
    from ask_cli import cache

    key = cache.cache_key("fast-9b", None, PROMPT, None, None)
    times = []
    with cache.PromptCache() as store:
        for _ in range(samples):
            started = time.perf_counter()
            hit = store.get(key)
            times.append((time.perf_counter() - started) * 1e6)
            assert hit is not None and hit.answer == "markets"
    return {"median_us": statistics.median(times), "p95_us": percentile(sorted(times), 0.95)}


def time_commands(commands: dict[str, tuple[list[str], dict[str, str]]], runs: int) -> dict[str, dict[str, float]]:
    times: dict[str, list[float]] = {name: [] for name in commands}
    for cmd, env in commands.values():  # warm the page cache (and __pycache__ where allowed) once each
        subprocess.run(cmd, env=env, capture_output=True, stdin=subprocess.DEVNULL, check=True)
    for _ in range(runs):
        for name, (cmd, env) in commands.items():
            started = time.perf_counter()
            out = subprocess.run(cmd, env=env, capture_output=True, stdin=subprocess.DEVNULL, check=True)
            times[name].append((time.perf_counter() - started) * 1000)
            if name.startswith("ask"):
                assert out.stdout.decode().strip() == "markets", out
    return {
        name: {"median_ms": statistics.median(t), "min_ms": min(t), "p95_ms": percentile(sorted(t), 0.95)}
        for name, t in times.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = Options(__doc__, "cache_hit")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rows", type=int, default=10_000, help="cache size the hit is looked up in")
    args = parser.parse(argv)

    home = Path(tempfile.mkdtemp(prefix="ask-bench-"))
    os.environ.update(XDG_DATA_HOME=str(home / "data"), XDG_CONFIG_HOME=str(home / "config"))
    env = dict(os.environ, ASK_PROXY_URL="http://127.0.0.1:9")  # a miss would fail loudly, not hang
    load_start = os.getloadavg()[0]
    fill_cache(args.rows)
    lookup = lookup_us(1000)
    ask_script = Path(sys.executable).parent / "ask"
    # This workplace sets PYTHONDONTWRITEBYTECODE=1, so an editable install recompiles ask_cli on every run;
    # a user's machine keeps __pycache__. Both are shown.
    compiled = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    commands = {
        "python -c pass": ([sys.executable, "-c", "pass"], env),
        "ask (hit)": ([str(ask_script), PROMPT], env),
        "ask (hit, bytecode cached)": ([str(ask_script), PROMPT], compiled),
        "llm --version": (llm_command(), compiled),
    }
    procs = time_commands(commands, args.runs)
    ask_ms, llm_ms = procs["ask (hit)"]["median_ms"], procs["llm --version"]["median_ms"]  # the slower ask
    results = {
        "command": " ".join(["bench/cache_hit.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": now(),
        "environment": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg()[0],
            "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
        },
        "rows": args.rows,
        "runs": args.runs,
        "lookup": lookup,
        "processes": procs,
        "ask_over_llm": ask_ms / llm_ms,
        "ask_over_python": ask_ms / procs["python -c pass"]["median_ms"],
        "goal_met": ask_ms < GOAL_FRACTION * llm_ms,
    }
    lines = [
        f"Run {results['date']} with `{results['command']}`, {os.cpu_count()} CPUs, load average "
        f"{load_start:.2f} → {results['environment']['loadavg_end']:.2f}, cache of {args.rows:,} rows, "
        f"{args.runs} interleaved runs per command.",
        "",
        f"In-process lookup (`PromptCache.get`, 1000 hits): median {lookup['median_us']:.1f} µs, "
        f"p95 {lookup['p95_us']:.1f} µs (the seed's bar: 5 ms).",
        "",
        *table(
            ("command", "median ms", "min ms", "p95 ms"),
            ([f"`{n}`", *(f"{r[k]:.1f}" for k in r)] for n, r in procs.items()),
        ),
        "",
        f"`ask` on a hit costs {results['ask_over_llm']:.2f}× `llm --version` "
        f"(goal < {GOAL_FRACTION}: {'met' if results['goal_met'] else 'NOT met'}) and "
        f"{results['ask_over_python']:.2f}× a bare `python -c pass`.",
    ]
    report("cache-hit", args, results, "\n".join(lines))
    return 0 if results["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
