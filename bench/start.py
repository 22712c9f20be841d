"""How long from `ask serve` to ready and to the first answer, beside bare LiteLLM on the same yaml?

    .venv/bin/python bench/start.py [--rounds 5] [--quick] [--baseline REF] [--write-readme]

Four ways to start the stack, interleaved in each round (the order rotates, so load drift hits all alike):

    bare               litellm --config <litellm-config.yaml without our plugins: callbacks, council>
    plugins            litellm --config litellm-config.yaml
    ask --no-embedded  ask serve --no-embedded
    ask                ask serve (the embedded model too, its own, on a fresh port)

For each: seconds from launch to /health/liveliness 200, to the first `tiny` answer (the real embedded
model, through the stack) and the `fast-9b` request after it (the emulated Ollama, its own process).
Beside them, what LiteLLM costs before it reads a config (`import litellm`, `import
litellm.proxy.proxy_server`) and what `ask serve` does before the proxy is spawned (its ASCII-free
timings file, ASK_SERVE_TIMINGS). `--baseline REF` adds `ask serve` as it was at a git ref (`git archive`
into a temp dir), for before/after in the same run. Same environment for all (harness.stack.isolated_env,
a temp HOME and XDG dirs, free ports); medians are reported.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import yaml  # noqa: E402

from bench.common import Options, num, scratch, table  # noqa: E402
from bench.readme_block import publish  # noqa: E402
from harness.machine import now  # noqa: E402
from harness.processes import Server, answers, free_port, python_module, wait_until_refused  # noqa: E402
from harness.stack import CONFIG, KEY, embedded_server, fake_ollama_server, isolated_env, litellm_command  # noqa: E402

POLL_S = 0.02
GOAL_S = 1.0  # ask serve ready ≤ bare LiteLLM's ready + 1 s
BARE, PLUGINS, ASK_NO_EMB, ASK = "bare", "plugins", "ask --no-embedded", "ask"
PHASES = [  # (label, from, to) over ask serve's timings file; "launch" is when this script spawned it
    ("python + `ask` CLI import", "launch", "start"),
    ("secrets, config read and checks", "start", "config"),
    ("children spawned", "config", "spawned"),
    ("embedded model ready", "launch", "embedded model ready"),
    ("proxy ready", "launch", "proxy ready"),
    ("tier lines said after ready", "ready", "said"),
]


def bare_config(path: Path) -> Path:
    """litellm-config.yaml with nothing of ours: no callbacks, no council provider or model."""
    config = yaml.safe_load(CONFIG.read_text())
    settings = config.get("litellm_settings") or {}
    settings.pop("callbacks", None)
    settings.pop("custom_provider_map", None)
    config["model_list"] = [m for m in config["model_list"] if not m["litellm_params"]["model"].startswith("council/")]
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def import_s(module: str, env: dict[str, str]) -> float:
    """Seconds `import module` takes in a fresh interpreter, timed inside it (LiteLLM's exit is slow too)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def ask_cmd(port: int, embedded: bool) -> list[str]:
    return python_module("ask_cli", "serve", "--port", str(port), *([] if embedded else ["--no-embedded"]))


def first_answer(url: str, model: str) -> float:
    """Seconds for one fresh request (a unique prompt: never a cache hit)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"start {uuid.uuid4().hex}: say hi."}],
        "max_tokens": 8,
    }
    started = time.perf_counter()
    resp = httpx.post(
        f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60, trust_env=False
    )
    took = time.perf_counter() - started
    if resp.status_code != 200:
        raise RuntimeError(f"{model} through {url}: HTTP {resp.status_code} {resp.text[:200]}")
    return took


def one_start(name: str, server: Server, timings: Path | None) -> dict[str, Any]:
    """Launch, poll liveliness every 20 ms, then the first `tiny` and `fast-9b` answers; stop."""
    with contextlib.suppress(FileNotFoundError):
        timings and timings.unlink()
    launched_wall, launched = time.time(), time.perf_counter()
    server.launch()
    assert server.proc is not None
    try:
        deadline = launched + 180
        while not answers(server.ready_url, 1.0):
            if server.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {server.proc.returncode}: see {server.log}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{name} not ready in 180 s: see {server.log}")
            time.sleep(POLL_S)
        ready = time.perf_counter() - launched
        tiny = first_answer(server.url, "tiny")
        answered = time.perf_counter() - launched
        fast = first_answer(server.url, "fast-9b")
        row: dict[str, Any] = {
            "ready_s": ready,
            "tiny_answer_s": answered,
            "tiny_request_s": tiny,
            "fast_request_s": fast,
        }
        if timings is not None:
            for _ in range(100):  # written just after the tier lines, a moment after liveliness answers
                if timings.exists() and timings.read_text():
                    break
                time.sleep(POLL_S)
            marks = json.loads(timings.read_text())
            marks["launch"] = launched_wall
            row["phases_s"] = {label: marks[b] - marks[a] for label, a, b in PHASES if a in marks and b in marks}
            row["said_s"] = marks["said"] - launched_wall
        return row
    finally:
        server.stop()
        wait_until_refused(server.url, 30)


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("ready_s", "tiny_answer_s", "tiny_request_s", "fast_request_s", "said_s"):
        values = [r[key] for r in rows if key in r]
        if values:
            out[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    phases = [r["phases_s"] for r in rows if "phases_s" in r]
    if phases:
        found = {label: [p[label] for p in phases if label in p] for label, *_ in PHASES}
        out["phases_s"] = {label: statistics.median(v) for label, v in found.items() if v}
    return out


def baseline_tree(ref: str, into: Path) -> Path:
    """The project at `ref`, unpacked (not checked out): its ask_cli, contract, plugins and yaml."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main(argv: list[str] | None = None) -> int:
    parser = Options(__doc__, "start", quick="2 rounds instead of 5")
    parser.count("--rounds", 5, 2, "interleaved rounds")
    parser.add_argument("--baseline", metavar="REF", help="also time `ask serve` as it was at this git ref")
    args = parser.parse(argv if argv is not None else sys.argv[1:])

    with scratch("start") as tmp, contextlib.ExitStack() as stop:
        env = isolated_env(tmp)
        env.update(HOME=str(tmp / "home"))
        fake = fake_ollama_server(tmp / "fake_ollama.log")
        tiny = embedded_server(tmp / "embedded.log")
        for server in (fake, tiny):
            stop.callback(server.stop)
            server.launch()
        fake.wait()
        tiny.wait()
        env.update(OLLAMA_API_BASE=fake.url, TINY_API_BASE=f"{tiny.url}/v1")
        bare_yaml = bare_config(tmp / "litellm-config.bare.yaml")
        base_root = baseline_tree(args.baseline, tmp / "baseline") if args.baseline else None
        timings = tmp / "timings.json"

        def make(name: str, round_no: int) -> tuple[Server, Path | None]:
            port, log = free_port(), tmp / f"{name.replace(' ', '_')}-{round_no}.log"
            url = f"http://127.0.0.1:{port}/health/liveliness"
            if name in (BARE, PLUGINS):
                cmd = [litellm_command(), "--config", str(bare_yaml if name == BARE else CONFIG)]
                return Server(name, [*cmd, "--host", "127.0.0.1", "--port", str(port)], log, url, env), None
            embedded = name != ASK_NO_EMB
            own = dict(env, ASK_SERVE_TIMINGS=str(timings))
            if embedded:  # a port nothing listens on: ask serve starts its own embedded model there
                own["TINY_API_BASE"] = f"http://127.0.0.1:{free_port()}/v1"
            if name.endswith("(baseline)") and base_root:  # it writes no timings file
                own["PYTHONPATH"] = str(base_root)
                return Server(name, ask_cmd(port, embedded), log, url, own, cwd=base_root), None
            return Server(name, ask_cmd(port, embedded), log, url, own), timings

        names = [BARE, PLUGINS, ASK_NO_EMB, ASK] + ([f"{ASK} (baseline)"] if base_root else [])
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        imports: dict[str, list[float]] = {"litellm": [], "litellm.proxy.proxy_server": []}
        load_start = os.getloadavg()[0]
        for round_no in range(args.rounds):
            for module, times in imports.items():
                times.append(import_s(module, env))
            order = names[round_no % len(names) :] + names[: round_no % len(names)]
            for name in order:
                server, timing_file = make(name, round_no)
                rows[name].append(one_start(name, server, timing_file))
                print(
                    f"round {round_no + 1}/{args.rounds} {name}: ready {rows[name][-1]['ready_s']:.2f} s",
                    file=sys.stderr,
                )

    results: dict[str, Any] = {
        "command": " ".join(["bench/start.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": now(),
        "environment": {
            "cpu_count": os.cpu_count(),
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg()[0],
            "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
        },
        "rounds": args.rounds,
        "baseline": args.baseline,
        "imports_s": {m: statistics.median(t) for m, t in imports.items()},
        "starts": {name: summary(r) for name, r in rows.items()},
        "runs": rows,
    }
    starts = results["starts"]
    bare = starts[BARE]["ready_s"]["median"]
    over = {name: s["ready_s"]["median"] - bare for name, s in starts.items()}
    results["ready_over_bare_s"] = over
    results["goals"] = [
        {"goal": f"`{n}` ready ≤ bare + {GOAL_S:g} s", "value": over[n], "met": over[n] <= GOAL_S}
        for n in (ASK_NO_EMB, ASK)
    ]
    publish_results(args, results)
    return 0 if all(g["met"] for g in results["goals"]) else 1


def publish_results(args: Any, res: dict[str, Any]) -> None:
    starts, imports = res["starts"], res["imports_s"]
    env = res["environment"]

    def cell(stats: dict[str, Any], key: str, unit: float = 1.0, fmt: str = ".2f") -> str:
        s = stats.get(key)
        return (
            "-"
            if s is None
            else f"{num(s['median'] * unit, fmt)} ({num(s['min'] * unit, fmt)}–{num(s['max'] * unit, fmt)})"
        )

    rows = [
        [
            f"`{name}`",
            cell(s, "ready_s"),
            num(res["ready_over_bare_s"][name], "+.2f"),
            cell(s, "tiny_answer_s"),
            cell(s, "tiny_request_s", 1000, ".0f"),
            cell(s, "fast_request_s", 1000, ".0f"),
        ]
        for name, s in starts.items()
    ]
    phase_names = [n for n in starts if "phases_s" in starts[n]]
    phase_rows = [[label, *(num(starts[n]["phases_s"].get(label), ".3f") for n in phase_names)] for label, *_ in PHASES]
    goals = [[g["goal"], num(g["value"], "+.2f") + " s", "yes" if g["met"] else "**no**"] for g in res["goals"]]
    lines = [
        f"Run {res['date']} with `{res['command']}`, {env['cpu_count']} CPUs, load average "
        f"{env['loadavg_start']:.2f} → {env['loadavg_end']:.2f}, {res['rounds']} interleaved rounds; "
        "median (min–max).",
        "",
        *table(
            ("start", "ready s", "vs bare s", "first `tiny` answer s", "`tiny` request ms", "then `fast-9b` ms"),
            rows,
        ),
        "",
        f"LiteLLM before it reads a config: `import litellm` {imports['litellm']:.2f} s, "
        f"`import litellm.proxy.proxy_server` {imports['litellm.proxy.proxy_server']:.2f} s "
        "(timed inside a fresh interpreter each). Our plugins' load is `plugins` − `bare`.",
        "",
        "What `ask serve` does, seconds from launch (median):",
        "",
        *table(("phase", *(f"`{n}`" for n in phase_names)), phase_rows),
        "",
        *table(("goal", "measured", "met"), goals),
    ]
    block = "\n".join(lines)
    print(block)
    publish("start", args.out, json.dumps(res, indent=2) + "\n", block, args.write_readme)


if __name__ == "__main__":
    sys.exit(main())
