"""The RAM budget through the real proxy, against the emulated Ollama's scheduler: what a 24 GB laptop's owner
notices is which model answered, why one was not loaded, and that nothing was loaded into swap.

The emulated machine has room for everything (48 GB, 4 held by the OS), so any unload here is the budget's
(20 GB, `RAM_BUDGET_GB`), never Ollama's own eviction.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from contract import budget as budget_state
from contract import no_cache
from harness.fake_ollama import DEFAULT_MODELS, FakeOllama
from harness.fake_openai import FakeOpenAI
from harness.stack import CONFIG, Proxy, running_proxy

NINE_B, CODER, HUGE = "qwen3.5:9b", "qwen3-coder:30b", "llama3.3:70b"
BUDGET_GB = 20.0
SWITCH_WAIT_S = 6.0


def config_with_budget(path: Path) -> Path:
    """The project's yaml with a short switch wait, a fast-3b whose warm stream timeout is 2 s, and a 70B tier
    that cannot fit the budget even alone."""
    config = yaml.safe_load(CONFIG.read_text())
    config["ram_budget"].update(switch_wait_s=SWITCH_WAIT_S, poll_s=0.05)
    for entry in config["model_list"]:
        if entry["model_name"] == "fast-3b":
            entry["litellm_params"]["stream_timeout"] = 2
    config["model_list"].append(
        {
            "model_name": "huge-70b",
            "litellm_params": {
                "model": f"ollama_chat/{HUGE}",
                "api_base": "os.environ/OLLAMA_API_BASE",
                "num_ctx": 8192,
                "timeout": 60,
                "stream_timeout": 30,
            },
            "model_info": {"runtime": "ollama", "keep_alive": "5m", "resident_gb": 45},
        }
    )
    config["router_settings"]["fallbacks"].append({"huge-70b": ["fast-3b"]})
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama([*DEFAULT_MODELS, HUGE], total_gb=48, system_gb=4) as fake:
        yield fake


@pytest.fixture(scope="module")
def swap() -> Iterator[FakeOpenAI]:
    with FakeOpenAI("gemma-3-27b-it-qat") as fake:
        yield fake


@pytest.fixture(scope="module")
def budgeted(
    tmp_path_factory: pytest.TempPathFactory, ollama: FakeOllama, swap: FakeOpenAI, tiny_url: str
) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("budget")
    with running_proxy(
        tmp,
        config=config_with_budget(tmp / "config.yaml"),
        OLLAMA_API_BASE=ollama.url,
        LLAMA_SWAP_API_BASE=swap.url,
        TINY_API_BASE=tiny_url,
        RAM_BUDGET_GB=str(BUDGET_GB),
    ) as proxy:
        yield proxy


@pytest.fixture
def fresh(budgeted: Proxy, ollama: FakeOllama, swap: FakeOpenAI) -> Proxy:
    """Nothing loaded, nothing faulted, the emulated machine's counters at zero."""
    ollama.reset()
    swap.reset()
    return budgeted


def in_background(call: Callable[[], Any]) -> Callable[[], Any]:
    """Run `call` on a thread; the returned function joins it and gives its result."""
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", call()), daemon=True)
    thread.start()

    def join() -> Any:
        thread.join(120)
        assert not thread.is_alive(), "the background request never finished"
        return result["value"]

    return join


