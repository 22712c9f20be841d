"""How long does a user wait for each Ollama tier's cold load, through the proxy, and does its timeout allow it?

    .venv/bin/python bench/loads.py [--load-gb-per-s 2.0] [--rounds 1] [--tiers a,b] [--no-budget] [--write-readme]

For every Ollama tier in litellm-config.yaml, through the real proxy (RAM_BUDGET_GB=64, so the budget plugin
refuses nothing): unload every model (Ollama's own way: an empty `/api/generate` with `keep_alive: 0` for each
model `/api/ps` lists, then wait until it lists none), then one streamed request (cold: the model loads first,
and Ollama sends nothing meanwhile), then a second (warm). Cold − warm TTFT is the load the user waits for.

Backends: the emulated Ollama (in-process, scheduling as Ollama does), whose load takes resident GB /
`--load-gb-per-s` (default 2 GB/s, an SSD's cold sequential read; the 24 GB Mac it emulates); its own
`loaded` event's `load_s` is shown beside. Then, when a real Ollama answers at OLLAMA_API_BASE (default
http://127.0.0.1:11434), the same against it, for the tiers whose model it has pulled (its models are unloaded
first: run it when nothing else needs them). Beside each figure: the tier's `timeout` / `stream_timeout` in
the yaml, and the stream timeout a cold attempt gets from plugins/ram_budget.py (stream_timeout + resident GB /
`ram_budget.load_gb_per_s` + its margin), the slowest load speed that still fits it (resident GB / that
timeout), and whether the cold request was demoted (`X-Demoted-From`). `--no-budget` runs the proxy with
RAM_BUDGET=off (no stretch), to see what a load longer than the tier's stream_timeout does without it.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import CannotRun, Options, num, project_tiers, report, scratch, table  # noqa: E402
from contract import DEMOTED_FROM, SERVED_BY  # noqa: E402
from contract.tiers import Tier  # noqa: E402
from harness.fake_ollama import FakeOllama  # noqa: E402
from harness.machine import ollama_version, recorded  # noqa: E402
from harness.stack import CONFIG, Proxy, closed_port_url, running_proxy  # noqa: E402
from harness.timing import NO_CACHE, Timed, stream  # noqa: E402

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # importing the plugin imports litellm: no fetch
from plugins.ram_budget import LOADING_MARGIN_S, PROBE_TTL_S, Policy  # noqa: E402

DEFAULT_OLLAMA = "http://127.0.0.1:11434"
UNLOAD_WAIT_S = 60.0


def ollama_tiers(only: str = "") -> list[Tier]:
    tiers = [t for t in project_tiers() if t.is_ollama]
    wanted = [n for n in only.split(",") if n]
    if unknown := set(wanted) - {t.name for t in tiers}:
        raise SystemExit(f"loads: not an Ollama tier: {', '.join(sorted(unknown))}")
    return [t for t in tiers if not wanted or t.name in wanted]


def yaml_timeouts() -> dict[str, tuple[float | None, float | None]]:
    """Each tier's (timeout, stream_timeout) as litellm-config.yaml sets them."""
    config = yaml.safe_load(CONFIG.read_text())
    return {
        e["model_name"]: (e["litellm_params"].get("timeout"), e["litellm_params"].get("stream_timeout"))
        for e in config["model_list"]
    }


def budget_policy() -> Policy:
    return Policy.of(yaml.safe_load(CONFIG.read_text()).get("ram_budget"))


def loaded_models(base: str) -> list[str]:
    resp = httpx.get(f"{base}/api/ps", timeout=10, trust_env=False)
    resp.raise_for_status()
    return [m["name"] for m in resp.json().get("models") or []]


def pulled_models(base: str) -> set[str]:
    resp = httpx.get(f"{base}/api/tags", timeout=10, trust_env=False)
    resp.raise_for_status()
    return {m["name"] for m in resp.json().get("models") or []}


def unload_all(base: str) -> None:
    """Ollama's unload (works on a real one too): keep_alive 0 with nothing to say, then /api/ps empty."""
    for name in loaded_models(base):
        httpx.post(f"{base}/api/generate", json={"model": name, "keep_alive": 0}, timeout=30, trust_env=False)
    deadline = time.monotonic() + UNLOAD_WAIT_S
    while loaded := loaded_models(base):
        if time.monotonic() > deadline:
            raise CannotRun(f"{base} still lists {', '.join(loaded)} {UNLOAD_WAIT_S:g} s after unloading")
        time.sleep(0.1)
    time.sleep(PROBE_TTL_S + 0.2)  # the budget plugin trusts /api/ps this long: let it see nothing resident


def ask(proxy: Proxy, tier: str) -> Timed:
    body = {
        "model": tier,
        "messages": [{"role": "user", "content": f"load benchmark {uuid.uuid4().hex}: say hello."}],
        "cache": NO_CACHE,
    }
    return stream(proxy.client, body)


