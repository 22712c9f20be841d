"""The policy written in litellm-config.yaml, checked where a careless edit would break it."""

from __future__ import annotations

from typing import Any

import pytest

from ask_cli import stack_config
from contract import tiers as tier_model
from harness.stack import CONFIG, ROOT

CONFIG_DATA = stack_config.load(CONFIG)
TIERS = {m["model_name"]: m for m in CONFIG_DATA["model_list"]}  # the yaml as written
FALLBACKS = {k: v for entry in CONFIG_DATA["router_settings"]["fallbacks"] for k, v in entry.items()}


def params(tier: str) -> dict[str, Any]:
    return TIERS[tier]["litellm_params"]


def seconds(duration: str) -> int:
    return int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600}[duration[-1]]


def test_the_tiers_the_issue_names_exist() -> None:
    assert {"fast-9b", "fast-3b", "fast-1b", "think-9b", "coder-30b", "heavy", "tiny"} <= set(TIERS)


def test_keep_alive_policy() -> None:
    ollama = {t for t, m in TIERS.items() if params(t)["model"].startswith("ollama_chat/")}
    policy = {t: seconds(TIERS[t]["model_info"]["keep_alive"]) for t in ollama}
    assert policy["fast-9b"] == 15 * 60 and policy["coder-30b"] == 30
    assert policy["fast-1b"] < policy["fast-3b"] < policy["fast-9b"]
    assert all("keep_alive" not in params(t) for t in TIERS), "policy lives in model_info, injected per attempt"


@pytest.mark.parametrize("tier", ["fast-9b", "fast-3b", "fast-1b"])
def test_fallbacks_never_retry_the_same_blob(tier: str) -> None:
    tags = [params(t)["model"] for t in [tier, *FALLBACKS[tier]]]
    assert len(set(tags)) == len(tags)
    assert FALLBACKS[tier][-1] == "tiny", "the last hop is another runtime, present on every machine"


def test_reasoning_tier_never_falls_back_to_a_small_model() -> None:
    assert FALLBACKS["think-9b"] == ["heavy"]
    assert "tiny" not in FALLBACKS["heavy"] and "fast-1b" not in FALLBACKS["heavy"]


def test_thinking_is_explicit_and_the_9b_tiers_share_one_runner() -> None:
    assert params("think-9b")["think"] is True and params("fast-9b")["think"] is False
    assert params("think-9b")["model"] == params("fast-9b")["model"]
    assert params("think-9b")["num_ctx"] == params("fast-9b")["num_ctx"]


def test_every_address_and_the_key_come_from_the_environment() -> None:
    for tier in TIERS:
        if params(tier)["model"].startswith("council/"):
            continue  # no address of its own: it calls other tiers through the router
        assert params(tier)["api_base"].startswith("os.environ/"), tier
    assert CONFIG_DATA["general_settings"]["master_key"] == "os.environ/LITELLM_MASTER_KEY"


def test_every_tier_has_a_timeout_and_ollama_tiers_a_context() -> None:
    for tier in TIERS:
        assert params(tier)["timeout"] > 0
        if params(tier)["model"].startswith("ollama_chat/"):
            assert params(tier)["num_ctx"] >= 4096


def test_the_redis_variant_changes_only_the_cache_and_the_routers_shared_state() -> None:
    redis = stack_config.with_redis(CONFIG_DATA)
    assert redis["litellm_settings"]["cache_params"]["type"] == "redis"
    assert redis["litellm_settings"]["cache_params"]["ttl"] == CONFIG_DATA["litellm_settings"]["cache_params"]["ttl"]
    router = redis["router_settings"]
    assert (router["redis_host"], router["redis_port"]) == ("os.environ/REDIS_HOST", "os.environ/REDIS_PORT")
    timeouts = {"socket_timeout": stack_config.REDIS_TIMEOUT_S, "socket_connect_timeout": stack_config.REDIS_TIMEOUT_S}
    assert router["cache_kwargs"] == timeouts  # the router's own client: a frozen Redis costs 0.25 s, not 5
    assert {k: v for k, v in redis["litellm_settings"]["cache_params"].items() if k.startswith("socket_")} == timeouts
    assert {k: v for k, v in router.items() if not k.startswith("redis_") and k != "cache_kwargs"} == CONFIG_DATA[
        "router_settings"
    ]
    assert {k: v for k, v in redis.items() if k not in ("litellm_settings", "router_settings")} == {
        k: v for k, v in CONFIG_DATA.items() if k not in ("litellm_settings", "router_settings")
    }


