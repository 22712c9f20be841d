"""Does the council cost more than its slowest member plus its chairman? Members must run concurrently.

    .venv/bin/python bench/council.py [--rounds 5] [--delay 1.0] [--write-readme]

One run: the emulated Ollama (in-process) with every qwen3.5:9b request delayed by `--delay` seconds (both
`fast-9b` members and the `think-9b` chairman), the real proxy with the project's config, unused backends at
closed ports. Each round asks `council` a unique question and compares the client's wall time with
(slowest member + chairman) as the fake measured them (request start to end). Goal: median ratio ≤ 1.15.
Sequential members would give about 1.5 with two members and an equal chairman.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import Options, report, table  # noqa: E402
from harness.fake_ollama import FakeOllama  # noqa: E402
from harness.machine import now, package_version  # noqa: E402
from harness.stack import Proxy, closed_port_url, running_proxy  # noqa: E402

TAG = "qwen3.5:9b"  # fast-9b (the members) and think-9b (the chairman)
GOAL_RATIO = 1.15


def one_round(proxy: Proxy, fake: FakeOllama, i: int) -> dict[str, float]:
    fake.clear_requests()
    started = time.perf_counter()
    resp = proxy.chat("council", f"council benchmark question {i} {time.time()}")
    wall = time.perf_counter() - started
    resp.raise_for_status()
    requests = fake.chat_requests(TAG)
    members = [r for r in requests if (r.body or {}).get("think") is False]
    [chairman] = [r for r in requests if (r.body or {}).get("think") is True]
    member_s = [(r.ts_end or 0) - r.ts_start for r in members]
    chairman_s = (chairman.ts_end or 0) - chairman.ts_start
    overlap = min(r.ts_end or 0 for r in members) - max(r.ts_start for r in members)
    reference = max(member_s) + chairman_s
    return {
        "wall_s": round(wall, 4),
        "slowest_member_s": round(max(member_s), 4),
        "chairman_s": round(chairman_s, 4),
        "members_overlap_s": round(overlap, 4),
        "reference_s": round(reference, 4),
        "ratio": round(wall / reference, 4),
    }


def run(rounds: int, delay: float) -> dict:
    with (
        FakeOllama() as fake,
        tempfile.TemporaryDirectory() as tmp,
        running_proxy(
            Path(tmp),
            OLLAMA_API_BASE=fake.url,
            TINY_API_BASE=closed_port_url("/v1"),
            LLAMA_SWAP_API_BASE=closed_port_url("/v1"),
        ) as proxy,
    ):
        one_round(proxy, fake, -1)  # warm-up: first-request costs in the proxy are not the council's
        fake.set_fault(TAG, "slow", delay_s=delay)
        results = [one_round(proxy, fake, i) for i in range(rounds)]
    ratio = statistics.median(r["ratio"] for r in results)
    return {
        "date": now(),
        "command": " ".join(sys.argv),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "litellm": package_version("litellm"),
        "delay_s": delay,
        "rounds": results,
        "median_ratio": round(ratio, 4),
        "median_wall_s": round(statistics.median(r["wall_s"] for r in results), 4),
        "median_reference_s": round(statistics.median(r["reference_s"] for r in results), 4),
        "goal_ratio": GOAL_RATIO,
        "ok": ratio <= GOAL_RATIO,
    }


def block(result: dict) -> str:
    verdict = "meets" if result["ok"] else "MISSES"
    row = [f"{result['median_wall_s']:.3f} s", f"{result['median_reference_s']:.3f} s", f"{result['median_ratio']:.3f}"]
    head = ("median wall", "median slowest member + chairman", "median ratio", "goal")
    lines = [
        f"Run {result['date']} with `{result['command']}`, litellm {result['litellm']}, {result['cpus']} CPUs, "
        f"every 9B request delayed {result['delay_s']:g} s, {len(result['rounds'])} rounds:",
        "",
        *table(head, [[*row, f"≤ {result['goal_ratio']} ({verdict})"]]),
    ]
    return "\n".join(lines)


def main() -> int:
    parser = Options(__doc__, "council")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--delay", type=float, default=1.0, help="seconds every 9B request is delayed")
    args = parser.parse(sys.argv[1:])
    result = run(args.rounds, args.delay)
    report("council", args, result, block(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
