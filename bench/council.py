"""What does the council cost on one Ollama, which runs one request at a time per model? Three arms, one run.

    .venv/bin/python bench/council.py [--rounds 5] [--delay 1.0] [--write-readme]

Each arm is the real proxy in front of its own emulated Ollama (in-process, scheduling as Ollama does: one
FIFO, `num_parallel` slots per runner, one slot for the qwen3.5 family whatever OLLAMA_NUM_PARALLEL says):
- `as configured`: the project's yaml (members [fast-9b, fast-9b], chairman think-9b: one qwen3.5:9b runner),
  Ollama with num_parallel 1, as `ask service install` sets it;
- `OLLAMA_NUM_PARALLEL=2`: the same, Ollama with num_parallel 2 (sched.go load still gives qwen35 one slot);
- `mixed members`: a derived yaml with members [fast-9b, fast-3b]: two runners, both resident, so the members
  can overlap.
Every member and chairman request is delayed `--delay` s by the fake's `slow` fault (it strikes while the
request holds its slot). Arms take turns within each round, their order rotating. Per round: the client's wall
time; each part's own time as the fake served it (from when it held its slot, i.e. after any wait behind the
other member, to its end); (slowest member + chairman), what concurrent members would cost, and (sum of the
members + chairman), what serial members cost. Goals: `as configured` wall ≤ 1.15 × (sum + chairman) (the
council adds nothing beyond its serial members); `mixed members` wall ≤ 1.15 × (slowest + chairman).
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import Options, goals_table, report, scratch, serve, table  # noqa: E402
from harness.fake_ollama import SINGLE_SLOT_FAMILIES, FakeOllama, Recorded, spec_for  # noqa: E402
from harness.machine import recorded  # noqa: E402
from harness.stack import CONFIG, Proxy, derived_config, free_port, isolated_env  # noqa: E402

NINE_B = "qwen3.5:9b"  # fast-9b (members) and think-9b (the chairman): one blob, one num_ctx, one runner
THREE_B = "llama3.2:3b"  # fast-3b
GOAL_RATIO = 1.15


@dataclass
class Arm:
    name: str
    num_parallel: int
    members: list[str]
    tags: tuple[str, ...]  # the models its council reaches, each delayed
    meaning: str


ARMS = (
    Arm("as configured", 1, ["fast-9b", "fast-9b"], (NINE_B,), "the project's yaml; Ollama num_parallel 1"),
    Arm("OLLAMA_NUM_PARALLEL=2", 2, ["fast-9b", "fast-9b"], (NINE_B,), "the same yaml; Ollama num_parallel 2"),
    Arm("mixed members", 1, ["fast-9b", "fast-3b"], (NINE_B, THREE_B), "members [fast-9b, fast-3b]; num_parallel 1"),
)


def own_times(requests: list[Recorded], fake: FakeOllama) -> dict[int, tuple[float, float]]:
    """Each request's (service start, end): on a one-slot runner a request is served only once the one before
    it on that model has ended (FIFO), so its own time starts then; elsewhere at its arrival."""
    out: dict[int, tuple[float, float]] = {}
    by_model: dict[str, list[Recorded]] = {}
    for r in requests:
        by_model.setdefault(r.model or "", []).append(r)
    for model, recs in by_model.items():
        spec = spec_for(model)
        slots = 1 if spec.family in SINGLE_SLOT_FAMILIES else fake.memory()["num_parallel"]
        previous_end = 0.0
        for r in sorted(recs, key=lambda r: r.ts_end or 0):
            start = max(r.ts_start, previous_end) if slots == 1 else r.ts_start
            out[id(r)] = (start, r.ts_end or 0)
            previous_end = r.ts_end or 0
    return out


def slot_waits(fake: FakeOllama) -> int:
    return sum(1 for e in fake.events() if e["event"] == "queued" and e.get("waiting_for") == "slot")


def one_round(proxy: Proxy, fake: FakeOllama, i: int) -> dict[str, float]:
    fake.clear_requests()
    waits_before = slot_waits(fake)
    started = time.perf_counter()
    resp = proxy.chat("council", f"council benchmark question {i} {time.time()}")
    wall = time.perf_counter() - started
    resp.raise_for_status()
    chats = fake.chat_requests()
    [chairman] = [r for r in chats if (r.body or {}).get("think") is True]
    members = [r for r in chats if r is not chairman]
    own = own_times(chats, fake)
    member_s = [own[id(r)][1] - own[id(r)][0] for r in members]
    chairman_s = own[id(chairman)][1] - own[id(chairman)][0]
    slowest, total = max(member_s) + chairman_s, sum(member_s) + chairman_s
    return {
        "wall_s": round(wall, 4),
        "members_s": [round(s, 4) for s in member_s],
        "chairman_s": round(chairman_s, 4),
        # > 0: the members were served at the same time for this long; 0: one after the other
        "slot_waits": slot_waits(fake) - waits_before,  # requests that queued for a busy runner's slot
        "members_overlap_s": round(min(r.ts_end or 0 for r in members) - max(own[id(r)][0] for r in members), 4),
        "slowest_plus_chairman_s": round(slowest, 4),
        "sum_plus_chairman_s": round(total, 4),
        "ratio_to_slowest": round(wall / slowest, 4),
        "ratio_to_sum": round(wall / total, 4),
    }


@contextlib.contextmanager
def arms_running(tmp: Path) -> Iterator[list[tuple[Arm, FakeOllama, Proxy]]]:
    """Each arm's fake Ollama and proxy, the proxies starting concurrently; all stopped whatever happens."""
    with contextlib.ExitStack() as stop:
        running = []
        for n, arm in enumerate(ARMS):
            fake = stop.enter_context(FakeOllama(num_parallel=arm.num_parallel))
            home = tmp / f"arm{n}"
            home.mkdir()
            config = CONFIG  # the yaml as is, unless the arm changes the members
            model_list = yaml.safe_load(CONFIG.read_text())["model_list"]
            if council_params(model_list)["members"] != arm.members:
                council_params(model_list)["members"] = arm.members
                config = derived_config(home / "config.yaml", extra={"model_list": model_list})
            env = isolated_env(home, OLLAMA_API_BASE=fake.url)
            proxy = serve(stop, Proxy(env, free_port(), home / "proxy.log", config))
            running.append((arm, fake, proxy))
        for _, _, proxy in running:
            proxy.wait()
        yield running


