"""What do our plugins cost per streamed chunk, next to what LiteLLM's own stream path costs?

    .venv/bin/python bench/stream_cpu.py [--quick] [--rounds 6] [--write-readme]

Two measurements in one run:
- in-process, exact: the only per-chunk hook of ours (`plugins/served_by.py`'s streaming iterator) around a stream of
  ready chunks, against iterating the same stream bare; interleaved rounds, the median difference per chunk;
- end to end: the real embedded model behind two proxies on the project's yaml, bare LiteLLM (no plugins but
  `hot_path`, which tunes LiteLLM itself) and the full stack, interleaved. A proxy's CPU per chunk is the slope of its
  process CPU between a short and a long answer, so the per-request work (auth, routing, logging) drops out.
Goal: our plugins add at most 0.02 ms of CPU per chunk; the rest is LiteLLM's floor.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from harness.machine import recorded  # noqa: E402
from harness.stack import Proxy, derived_config, embedded_server, free_port, isolated_env  # noqa: E402
from harness.timing import NO_CACHE, client, stream  # noqa: E402

GOAL_MS = 0.02
TUNING = "plugins.hot_path.handler"
SHORT, LONG = 8, 160  # max_tokens of the two answers whose difference is the per-chunk cost
PROMPT = "Write a long story about a lighthouse keeper and the sea, with many details."


class Chunks:
    """A stream of ready chunks with the hidden params LiteLLM's stream wrapper carries."""

    def __init__(self, n: int) -> None:
        self.n, self._hidden_params = n, {"model_id": None}

    def __aiter__(self) -> Chunks:
        self.i = 0
        return self

    async def __anext__(self) -> int:
        if self.i >= self.n:
            raise StopAsyncIteration
        self.i += 1
        return self.i


async def _drain(iterator: Any) -> float:
    started = time.perf_counter()
    async for _ in iterator:
        pass
    return time.perf_counter() - started


def hook_cost_us(chunks: int, rounds: int) -> dict[str, Any]:
    """Microseconds per chunk: the stream bare, and through `served_by`'s iterator hook (no router: no headers)."""
    from plugins.served_by import ServedBy

    hook = ServedBy()
    bare, hooked = [], []
    for _ in range(rounds):
        bare.append(asyncio.run(_drain(Chunks(chunks))) / chunks * 1e6)
        wrapped = hook.async_post_call_streaming_iterator_hook(None, Chunks(chunks), {"model": "fast-9b"})
        hooked.append(asyncio.run(_drain(wrapped)) / chunks * 1e6)
    added = [h - b for h, b in zip(hooked, bare, strict=True)]
    return {
        "chunks": chunks,
        "rounds": rounds,
        "bare_us_per_chunk": round(statistics.median(bare), 3),
        "hooked_us_per_chunk": round(statistics.median(hooked), 3),
        "added_us_per_chunk": round(statistics.median(added), 3),
    }