def until(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def events(ollama: FakeOllama, kind: str, model: str) -> list[dict[str, Any]]:
    return [e for e in ollama.events() if e["event"] == kind and e["model"] == model]


def resident_gb(ollama: FakeOllama, model: str) -> float:
    with httpx.Client() as client:
        models = client.get(f"{ollama.url}/api/ps").json()["models"]
    return next(m["size"] for m in models if m["name"] == model) / 1e9


def test_a_switch_waits_for_the_busy_model_then_unloads_it(fresh: Proxy, ollama: FakeOllama) -> None:
    assert fresh.chat("fast-9b", "load the 9B", cache=no_cache()).headers["x-served-by"] == "fast-9b"
    ollama.set_fault(NINE_B, "slow", delay_s=2.0, times=1)
    busy = in_background(lambda: fresh.chat("fast-9b", "a long digest", cache=no_cache()))
    until(lambda: len(ollama.chat_requests(NINE_B)) == 2, "the 9B busy")
    coder = fresh.chat("coder-30b", "refactor this", cache=no_cache())
    assert busy().headers["x-served-by"] == "fast-9b"
    assert coder.headers["x-served-by"] == "coder-30b" and "x-demoted-from" not in coder.headers
    unload = events(ollama, "unload", NINE_B)
    load = events(ollama, "load_start", CODER)
    assert len(unload) == 1 and len(load) == 1
    answered = ollama.chat_requests(NINE_B)[1]
    assert answered.ts_end is not None and answered.ts_end <= unload[0]["ts"] <= load[0]["ts"]
    assert ollama.memory()["peak_resident_gb"] <= BUDGET_GB


def test_a_switch_still_blocked_at_the_deadline_is_demoted_with_the_reason(fresh: Proxy, ollama: FakeOllama) -> None:
    assert fresh.chat("fast-9b", "load the 9B", cache=no_cache()).headers["x-served-by"] == "fast-9b"
    held = resident_gb(ollama, NINE_B)
    ollama.set_fault(NINE_B, "slow", delay_s=SWITCH_WAIT_S + 4, times=1)
    busy = in_background(lambda: fresh.chat("fast-9b", "a very long digest", cache=no_cache()))
    until(lambda: len(ollama.chat_requests(NINE_B)) == 2, "the 9B busy")
    coder = fresh.chat("coder-30b", "refactor that", cache=no_cache())
    assert busy().status_code == 200
    assert coder.headers["x-served-by"] == "fast-9b" and coder.headers["x-demoted-from"] == "coder-30b"
    record = fresh.demotion(coder.headers["x-litellm-call-id"])
    assert record["failed"][0] == f"coder-30b: would not fit (19.5 GB needed, {held:.1f} GB held by fast-9b, busy)"
    assert events(ollama, "load_start", CODER) == []
    assert "would not fit" in fresh.log_text()


def test_a_model_too_big_even_alone_is_never_loaded(fresh: Proxy, ollama: FakeOllama) -> None:
    resp = fresh.chat("huge-70b", "plan the quarter", cache=no_cache())
    assert resp.headers["x-served-by"] == "fast-3b" and resp.headers["x-demoted-from"] == "huge-70b"
    record = fresh.demotion(resp.headers["x-litellm-call-id"])
    assert record["failed"][0].startswith("huge-70b: would not fit even alone (45.0 GB needed, budget 20.0 GB")
    assert ollama.chat_requests(HUGE) == [] and events(ollama, "load_start", HUGE) == []


def test_heavy_counts_in_the_same_budget(fresh: Proxy, ollama: FakeOllama, swap: FakeOpenAI) -> None:
    assert fresh.chat("heavy", "plan", cache=no_cache()).headers["x-served-by"] == "heavy"
    assert swap.running == "gemma-3-27b-it-qat"
    coder = fresh.chat(
        "coder-30b", "now code", cache=no_cache()
    )  # 19.5 + 17.5 GB would not fit 20: heavy is idle, so it goes
    assert coder.headers["x-served-by"] == "coder-30b"
    assert swap.unloads == 1 and swap.running is None
    assert ollama.memory()["peak_resident_gb"] <= BUDGET_GB


def test_a_model_being_unloaded_is_not_renewed(fresh: Proxy, ollama: FakeOllama, budgeted: Proxy) -> None:
    assert fresh.chat("fast-9b", "load the 9B", cache=no_cache()).headers["x-served-by"] == "fast-9b"
    ollama.set_memory(unload_s=1.5)  # the 9B's runner takes its time to exit
    try:
        coder = in_background(lambda: fresh.chat("coder-30b", "make room", cache=no_cache()))
        state_path = Path(budgeted.env["RAM_BUDGET_STATE"])
        until(lambda: (budget_state.read_state(state_path) or {}).get("unloading"), "the 9B being unloaded")
        renew = fresh.chat(
            "fast-9b", "are you still there?", cache=no_cache()
        )  # waits: sending it would keep the 9B loaded
        assert coder().headers["x-served-by"] == "coder-30b"
    finally:
        ollama.set_memory(unload_s=0.2)
    assert renew.headers["x-served-by"] == "fast-9b"
    first_unload = events(ollama, "unload", NINE_B)[0]["ts"]
    sent = [r for r in ollama.chat_requests(NINE_B) if "still there" in json.dumps(r.body)]
    assert len(sent) == 1 and sent[0].ts_start > first_unload
    assert ollama.memory()["peak_resident_gb"] <= BUDGET_GB


def test_a_cold_load_is_not_cut_by_the_warm_timeout(fresh: Proxy, ollama: FakeOllama) -> None:
    """fast-3b's stream timeout here is 2 s; its 2.9 GB load takes ~3.2 s on this emulated disk."""
    ollama.set_memory(load_gb_per_s=0.9)
    try:
        result = fresh.stream("fast-3b", "a cold start", cache=no_cache())
    finally:
        ollama.set_memory(load_gb_per_s=50.0)
    assert result.headers["x-served-by"] == "fast-3b" and result.error is None
    (loaded,) = events(ollama, "loaded", "llama3.2:3b")
    assert loaded["load_s"] > 2  # longer than the warm timeout it would have been cut by


def test_the_state_file_says_what_is_resident(fresh: Proxy, ollama: FakeOllama, budgeted: Proxy) -> None:
    fresh.chat("fast-9b", "load", cache=no_cache())
    fresh.chat("coder-30b", "switch", cache=no_cache())  # a switch writes the state
    state = budget_state.read_state(Path(budgeted.env["RAM_BUDGET_STATE"]))
    assert state is not None and state["budget_gb"] == BUDGET_GB and state["source"] == "RAM_BUDGET_GB"
    assert {row["tier"] for row in state["resident"]} >= {"tiny"}
    assert state["queued"] == [] and state["unloading"] == []
    assert Path(budgeted.env["RAM_BUDGET_STATE"]).stat().st_mode & 0o777 == 0o600


def deployment(tier: str, model: str, api_base: str, runtime: str, resident_gb: float) -> Any:
    from contract.tiers import Deployment

    return Deployment.of(
        {
            "model_name": tier,
            "litellm_params": {"model": model, "api_base": api_base},
            "model_info": {"runtime": runtime, "resident_gb": resident_gb},
        }
    )


def test_without_a_set_budget_it_is_what_linux_says_is_available_plus_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_url: str
) -> None:
    """No RAM_BUDGET_GB: the budget is MemAvailable now (this machine's real /proc/meminfo) plus what our
    models hold (here the embedded one), and a model fits or not against that."""
    import asyncio

    from contract import memory
    from harness.processes import closed_port_url
    from plugins import ram_budget

    monkeypatch.delenv("RAM_BUDGET_GB", raising=False)
    monkeypatch.setenv("RAM_BUDGET_STATE", str(tmp_path / "budget.json"))
    tiny = deployment("tiny", "openai/smollm2", tiny_url, "embedded", 0.35)  # the real embedded model
    cold = deployment("fast-3b", "ollama_chat/llama3.2:3b", closed_port_url(), "ollama", 2.9)
    budget = ram_budget.Budget(ram_budget.Policy(switch_wait_s=0))
    budget.learn([tiny, cold])
    runner = ram_budget.Runner.of(cold)
    assert runner is not None
    with open("/proc/meminfo") as fh:
        _, available_before = memory.parse_meminfo(fh.read())
    kwargs: dict[str, Any] = {"litellm_call_id": "derived", "timeout": 20}
    asyncio.run(budget.admit(kwargs, cold, runner))
    with open("/proc/meminfo") as fh:
        _, available_after = memory.parse_meminfo(fh.read())
    state = budget_state.read_state(tmp_path / "budget.json")
    assert state is not None and state["source"].startswith("available ") and f"+ ours {0.35:.1f} GB" in state["source"]
    low, high = sorted((available_before, available_after))
    assert low + 0.35 - 0.5 <= state["budget_gb"] <= high + 0.35 + 0.5
    assert kwargs["timeout"] > 20  # a cold load: its timeout grew by the load time