def measure(proxy: Proxy, base: str, tiers: list[Tier], fake: FakeOllama | None) -> list[dict[str, Any]]:
    """One cold and one warm request per tier, everything unloaded before each tier's cold one."""
    out = []
    for tier in tiers:
        unload_all(base)
        seen = len(fake.events()) if fake else 0
        cold, warm = ask(proxy, tier.name), ask(proxy, tier.name)
        mine = [e for e in fake.events()[seen:] if e["model"] == tier.primary.model] if fake else []
        for t in (cold, warm):
            if not t.ok:
                raise CannotRun(f"{tier.name}: {t.error}")
        out.append(
            {
                "tier": tier.name,
                "cold_ttft_s": round((cold.ttft_ms or 0) / 1000, 4),
                "warm_ttft_s": None if warm.headers.get(DEMOTED_FROM) else round((warm.ttft_ms or 0) / 1000, 4),
                # a demoted cold request never got its model: there is no load to tell from it
                "load_wait_s": None
                if cold.headers.get(DEMOTED_FROM) or warm.headers.get(DEMOTED_FROM)
                else round(((cold.ttft_ms or 0) - (warm.ttft_ms or 0)) / 1000, 4),
                "backend_load_s": [e["load_s"] for e in mine if e["event"] == "loaded"] if fake else None,
                "backend_aborted_after_s": [e["after_s"] for e in mine if e["event"] == "load_aborted"],
                "cold_served_by": cold.headers.get(SERVED_BY),
                "cold_demoted_from": cold.headers.get(DEMOTED_FROM),
                "warm_demoted_from": warm.headers.get(DEMOTED_FROM),
            }
        )
    return out


def warm_up(proxy: Proxy, tiers: list[Tier]) -> None:
    """The proxy's own first-request costs (first call of a provider, the budget's first probe) are not a load's:
    one discarded request to the smallest tier first."""
    if not ask(proxy, min(tiers, key=lambda t: t.resident_gb or 0).name).ok:
        raise CannotRun("the warm-up request failed")


@contextlib.contextmanager
def proxy_at(tmp: Path, base: str, budget: bool) -> Iterator[Proxy]:
    tmp.mkdir(parents=True, exist_ok=True)
    with running_proxy(
        tmp,
        OLLAMA_API_BASE=base,
        TINY_API_BASE=closed_port_url("/v1"),
        LLAMA_SWAP_API_BASE=closed_port_url("/v1"),
        LITELLM_LOG="ERROR",
        RAM_BUDGET_GB="64",
        RAM_BUDGET="on" if budget else "off",
    ) as proxy:
        yield proxy


def summarize(runs: list[list[dict[str, Any]]], tiers: list[Tier], policy: Policy) -> list[dict[str, Any]]:
    """Per tier: medians over the rounds, beside its timeouts and what the budget plugin stretches them to."""
    timeouts = yaml_timeouts()
    by_tier = {t.name: t for t in tiers}
    rows = []
    for name in [r["tier"] for r in runs[0]]:
        samples = [r for run in runs for r in run if r["tier"] == name]
        gb = by_tier[name].resident_gb or 0.0
        timeout, stream_timeout = timeouts[name]
        cold_stream = stream_timeout or timeout or 60
        if policy.enabled:
            cold_stream += gb / max(policy.load_gb_per_s, 0.1) + LOADING_MARGIN_S

        def median(key: str, samples: list[dict[str, Any]] = samples) -> float | None:
            values = [s[key] for s in samples if s[key] is not None]
            return round(statistics.median(values), 4) if values else None

        loads = [x for s in samples for x in s["backend_load_s"] or []]
        aborted = [x for s in samples for x in s["backend_aborted_after_s"]]
        rows.append(
            {
                "tier": name,
                "model": by_tier[name].primary.model,
                "resident_gb": gb,
                "cold_ttft_s": median("cold_ttft_s"),
                "warm_ttft_s": median("warm_ttft_s"),
                "load_wait_s": median("load_wait_s"),
                "backend_load_s": round(statistics.median(loads), 4) if loads else None,
                "backend_aborted_after_s": aborted,
                "timeout_s": timeout,
                "stream_timeout_s": stream_timeout,
                "cold_stream_timeout_s": round(cold_stream, 2),
                "slowest_gb_per_s": round(gb / cold_stream, 3),
                "demoted": sorted({s["cold_demoted_from"] for s in samples if s["cold_demoted_from"]}),
                "served_by": sorted({s["cold_served_by"] or "?" for s in samples}),
            }
        )
    return rows