def test_the_two_machine_overlay_puts_the_remote_9b_first_and_keeps_everything_else() -> None:
    merged = stack_config.load(ROOT / "litellm-config.two-machines.yaml")
    nine = [m for m in merged["model_list"] if m["model_name"] == "fast-9b"]
    assert [(m["litellm_params"]["api_base"], m["litellm_params"]["order"]) for m in nine] == [
        ("os.environ/REMOTE_OLLAMA_API_BASE", 1),
        ("os.environ/OLLAMA_API_BASE", 2),
    ]
    assert {k: v for k, v in nine[0]["litellm_params"].items() if k not in ("api_base", "order", "timeout")} == {
        k: v for k, v in nine[1]["litellm_params"].items() if k not in ("api_base", "order", "timeout")
    }
    assert len(merged["model_list"]) == len(CONFIG_DATA["model_list"]) + 1
    assert {k: v for k, v in merged.items() if k != "model_list"} == {
        k: v for k, v in CONFIG_DATA.items() if k != "model_list"
    }


def test_the_council_calls_tiers_that_exist_and_is_registered() -> None:
    council = params("council")
    assert council["model"] == "council/default"
    assert council["members"] == ["fast-9b", "fast-9b"] and council["member_temperature"] == 0.7
    assert council["chairman"] == "think-9b" and 0 < council["deadline_s"] <= council["timeout"]
    assert set(council["members"]) | {council["chairman"]} <= set(TIERS) - {"council"}
    assert {"provider": "council", "custom_handler": "plugins.council.handler"} in (
        CONFIG_DATA["litellm_settings"]["custom_provider_map"]
    )


def test_the_cloud_lanes_keep_premium_by_name_and_reasoning_in_the_cloud(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CEREBRAS", "GROQ", "GEMINI", "OPENROUTER", "ANTHROPIC"):
        monkeypatch.setenv(f"{name}_API_KEY", "sk-x")
    config, dropped = stack_config.with_cloud(CONFIG_DATA, ROOT / stack_config.CLOUD_NAME)
    assert dropped == [] and stack_config.routing_problems(config) == []
    assert stack_config.routing_problems(CONFIG_DATA) == []
    lanes = {tier.name: tier.lane for tier in tier_model.from_config(config)}
    assert (lanes["premium"], lanes["reasoning"], lanes["cloud-free"], lanes["fast-9b"]) == (
        "premium",
        "free-cloud",
        "free-cloud",
        "local",
    )
    chains = {k: v for e in config["router_settings"]["fallbacks"] for k, v in e.items()}
    assert chains["fast-9b"] == ["fast-3b", "fast-1b", "cloud-free", "tiny"]  # free cloud after local Ollama
    assert "premium" not in chains and "reasoning" not in chains


@pytest.mark.parametrize(
    ("section", "key", "value", "problem"),
    [
        ("router_settings", "fallbacks", [{"fast-9b": ["premium"]}], "'fast-9b' falls back to the premium tier"),
        ("router_settings", "context_window_fallbacks", [{"fast-9b": ["premium"]}], "falls back to the premium"),
        ("router_settings", "default_fallbacks", ["premium"], "'*' falls back to the premium tier"),
        ("litellm_settings", "fallbacks", [{"fast-1b": ["premium"]}], "litellm_settings.fallbacks: 'fast-1b'"),
        ("router_settings", "fallbacks", [{"premium": ["cloud-free"]}], "the premium tier 'premium' has a fallback"),
        (
            "router_settings",
            "fallbacks",
            [{"reasoning": ["cloud-free", "fast-9b"]}],
            "'reasoning' falls back to a local",
        ),
    ],
    ids=["fallbacks", "context-window", "default", "litellm-settings", "premium-out", "reasoning-local"],
)
def test_every_chain_into_premium_is_refused(
    monkeypatch: pytest.MonkeyPatch, section: str, key: str, value: object, problem: str
) -> None:
    for name in ("CEREBRAS", "GROQ", "ANTHROPIC"):
        monkeypatch.setenv(f"{name}_API_KEY", "sk-x")
    config, _ = stack_config.with_cloud(CONFIG_DATA, ROOT / stack_config.CLOUD_NAME)
    config = {**config, section: {**(config.get(section) or {}), key: value}}
    assert any(problem in p for p in stack_config.routing_problems(config)), stack_config.routing_problems(config)
