"""Which tier served a request, and whether that was the tier asked for: the one place that decides it.

`served_by` turns the answer into response headers, `demotion` into the demotion log; the `ask` CLI
reads only those headers. Stdlib at import time: litellm is reached lazily, inside the running proxy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SERVED_BY = "X-Served-By"
DEMOTED_FROM = "X-Demoted-From"


@dataclass(frozen=True)
class Provenance:
    requested: str
    served: str

    @property
    def demoted(self) -> bool:
        return self.served != self.requested

    def headers(self) -> dict[str, str]:
        out = {SERVED_BY: self.served}
        if self.demoted:
            out[DEMOTED_FROM] = self.requested
        return out


def degraded_marker(requested: str, served: str) -> str:
    """The seed's stderr/log form: `[degraded: fast-9b → fast-1b]`."""
    return f"[degraded: {requested} → {served}]"


def hidden_params(obj: Any) -> dict[str, Any]:
    hp = getattr(obj, "_hidden_params", None)
    return hp if isinstance(hp, dict) else {}


def _router() -> Any:
    try:
        from litellm.proxy import proxy_server
    except ImportError:  # pragma: no cover - only outside a proxy
        return None
    return getattr(proxy_server, "llm_router", None)


def chain(requested: str) -> list[str]:
    """The requested tier followed by its configured fallbacks, in the order the router tries them."""
    router = _router()
    for entry in getattr(router, "fallbacks", None) or []:
        if isinstance(entry, dict) and requested in entry:
            return [requested, *entry[requested]]
    return [requested]


async def cooling_down(tier: str) -> bool:
    """Whether the router is skipping `tier` because it failed recently (LiteLLM's cooldown)."""
    router = _router()
    if router is None:
        return False
    ids = set(router.get_model_ids(model_name=tier))
    active = await router.cooldown_cache.async_get_active_cooldowns(model_ids=list(ids), parent_otel_span=None)
    return any(isinstance(item, tuple) and item[0] in ids for item in active or [])


def tier_of_deployment(model_id: str | None) -> str | None:
    """The logical model (`model_name` in the yaml) that owns a deployment id."""
    if not model_id:
        return None
    router = _router()
    deployment = router.get_deployment(model_id=model_id) if router is not None else None
    return getattr(deployment, "model_name", None)


def served_tier(response: Any) -> str | None:
    """The tier whose deployment produced `response` (a ModelResponse or a stream wrapper)."""
    hp = hidden_params(response)
    tier = tier_of_deployment(hp.get("model_id"))
    if tier:
        return tier
    group = (hp.get("additional_headers") or {}).get("x-litellm-model-group")
    return str(group) if group else None


def of_response(request: Mapping[str, Any], response: Any) -> Provenance | None:
    """Provenance of a proxy response, or None when either side is unknown (e.g. not a chat call)."""
    requested = request.get("model")
    served = served_tier(response)
    if not isinstance(requested, str) or not served:
        return None
    return Provenance(requested=requested, served=served)