def run(args: Any, tmp: Path, res: dict[str, Any]) -> None:
    policy, tiers = budget_policy()._replace(enabled=not args.no_budget), ollama_tiers(args.tiers)
    res.update(
        load_gb_per_s=args.load_gb_per_s,
        budget=policy.enabled,
        budget_load_gb_per_s=policy.load_gb_per_s,
        loading_margin_s=LOADING_MARGIN_S,
        rounds=args.rounds,
        backends={},
    )
    with (
        FakeOllama(load_gb_per_s=args.load_gb_per_s) as fake,
        proxy_at(tmp / "emulated", fake.url, policy.enabled) as proxy,
    ):
        warm_up(proxy, tiers)
        runs = [measure(proxy, fake.url, tiers, fake) for _ in range(args.rounds)]
        res["backends"]["emulated"] = {"url": "in-process", "tiers": summarize(runs, tiers, policy), "runs": runs}
    base = os.environ.get("OLLAMA_API_BASE") or DEFAULT_OLLAMA
    version = ollama_version(base)
    if version is None:
        res["backends"]["ollama"] = {"url": base, "skipped": f"no Ollama answered at {base}/api/version"}
        return
    have = pulled_models(base)
    real = [t for t in tiers if t.primary.model in have]
    missing = [t.name for t in tiers if t not in real]
    if not real:
        res["backends"]["ollama"] = {"url": base, "version": version, "skipped": "none of the tiers' models pulled"}
        return
    with proxy_at(tmp / "ollama", base, policy.enabled) as proxy:
        warm_up(proxy, real)
        runs = [measure(proxy, base, real, None) for _ in range(args.rounds)]
    res["backends"]["ollama"] = {
        "url": base,
        "version": version,
        "not_pulled": missing,
        "tiers": summarize(runs, real, policy),
        "runs": runs,
    }


def load_cell(t: dict[str, Any]) -> str:
    """The backend's own load time, and any load a timeout cut (the emulated Ollama's events)."""
    cells = [f"{t['backend_load_s']:.2f}"] if t["backend_load_s"] is not None else []
    cells += [f"cut at {x:.1f}" for x in t["backend_aborted_after_s"]]
    return ", ".join(cells) or "-"


def block(res: dict[str, Any]) -> str:
    env = res["environment"]
    head = (
        "tier",
        "GB",
        "cold TTFT s",
        "warm TTFT s",
        "load waited (cold − warm) s",
        "backend's load s",
        "timeout / stream_timeout s",
        "cold stream timeout s",
        "slowest load it allows GB/s",
        "cold demoted",
    )
    out = [
        f"Run {res['date']} with `{res['command']}`, litellm {env['litellm_version']}, {env['cpu_count']} CPUs, "
        f"load average {env['loadavg_start'][0]:.2f} → {env['loadavg_end'][0]:.2f}, {res['rounds']} round(s), "
        "medians. "
        + (
            f"Cold stream timeout: stream_timeout + GB / {res['budget_load_gb_per_s']:g} (`ram_budget.load_gb_per_s`) "
            f"+ {res['loading_margin_s']:g} s, as plugins/ram_budget.py stretches it."
            if res["budget"]
            else "`RAM_BUDGET=off`: the budget plugin is out, a cold attempt keeps the tier's stream_timeout."
        ),
    ]
    for key, backend in res["backends"].items():
        if key == "emulated":
            title = f"**Emulated Ollama** (in-process), loading at {res['load_gb_per_s']:g} GB/s (an assumption)"
        else:
            title = f"**Real Ollama** {backend.get('version') or ''} at {backend['url']}".replace("  ", " ")
        if "skipped" in backend:
            out += ["", f"{title}: skipped: {backend['skipped']} (this path is untested here)."]
            continue
        rows = [
            [
                f"`{t['tier']}` ({t['model']})",
                f"{t['resident_gb']:g}",
                num(t["cold_ttft_s"]),
                num(t["warm_ttft_s"], ".3f"),
                num(t["load_wait_s"]),
                load_cell(t),
                f"{t['timeout_s']:g} / {t['stream_timeout_s']:g}",
                f"{t['cold_stream_timeout_s']:.1f}",
                f"{t['slowest_gb_per_s']:.3f}",
                ", ".join(t["demoted"]) or "no",
            ]
            for t in backend["tiers"]
        ]
        out += ["", f"{title}:", "", *table(head, rows)]
        if backend.get("not_pulled"):
            out += ["", f"Not pulled there, so not measured: {', '.join(backend['not_pulled'])}."]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = Options(__doc__, "loads")
    parser.add_argument("--load-gb-per-s", type=float, default=2.0, help="the emulated Ollama's load speed")
    parser.add_argument("--rounds", type=int, default=1, help="cold + warm pairs per tier")
    parser.add_argument("--no-budget", action="store_true", help="RAM_BUDGET=off: cold timeouts not stretched")
    parser.add_argument("--tiers", default="", help="comma-separated tiers (default: every Ollama tier)")
    args = parser.parse(argv)
    with scratch("loads") as tmp, recorded("bench/loads.py", argv) as res:
        run(args, tmp, res)
    report("loads", args, res, block(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