def test_a_remote_ollama_is_another_machines_ram() -> None:
    from plugins import ram_budget

    remote = deployment("fast-9b", "ollama_chat/qwen3.5:9b", "http://studio.local:11434", "ollama", 7.2)
    local = deployment("fast-9b", "ollama_chat/Qwen3.5:9B", "http://localhost:11434", "ollama", 7.2)
    cloud = deployment("cloud-free", "groq/llama-3.3-70b", "https://api.groq.com", "cloud", 0)
    assert ram_budget.Runner.of(remote) is None and ram_budget.Runner.of(cloud) is None
    assert ram_budget.Runner.of(local) == ram_budget.Runner("ollama", "http://localhost:11434", "qwen3.5:9b")


def test_ask_on_a_terminal_says_what_it_waits_for(
    fresh: Proxy, ollama: FakeOllama, budgeted: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ask --coder` behind a busy 9B, on a pseudo-terminal: the plugin's state reaches the user's screen
    (`waiting for fast-9b to finish…`), and the line is gone once the coder's answer comes."""
    from harness.stack import KEY
    from tests.test_budget_cli import Pty

    assert fresh.chat("fast-9b", "load the 9B", cache=no_cache()).headers["x-served-by"] == "fast-9b"
    ollama.set_fault(NINE_B, "slow", delay_s=3.0, times=1)
    busy = in_background(lambda: fresh.chat("fast-9b", "a digest that takes a while", cache=no_cache()))
    until(lambda: len(ollama.chat_requests(NINE_B)) == 2, "the 9B busy")
    monkeypatch.setenv("ASK_PROXY_URL", budgeted.url)
    monkeypatch.setenv("LITELLM_MASTER_KEY", KEY)
    monkeypatch.setenv("RAM_BUDGET_STATE", budgeted.env["RAM_BUDGET_STATE"])
    child = Pty(["--coder", "--no-cache", "refactor, on a terminal"])
    child.read_until(lambda raw: b"waiting for fast-9b to finish" in raw)
    shown = [line for line in child.finish() if line.strip()]
    assert busy().headers["x-served-by"] == "fast-9b"
    assert shown == [f"Hello from {CODER}. You sent 23 characters."], child.raw
