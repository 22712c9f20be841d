"""What a frozen or dead Redis costs a request, and how soon caching resumes once it is back. One run.

    .venv/bin/python bench/redis.py [--requests 20] [--write-readme]

The real proxy with the config `ask serve` derives when REDIS_HOST is set (`stack_config.with_redis`, socket
timeouts of `REDIS_TIMEOUT_S`), in front of the emulated Ollama, with a real redis-server. Phases, in order, each
`--requests` cache misses (unique prompts) to fast-3b, one at a time: Redis healthy; Redis frozen (SIGSTOP: its
socket accepts and nothing answers); Redis killed. Then Redis is started again and a new prompt is sent every
0.2 s until one is cached in it: the seconds that took. Two arms: the proxy's environment as `ask serve` sets it
(`stack_config.REDIS_ENV`), and LiteLLM's own circuit-breaker recovery (60 s). Goals: a frozen Redis adds at
most 2 × REDIS_TIMEOUT_S to the median request; caching resumes within 5 s with `ask serve`'s environment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ask_cli import stack_config  # noqa: E402
from bench.common import CannotRun, Options, goals_table, num, report, scratch, serve, table  # noqa: E402
from harness.fake_ollama import FakeOllama  # noqa: E402
from harness.machine import recorded  # noqa: E402
from harness.redis_server import Redis  # noqa: E402
from harness.stack import CONFIG, Proxy, free_port, isolated_env  # noqa: E402

RESUME_GOAL_S = 5.0
RESUME_GIVE_UP_S = 90.0
ARMS = {"ask serve's environment": dict(stack_config.REDIS_ENV), "LiteLLM's defaults": {}}


@contextlib.contextmanager
def arm_running(tmp: Path, fake: FakeOllama, breaker_env: dict[str, str]) -> Iterator[tuple[Proxy, Redis]]:
    with contextlib.ExitStack() as stop:
        redis = Redis(free_port()).start()
        stop.callback(redis.stop)
        config = stack_config.write_private(stack_config.with_redis(stack_config.load(CONFIG)), tmp / "config.yaml")
        env = isolated_env(tmp, OLLAMA_API_BASE=fake.url, REDIS_HOST="127.0.0.1", REDIS_PORT=str(redis.port))
        for name in stack_config.REDIS_ENV:
            env.pop(name, None)
        env.update(breaker_env)
        proxy = serve(stop, Proxy(env, free_port(), tmp / "proxy.log", config))
        yield proxy.wait(), redis


def timed_misses(proxy: Proxy, count: int) -> list[float]:
    """Seconds per request, each a new prompt (a cache miss), every one required to answer."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        resp = proxy.chat("fast-3b", f"redis bench {uuid.uuid4().hex}")
        times.append(time.perf_counter() - started)
        if resp.status_code != 200:
            raise CannotRun(f"a request failed with {resp.status_code}: {resp.text[:200]}")
    return times


def resume_s(proxy: Proxy, redis: Redis) -> float | None:
    """Seconds from Redis started again until an answer is cached in it; None past RESUME_GIVE_UP_S."""
    redis.start()
    back = time.monotonic()
    while time.monotonic() - back < RESUME_GIVE_UP_S:
        proxy.chat("fast-3b", f"redis is back {uuid.uuid4().hex}")
        if redis.cache_keys():
            return round(time.monotonic() - back, 2)
        time.sleep(0.2)
    return None


def phases(times: dict[str, list[float]]) -> dict[str, Any]:
    return {
        name: {
            "median_s": round(statistics.median(t), 4),
            "max_s": round(max(t), 4),
            "times_s": [round(x, 4) for x in t],
        }
        for name, t in times.items()
    }


def run(requests: int, tmp: Path, res: dict[str, Any]) -> None:
    res.update(requests=requests, redis_timeout_s=stack_config.REDIS_TIMEOUT_S, arms={})
    with FakeOllama() as fake:
        for n, (arm, breaker_env) in enumerate(ARMS.items()):
            home = tmp / f"arm{n}"
            home.mkdir()
            with arm_running(home, fake, breaker_env) as (proxy, redis):
                timed_misses(proxy, 3)  # warm-up: the first requests load the model and open connections
                times = {"healthy": timed_misses(proxy, requests)}
                assert redis.proc is not None
                os.kill(redis.proc.pid, signal.SIGSTOP)
                try:
                    times["frozen"] = timed_misses(proxy, requests)
                finally:
                    os.kill(redis.proc.pid, signal.SIGCONT)
                redis.stop()
                times["down"] = timed_misses(proxy, requests)
                res["arms"][arm] = {"environment": breaker_env, **phases(times), "resume_s": resume_s(proxy, redis)}
    ours = res["arms"]["ask serve's environment"]
    added = ours["frozen"]["median_s"] - ours["healthy"]["median_s"]
    resumed = ours["resume_s"]
    res["goals"] = [
        {
            "goal": f"a frozen Redis adds ≤ {2 * stack_config.REDIS_TIMEOUT_S:g} s to the median request",
            "value": round(added, 3),
            "met": added <= 2 * stack_config.REDIS_TIMEOUT_S,
        },
        {
            "goal": f"caching resumes ≤ {RESUME_GOAL_S:g} s after Redis is back (ask serve's environment)",
            "value": resumed,
            "met": resumed is not None and resumed <= RESUME_GOAL_S,
        },
    ]
    res["ok"] = all(g["met"] for g in res["goals"])


def block(res: dict[str, Any]) -> str:
    head = ("arm", "healthy median s", "frozen median s", "frozen max s", "down median s", "resumes after s")
    rows = [
        [
            f"`{arm}`",
            num(a["healthy"]["median_s"], ".3f"),
            num(a["frozen"]["median_s"], ".3f"),
            num(a["frozen"]["max_s"], ".3f"),
            num(a["down"]["median_s"], ".3f"),
            num(a["resume_s"], ".1f") if a["resume_s"] is not None else f"> {RESUME_GIVE_UP_S:g}",
        ]
        for arm, a in res["arms"].items()
    ]
    env = res["environment"]
    return "\n".join(
        [
            f"Run {res['date']} with `{res['command']}`, litellm {env['litellm_version']}, {env['cpu_count']} CPUs; "
            f"{res['requests']} cache misses per phase, one at a time, Redis socket timeouts "
            f"{res['redis_timeout_s']:g} s.",
            "",
            *table(head, rows),
            "",
            *goals_table(res["goals"]),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = Options(__doc__, "redis")
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse(argv)
    with scratch("redis") as tmp, recorded("bench/redis.py", argv) as res:
        run(args.requests, tmp, res)
    report("redis", args, res, block(res))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