def council_params(model_list: list[dict[str, Any]]) -> dict[str, Any]:
    """The council deployment's litellm_params in a yaml's model_list."""
    return next(e["litellm_params"] for e in model_list if e["model_name"] == "council")


def summary(rounds: list[dict[str, Any]]) -> dict[str, float]:
    def median(key: str) -> float:
        return round(statistics.median(r[key] for r in rounds), 4)

    keys = ("wall_s", "slowest_plus_chairman_s", "sum_plus_chairman_s", "ratio_to_slowest", "ratio_to_sum")
    return {
        **{f"median_{k}": median(k) for k in keys},
        "median_members_overlap_s": median("members_overlap_s"),
        "slot_waits": sum(r["slot_waits"] for r in rounds),
    }


def run(rounds: int, delay: float, tmp: Path, res: dict[str, Any]) -> None:
    res.update(delay_s=delay, goal_ratio=GOAL_RATIO, arms={})
    with arms_running(tmp) as running:
        for arm, fake, proxy in running:
            one_round(proxy, fake, -1)  # warm-up: loads the models; first-request costs are not the council's
            for tag in arm.tags:
                fake.set_fault(tag, "slow", delay_s=delay)
        per_arm: dict[str, list[dict[str, Any]]] = {arm.name: [] for arm, _, _ in running}
        for i in range(rounds):
            turn = running[i % len(running) :] + running[: i % len(running)]
            for arm, fake, proxy in turn:
                per_arm[arm.name].append(one_round(proxy, fake, i))
        for arm, fake, _ in running:
            res["arms"][arm.name] = {
                "members": arm.members,
                "num_parallel": arm.num_parallel,
                "meaning": arm.meaning,
                **summary(per_arm[arm.name]),
                "loads": fake.memory()["loads"],
                "rounds": per_arm[arm.name],
            }
    configured, mixed = res["arms"]["as configured"], res["arms"]["mixed members"]
    two = res["arms"]["OLLAMA_NUM_PARALLEL=2"]
    res["goals"] = [
        goal("`as configured`: wall ≤ 1.15 × (sum of members + chairman)", configured["median_ratio_to_sum"]),
        goal("`mixed members`: wall ≤ 1.15 × (slowest member + chairman)", mixed["median_ratio_to_slowest"]),
        goal("`OLLAMA_NUM_PARALLEL=2`: still serial, wall ≤ 1.15 × (sum + chairman)", two["median_ratio_to_sum"]),
    ]
    res["ok"] = all(g["met"] for g in res["goals"])


def goal(text: str, value: float) -> dict[str, Any]:
    return {"goal": text, "value": value, "met": value <= GOAL_RATIO}


def block(res: dict[str, Any]) -> str:
    head = (
        "arm",
        "members",
        "median wall s",
        "slowest member + chairman s",
        "sum of members + chairman s",
        "wall / (slowest + chairman)",
        "wall / (sum + chairman)",
        "members overlap s",
        "slot waits",
    )
    rows = [
        [
            f"`{name}`",
            ", ".join(a["members"]),
            f"{a['median_wall_s']:.3f}",
            f"{a['median_slowest_plus_chairman_s']:.3f}",
            f"{a['median_sum_plus_chairman_s']:.3f}",
            f"{a['median_ratio_to_slowest']:.3f}",
            f"{a['median_ratio_to_sum']:.3f}",
            f"{a['median_members_overlap_s']:.3f}",
            f"{a['slot_waits']} in {len(a['rounds'])}",
        ]
        for name, a in res["arms"].items()
    ]
    env = res["environment"]
    n = len(next(iter(res["arms"].values()))["rounds"])
    return "\n".join(
        [
            f"Run {res['date']} with `{res['command']}`, litellm {env['litellm_version']}, {env['cpu_count']} CPUs, "
            f"load average {env['loadavg_start'][0]:.2f} → {env['loadavg_end'][0]:.2f}; every member and chairman "
            f"request delayed {res['delay_s']:g} s, {n} interleaved rounds, medians. Members overlap: how long both "
            "were being served at once (0: one after the "
            "other); slot waits: requests the fake queued behind a busy runner's only slot.",
            "",
            *table(head, rows),
            "",
            *goals_table(res["goals"]),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = Options(__doc__, "council")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--delay", type=float, default=1.0, help="seconds every member and chairman request waits")
    args = parser.parse(argv)
    with scratch("council") as tmp, recorded("bench/council.py", argv) as res:
        run(args.rounds, args.delay, tmp, res)
    report("council", args, res, block(res))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
