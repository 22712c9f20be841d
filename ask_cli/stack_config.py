"""Reading litellm-config.yaml before the proxy does, so a broken config fails in one clear line."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

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
                raise ConfigError(f"{path}: callback '{ref}' not found (no module {module}): "
                                  "fix litellm_settings.callbacks")
            source = file.read_text(encoding="utf-8") if file.exists() else ""
            if file.exists() and f"{attr} =" not in source and f"def {attr}" not in source:
                raise ConfigError(f"{path}: callback '{ref}': {file.name} defines no '{attr}'")
    finally:
        if added:
            sys.path.remove(root)


def tiers(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in config.get("model_list", []) if isinstance(m, dict) and m.get("model_name")]


REDIS_READ_INTERVAL_S = 1.0
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
    settings["cache_params"] = {**params, "type": "redis", **REDIS, "ttl": params.get("ttl", 3600)}
    # How long a proxy trusts its memory before reading Redis again for a key it lacks (LiteLLM: 10 s): 1 s, so
    # a machine another proxy saw fail is skipped here within a second, for one small read a second at most.
    settings.setdefault("default_redis_batch_cache_expiry", REDIS_READ_INTERVAL_S)
    router = dict(config.get("router_settings") or {})
    router.update({f"redis_{key}": value for key, value in REDIS.items()})
    return {**config, "litellm_settings": settings, "router_settings": router}


def write_private(config: dict[str, Any], path: Path) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("# Derived by `ask serve` from " + CONFIG_NAME + " (Redis, includes merged). Edit that file "
                 "instead.\n")
        yaml.safe_dump(config, fh, sort_keys=False)
    return path
