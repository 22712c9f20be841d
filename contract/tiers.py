"""The tiers: litellm-config.yaml (overlays merged) read once into typed objects, the one model every consumer uses.

Built from a config mapping (the CLI side: `ask_cli.stack_config.load` reads the file) or from the running
router (the proxy side: `from_router`). A tier is a logical model (`model_name`) with one or more deployments,
its fallback chain and its context-window chain. No other module walks `model_list` or `fallbacks` by hand.
Stdlib only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from contract import BACKEND_DEFAULTS, LOCAL, PREMIUM

OLLAMA_PROVIDERS = ("ollama", "ollama_chat")
CHAIN_KEYS = ("fallbacks", "context_window_fallbacks", "default_fallbacks")
ENV_PREFIX = "os.environ/"


def parse_chains(entries: Any) -> dict[str, list[str]]:
    """A LiteLLM chain list (`[{"fast-9b": ["fast-3b", "tiny"]}, ...]`) as tier -> targets, in order."""
    chains: dict[str, list[str]] = {}
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, Mapping):
            for tier, targets in entry.items():
                chains[str(tier)] = [str(t) for t in targets or []] if isinstance(targets, list) else []
    return chains


def chain_list(chains: Mapping[str, list[str]]) -> list[dict[str, list[str]]]:
    """The inverse of `parse_chains`: the list shape LiteLLM reads."""
    return [{tier: list(targets)} for tier, targets in chains.items()]


def resolve(value: Any) -> str | None:
    """An `os.environ/NAME` reference as the proxy resolves it (with the contract's loopback defaults)."""
    if not isinstance(value, str):
        return None
    if value.startswith(ENV_PREFIX):
        name = value.removeprefix(ENV_PREFIX)
        return os.environ.get(name) or BACKEND_DEFAULTS.get(name)
    return value


@dataclass(frozen=True)
class Deployment:
    """One entry of `model_list`: where a tier's requests go, and the policy the yaml gives it."""

    tier: str
    provider: str  # ollama_chat, openai, council, ...
    model: str  # the tag or served name, without the provider prefix
    api_base: str | None  # as resolved (the environment's value for an os.environ/ reference)
    runtime: str  # model_info.runtime: ollama, llama.cpp, embedded, council, cloud
    keep_alive: str | None = None
    num_ctx: int | None = None
    resident_gb: float | None = None
    lane: str = LOCAL
    order: int | None = None
    model_id: str | None = None  # the router's deployment id (model_info.id), when known
    api_key_ref: str | None = None  # `os.environ/NAME` when the key comes from the environment
    mode: str = "chat"  # model_info.mode, LiteLLM's word: "embedding" for a tier that serves /v1/embeddings

    @property
    def is_ollama(self) -> bool:
        return self.runtime == "ollama"

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> Deployment:
        params = entry.get("litellm_params") or {}
        info = entry.get("model_info") or {}
        provider, sep, model = str(params.get("model") or "").partition("/")
        if not sep:
            provider, model = "", provider
        runtime = str(info.get("runtime") or ("ollama" if provider in OLLAMA_PROVIDERS else provider or "unknown"))
        api_base = resolve(params.get("api_base"))
        if not api_base and runtime == "ollama":
            api_base = resolve(ENV_PREFIX + "OLLAMA_API_BASE")
        num_ctx, resident, order = params.get("num_ctx"), info.get("resident_gb"), params.get("order")
        key = params.get("api_key")
        return cls(
            tier=str(entry.get("model_name")),
            provider=provider,
            model=model,
            api_base=api_base.rstrip("/") if api_base else None,
            runtime=runtime,
            keep_alive=str(info["keep_alive"]) if info.get("keep_alive") is not None else None,
            num_ctx=num_ctx if isinstance(num_ctx, int) and num_ctx > 0 else None,
            resident_gb=float(resident) if isinstance(resident, (int, float)) else None,
            lane=str(info.get("lane") or LOCAL),
            order=order if isinstance(order, int) else None,
            model_id=str(info["id"]) if info.get("id") else None,
            api_key_ref=key if isinstance(key, str) and key.startswith(ENV_PREFIX) else None,
            mode=str(info.get("mode") or "chat"),
        )


@dataclass(frozen=True)
class Tier:
    """A logical model: its deployments (LiteLLM's `order` first) and the chains that leave it."""

    name: str
    deployments: tuple[Deployment, ...]
    fallbacks: tuple[str, ...] = ()
    context_fallbacks: tuple[str, ...] = ()

    @property
    def primary(self) -> Deployment:
        return self.deployments[0]

    @property
    def runtime(self) -> str:
        return self.primary.runtime

    @property
    def lane(self) -> str:
        return next((d.lane for d in self.deployments if d.lane != LOCAL), LOCAL)

    @property
    def is_ollama(self) -> bool:
        return self.primary.is_ollama

    @property
    def embeds(self) -> bool:
        return self.primary.mode == "embedding"

    @property
    def keep_alive(self) -> str | None:
        return self.primary.keep_alive

    @property
    def num_ctx(self) -> int | None:
        return self.primary.num_ctx

    @property
    def resident_gb(self) -> float | None:
        sizes = [d.resident_gb for d in self.deployments if d.resident_gb is not None]
        return max(sizes) if sizes else None


@dataclass(frozen=True)
class Tiers:
    """Every tier the config (or the router) serves, in the yaml's order."""

    tiers: tuple[Tier, ...]

    def __iter__(self) -> Iterator[Tier]:
        return iter(self.tiers)

    def __len__(self) -> int:
        return len(self.tiers)

    def __contains__(self, name: object) -> bool:
        return any(t.name == name for t in self.tiers)

    def names(self) -> list[str]:
        return [t.name for t in self.tiers]

    def get(self, name: str) -> Tier | None:
        return next((t for t in self.tiers if t.name == name), None)

    def deployments(self) -> list[Deployment]:
        return [d for t in self.tiers for d in t.deployments]

    def deployment(self, model_id: str | None) -> Deployment | None:
        """The deployment the router knows by this id."""
        return next((d for d in self.deployments() if model_id and d.model_id == model_id), None)

    def chain(self, name: str, context: bool = False) -> list[str]:
        """The tier followed by the tiers it falls back to (`context`: its context-window chain), in order."""
        tier = self.get(name)
        targets = (tier.context_fallbacks if context else tier.fallbacks) if tier else ()
        return [name, *targets]

    def lane_of(self, name: str) -> str:
        tier = self.get(name)
        return tier.lane if tier else LOCAL

    def premium(self) -> set[str]:
        """The tiers reached only by name (`model_info.lane: premium`)."""
        return {t.name for t in self.tiers if t.lane == PREMIUM}


def build(model_list: Any, fallbacks: Any = None, context_fallbacks: Any = None) -> Tiers:
    """Tiers from LiteLLM's own shapes: a `model_list` and its chain lists."""
    grouped: dict[str, list[Deployment]] = {}
    for entry in model_list if isinstance(model_list, list) else []:
        if isinstance(entry, Mapping) and entry.get("model_name"):
            deployment = Deployment.of(entry)
            grouped.setdefault(deployment.tier, []).append(deployment)
    chains, context = parse_chains(fallbacks), parse_chains(context_fallbacks)
    return Tiers(
        tuple(
            Tier(
                name=name,
                deployments=tuple(sorted(group, key=lambda d: d.order if d.order is not None else 1 << 30)),
                fallbacks=tuple(chains.get(name, ())),
                context_fallbacks=tuple(context.get(name, ())),
            )
            for name, group in grouped.items()
        )
    )


def from_config(config: Mapping[str, Any]) -> Tiers:
    """Tiers from a loaded config (includes and overlays already merged): its model_list and router chains."""
    router = config.get("router_settings") or {}
    return build(config.get("model_list"), router.get("fallbacks"), router.get("context_window_fallbacks"))


_from_router: tuple[tuple[int, int, int, int], Tiers] | None = None


def from_router(router: Any) -> Tiers:
    """Tiers from the proxy's running router; rebuilt only when its model list or chains are replaced or resized."""
    global _from_router
    model_list = getattr(router, "model_list", None) or []
    fallbacks = getattr(router, "fallbacks", None) or []
    context = getattr(router, "context_window_fallbacks", None) or []
    stamp = (id(model_list), len(model_list), id(fallbacks), id(context))
    if _from_router is None or _from_router[0] != stamp:
        _from_router = (stamp, build(model_list, fallbacks, context))
    return _from_router[1]
