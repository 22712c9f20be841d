"""Reading litellm-config.yaml before the proxy does, so a broken config fails in one clear line."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from contract import LOCAL, PREMIUM, memory, paths
from contract import tiers as tier_model
from contract.tiers import CHAIN_KEYS, chain_list, parse_chains

CONFIG_ENV = "ASK_LITELLM_CONFIG"
CONFIG_NAME = "litellm-config.yaml"


class ConfigError(Exception):
    """The config cannot run; the message says what and where."""


def default_config_path() -> Path:
    """`$ASK_LITELLM_CONFIG`, else ./litellm-config.yaml, else the one in this checkout."""
    configured = os.environ.get(CONFIG_ENV)
    if configured:
        return Path(configured).expanduser()
    here = Path.cwd() / CONFIG_NAME
    if here.exists():
        return here
    return Path(__file__).resolve().parent.parent / CONFIG_NAME


def yaml_error(exc: Exception) -> tuple[str, str]:
    """(" line N" or "", the parser's words): enough for a one-line message that points at the mistake."""
    mark = getattr(exc, "problem_mark", None)
    where = f" line {mark.line + 1}" if mark is not None else ""
    return where, getattr(exc, "problem", None) or str(exc).splitlines()[0]


def _read(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (pass --config or set {CONFIG_ENV})") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where, problem = yaml_error(exc)
        raise ConfigError(f"{path}:{where}: not valid YAML ({problem})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping with a model_list")
    return config


def _with_includes(config: dict[str, Any], path: Path, seen: set[Path]) -> dict[str, Any]:
    """LiteLLM's `include`, merged as LiteLLM merges it: lists extended, any other key taken from the included
    file. An overlay (e.g. litellm-config.two-machines.yaml) thus adds deployments to the project's config."""
    entries = config.pop("include", None) or []
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise ConfigError(f"{path}: 'include' must be a list of file paths")
    for entry in entries:
        included_path = (path.parent / entry).resolve()
        if included_path in seen:
            continue
        seen.add(included_path)
        included = _with_includes(_read(included_path), included_path, seen)
        for key, value in included.items():
            base = config.get(key)
            config[key] = [*base, *value] if isinstance(base, list) and isinstance(value, list) else value
    return config


def load(path: Path) -> dict[str, Any]:
    """The config as the proxy will see it, includes merged."""
    config = _with_includes(_read(path), path, {path.resolve()})
    if not isinstance(config.get("model_list"), list):
        raise ConfigError(f"{path}: expected a mapping with a model_list")
    return config


def callbacks(config: dict[str, Any]) -> list[str]:
    names = (config.get("litellm_settings") or {}).get("callbacks") or []
    return [n for n in names if isinstance(n, str) and "." in n]


def check_plugins(config: dict[str, Any], path: Path) -> None:
    """Every `module.attribute` callback must exist, found the way LiteLLM finds it (next to the config)."""
    root = str(path.resolve().parent)
    added = root not in sys.path
    if added:
        sys.path.insert(0, root)
    try:
        for ref in callbacks(config):
            module, _, attr = ref.rpartition(".")
            file = Path(root, *module.split(".")).with_suffix(".py")
            try:
                found = file.exists() or importlib.util.find_spec(module) is not None
            except ModuleNotFoundError:
                found = False
            if not found:
                raise ConfigError(
                    f"{path}: callback '{ref}' not found (no module {module}): fix litellm_settings.callbacks"
                )
            source = file.read_text(encoding="utf-8") if file.exists() else ""
            try:
                compile(source, str(file), "exec")
            except SyntaxError as exc:
                raise ConfigError(f"{path}: callback '{ref}': {file.name} line {exc.lineno}: {exc.msg}") from None
            defines = (f"{attr} =", f"def {attr}", "def __getattr__")  # __getattr__: made when the proxy asks
            if file.exists() and not any(d in source for d in defines):
                raise ConfigError(f"{path}: callback '{ref}': {file.name} defines no '{attr}'")
    finally:
        if added:
            sys.path.remove(root)


BUDGET_KEYS = {"budget_gb", "switch_wait_s", "load_gb_per_s", "unload_wait_s", "poll_s", "chain_deadline_s", "enabled"}


def check_budget(config: dict[str, Any], path: Path) -> None:
    """The RAM budget's settings (`ram_budget:` and `RAM_BUDGET_GB`) must say a number where one is meant: the
    proxy would otherwise run with a budget nobody set (plugins/ram_budget.py)."""
    block = config.get("ram_budget")
    if block is None:
        return
    if not isinstance(block, dict):
        raise ConfigError(f"{path}: ram_budget: must be a mapping (budget_gb: 11.5, switch_wait_s: 20, ...)")
    unknown = sorted(set(block) - BUDGET_KEYS)
    if unknown:
        raise ConfigError(f"{path}: ram_budget.{unknown[0]} is not a setting: use {', '.join(sorted(BUDGET_KEYS))}")
    try:
        memory.explicit_budget(block.get("budget_gb"))
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    for key in BUDGET_KEYS - {"budget_gb", "enabled"}:
        value = block.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
            raise ConfigError(f"{path}: ram_budget.{key} must be a number of seconds or GB/s, not {value!r}")


REDIS_READ_INTERVAL_S = 1.0
# Redis answers a local or LAN request in about a millisecond; LiteLLM's default of 5 s per read and write let a
# frozen Redis (SIGSTOP, a stalled disk) add up to 10 s to every request. Past this the cache is skipped.
REDIS_TIMEOUT_S = 0.25
# LiteLLM's Redis circuit breaker (litellm/caching/redis_cache.py, RedisCircuitBreaker) opens after 5 refused
# calls and then skips Redis for REDIS_CIRCUIT_BREAKER_RECOVERY_TIMEOUT s, 60 by default: caching resumed up to a
# minute after Redis was back. It is read when litellm is imported, so it reaches the proxy as its environment.
# 2 s: while Redis is down, one probe every 2 s, refused at once or after REDIS_TIMEOUT_S.
REDIS_ENV = {"REDIS_CIRCUIT_BREAKER_RECOVERY_TIMEOUT": "2"}
REDIS = {
    "host": "os.environ/REDIS_HOST",
    "port": "os.environ/REDIS_PORT",
    "password": "os.environ/REDIS_PASSWORD",
}


def with_redis(config: dict[str, Any]) -> dict[str, Any]:
    """The same config with the response cache and the router's shared state (cooldowns, usage) in Redis.

    LiteLLM reads the cache type once at start, with no way to default an `os.environ/` value, so the run
    command derives this variant (REDIS_HOST, REDIS_PORT, REDIS_PASSWORD) rather than asking users to keep two
    copies of the model list. Two proxies on one Redis then share answers and skip each other's cooling tiers.
    """
    settings = dict(config.get("litellm_settings") or {})
    params = dict(settings.get("cache_params") or {})
    settings["cache"] = True
    timeouts = {"socket_timeout": REDIS_TIMEOUT_S, "socket_connect_timeout": REDIS_TIMEOUT_S}
    settings["cache_params"] = {**timeouts, **params, "type": "redis", **REDIS, "ttl": params.get("ttl", 3600)}
    # How long a proxy trusts its memory before reading Redis again for a key it lacks (LiteLLM: 10 s): 1 s, so
    # a machine another proxy saw fail is skipped here within a second, for one small read a second at most.
    settings.setdefault("default_redis_batch_cache_expiry", REDIS_READ_INTERVAL_S)
    router = dict(config.get("router_settings") or {})
    router.update({f"redis_{key}": value for key, value in REDIS.items()})
    router["cache_kwargs"] = {**timeouts, **(router.get("cache_kwargs") or {})}  # the router's own Redis client
    return {**config, "litellm_settings": settings, "router_settings": router}


def write_private(config: dict[str, Any], path: Path) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(
            "# Derived by `ask serve` from " + CONFIG_NAME + " (includes, cloud lanes, Redis merged). Edit "
            "that file instead.\n"
        )
        yaml.safe_dump(config, fh, sort_keys=False)
    return path


# -- cloud lanes (litellm-config.cloud.yaml, `ask serve --cloud`) --------------------------------------------

CLOUD_NAME = "litellm-config.cloud.yaml"  # next to the config; merged by `ask serve --cloud`


def with_overlay(config: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """The overlay's deployments appended; for each tier it names in a chain list, its chain replaces the base's."""
    merged = {**config, "model_list": [*config["model_list"], *(overlay.get("model_list") or [])]}
    router = dict(config.get("router_settings") or {})
    for key, value in (overlay.get("router_settings") or {}).items():
        if key in CHAIN_KEYS:
            router[key] = chain_list({**parse_chains(router.get(key)), **parse_chains(value)})
        else:
            router[key] = value
    merged["router_settings"] = router
    return merged


def _missing_key(deployment: dict[str, Any]) -> str | None:
    """The environment variable a deployment's `os.environ/` API key names, when it is not set."""
    ref = tier_model.Deployment.of(deployment).api_key_ref
    name = ref.removeprefix(tier_model.ENV_PREFIX) if ref else None
    if name == paths.KEY_ENV:  # the master key (tiny's): ask serve passes it to the proxy whatever the shell has
        return None
    return name if name and not os.environ.get(name, "").strip() else None


def without_keyless(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Drop deployments whose API key is not in the environment, and tiers left with none from every chain.

    Returns the config and one line per dropped deployment ("premium: anthropic absent, set ANTHROPIC_API_KEY")."""
    kept, dropped = [], []
    for deployment in config["model_list"]:
        name = _missing_key(deployment)
        if name is None:
            kept.append(deployment)
            continue
        provider = (deployment.get("model_info") or {}).get("provider") or deployment["litellm_params"]["model"]
        dropped.append(f"{deployment['model_name']}: {provider} absent, set {name}")
    if not dropped:
        return config, []
    tiers = set(tier_model.build(kept).names())
    router = dict(config.get("router_settings") or {})
    for key in CHAIN_KEYS:
        if key in router:
            chains = parse_chains(router[key])
            router[key] = chain_list({t: [x for x in chain if x in tiers] for t, chain in chains.items() if t in tiers})
    return {**config, "model_list": kept, "router_settings": router}, dropped


def with_cloud(config: dict[str, Any], overlay: Path) -> tuple[dict[str, Any], list[str]]:
    """The config plus the cloud overlay's lanes whose keys are set; one line per deployment left out."""
    return without_keyless(with_overlay(config, load(overlay)))


TIMEOUT_KEYS = ("timeout", "stream_timeout")


def config_problems(config: dict[str, Any]) -> list[str]:
    """What would make the proxy start and then fail every request, or route outside its chains: an empty
    `model_list`, a chain naming a tier that does not exist, a timeout that is not a positive number, a callback
    that is not a `module.attribute` string. `ask serve` refuses to start on any of them."""
    models = config.get("model_list") or []
    if not models:
        return ["model_list is empty: the proxy would answer 400 to everything; list the tiers (see README)"]
    problems = []
    names = {str(entry.get("model_name")) for entry in models if isinstance(entry, dict)}
    for entry in models:
        params = (entry.get("litellm_params") or {}) if isinstance(entry, dict) else {}
        for key in TIMEOUT_KEYS:
            value = params.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
                problems.append(f"model_list: '{entry.get('model_name')}' {key}: {value!r} is not a number of seconds")
    for section in ("router_settings", "litellm_settings"):
        settings = config.get(section) or {}
        for key in CHAIN_KEYS:
            value = settings.get(key)
            if key == "default_fallbacks" and isinstance(value, list):
                value = [{"*": value}]
            for tier, targets in parse_chains(value).items():
                for name in ([] if tier == "*" else [tier]) + list(targets):
                    if name not in names:
                        problems.append(
                            f"{section}.{key}: '{name}' is not a tier (model_list has {', '.join(sorted(names))})"
                        )
    for name in (config.get("litellm_settings") or {}).get("callbacks") or []:
        if not isinstance(name, str) or "." not in name:
            problems.append(f"litellm_settings.callbacks: {name!r} is not a module.attribute name")
    return problems


def routing_problems(config: dict[str, Any]) -> list[str]:
    """Paths the yaml opens that the lanes forbid: any chain into or out of a premium tier, and a cloud-only
    tier (`reasoning`) falling back to a local one. `ask serve` refuses to start on any of them."""
    lane = {tier.name: tier.lane for tier in tier_model.from_config(config)}
    problems = []
    sections = [
        ("router_settings", config.get("router_settings") or {}),
        ("litellm_settings", config.get("litellm_settings") or {}),
    ]
    for section, settings in sections:
        for key in CHAIN_KEYS:
            value = settings.get(key)
            if key == "default_fallbacks" and isinstance(value, list):
                value = [{"*": value}]
            for tier, targets in parse_chains(value).items():
                for target in targets:
                    if lane.get(target) == PREMIUM:
                        problems.append(
                            f"{section}.{key}: '{tier}' falls back to the premium tier '{target}'; "
                            "premium is reached only by name: remove it from the chain"
                        )
                if lane.get(tier) == PREMIUM and targets:
                    problems.append(
                        f"{section}.{key}: the premium tier '{tier}' has a fallback; it must fail "
                        "rather than answer from another tier: remove the chain"
                    )
                if tier == "reasoning" and any(lane.get(t, LOCAL) == LOCAL for t in targets):
                    problems.append(
                        f"{section}.{key}: 'reasoning' falls back to a local tier; a shallow answer is "
                        "worse than an error: keep its chain in the cloud"
                    )
    return problems