def proxy_slope(rounds: int, tmp: Path) -> dict[str, Any]:
    """CPU ms per chunk of each proxy: (CPU of a long answer − a short one) / (their chunk difference)."""
    bare_yaml = derived_config(tmp / "bare.yaml", [TUNING])
    with contextlib.ExitStack() as stop:
        embedded = common.serve(stop, embedded_server(tmp / "embedded.log", free_port()))
        env = isolated_env(tmp, TINY_API_BASE=f"{embedded.url}/v1")
        arms = {
            "bare": common.serve(stop, Proxy(env=env, port=free_port(), log_path=tmp / "bare.log", config=bare_yaml)),
            "full": common.serve(stop, Proxy(env=env, port=free_port(), log_path=tmp / "full.log")),
        }
        embedded.wait(60)
        http = {name: client(p.wait().url, env["LITELLM_MASTER_KEY"]) for name, p in arms.items()}
        cpu: dict[str, dict[int, float]] = {name: {SHORT: 0.0, LONG: 0.0} for name in arms}
        chunks: dict[str, dict[int, int]] = {name: {SHORT: 0, LONG: 0} for name in arms}
        errors: list[str] = []
        for r in range(rounds + 1):  # round 0 warms both proxies and the model
            order = list(arms) if r % 2 else list(reversed(arms))
            for name in order:
                for max_tokens in (SHORT, LONG):
                    body = {
                        "model": "tiny",
                        "messages": [{"role": "user", "content": f"{PROMPT} ({r})"}],
                        "max_tokens": max_tokens,
                        "temperature": 0,
                        "cache": NO_CACHE,
                    }
                    before = arms[name].cpu_s()
                    got = stream(http[name], body)
                    spent = arms[name].cpu_s() - before
                    if not got.ok:
                        errors.append(f"{name}: {got.error}")
                    elif r:
                        cpu[name][max_tokens] += spent
                        chunks[name][max_tokens] += got.chunks
    out: dict[str, Any] = {"rounds": rounds, "short_max_tokens": SHORT, "long_max_tokens": LONG, "errors": errors[:5]}
    for name in arms:
        extra = chunks[name][LONG] - chunks[name][SHORT]
        slope = (cpu[name][LONG] - cpu[name][SHORT]) * 1000 / extra if extra > 0 else None
        out[name] = {"chunks": chunks[name], "cpu_s": cpu[name], "cpu_ms_per_chunk": slope}
        # /proc counts CPU in clock ticks: two readings per request, each up to one tick off
        tick_s = 1 / os.sysconf("SC_CLK_TCK")
        out[name]["resolution_ms_per_chunk"] = 2 * tick_s * 1000 * rounds * 2 / extra if extra > 0 else None
    if out["bare"]["cpu_ms_per_chunk"] is not None and out["full"]["cpu_ms_per_chunk"] is not None:
        out["plugins_ms_per_chunk"] = out["full"]["cpu_ms_per_chunk"] - out["bare"]["cpu_ms_per_chunk"]
    return out


def block(res: dict[str, Any]) -> str:
    hook, e2e = res["in_process"], res["end_to_end"]
    added_ms = hook["added_us_per_chunk"] / 1000
    env = res["environment"]
    load = f"{env['loadavg_start'][0]:.2f} → {env.get('loadavg_end', ['?'])[0]:.2f}"
    lines = [
        f"Run {res['date']} with `{res['command']}`, litellm {env['litellm_version']}, {env['cpu_count']} CPUs, "
        f"load average {load}.",
        "",
        *common.table(
            ("measured", "bare", "with our plugins", "ours add"),
            [
                (
                    "in-process, µs per chunk (served_by's iterator hook)",
                    common.num(hook["bare_us_per_chunk"], ".3f"),
                    common.num(hook["hooked_us_per_chunk"], ".3f"),
                    common.num(hook["added_us_per_chunk"], ".3f"),
                ),
                (
                    "proxy CPU, ms per chunk (slope, real model)",
                    common.num(e2e["bare"]["cpu_ms_per_chunk"], ".3f"),
                    common.num(e2e["full"]["cpu_ms_per_chunk"], ".3f"),
                    common.num(e2e.get("plugins_ms_per_chunk"), ".3f", signed=True),
                ),
            ],
        ),
        "",
        *common.goals_table(
            [
                {
                    "goal": f"our per-chunk hook adds ≤ {GOAL_MS} ms",
                    "value": f"{added_ms:.5f} ms",
                    "met": added_ms <= GOAL_MS,
                }
            ]
        ),
        "",
        f"LiteLLM's own floor: {common.num(e2e['bare']['cpu_ms_per_chunk'], '.3f')} ms of proxy CPU per streamed "
        "chunk with no plugin of ours. The end-to-end figures are process CPU read in clock ticks, good to "
        f"±{common.num(e2e['bare'].get('resolution_ms_per_chunk'), '.3f')} ms per chunk at this run's size; the "
        "in-process figure is the exact cost of our code.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    options = common.Options(__doc__ or "", "stream_cpu", quick="fewer rounds and chunks")
    options.count("--rounds", 12, 2, "interleaved end-to-end rounds")
    options.count("--chunks", 200_000, 20_000, "chunks per in-process round")
    args = options.parse(sys.argv[1:] if argv is None else argv)
    with common.scratch("stream_cpu") as tmp, recorded("bench/stream_cpu.py", sys.argv[1:]) as res:
        res["in_process"] = hook_cost_us(int(args.chunks), 7)
        res["end_to_end"] = proxy_slope(int(args.rounds), tmp)
    common.report("stream_cpu", args, res, block(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
