"""Which tier served a request, and whether that was the tier asked for: the one place that decides it.

`served_by` turns the answer into response headers, `demotion` into the demotion log; the `ask` CLI
reads only those headers. Stdlib at import time: litellm is reached lazily, inside the running proxy.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SERVED_BY = "X-Served-By"
DEMOTED_FROM = "X-Demoted-From"
ESCALATED = "prompt over num_ctx"  # a refusal reason (plugins/context_window.py): took context_window_fallbacks
SERVED_LANE = "X-Served-Lane"  # local, free-cloud or premium: the served tier's model_info.lane
REMEMBERED_CALLS = 4096  # attempts kept per call id, newest calls only

_attempts: OrderedDict[str, list[str]] = OrderedDict()
_council: OrderedDict[str, dict[str, str]] = OrderedDict()  # call id -> the council's headers (plugins/council.py)
_refusals: OrderedDict[str, list[dict[str, str]]] = OrderedDict()  # call id -> attempts a plugin stopped


def note_attempt(call_id: str, tier: str) -> None:
    """Called for every deployment attempt (see `demotion`): the tiers a call tried, in order."""
    _attempts.setdefault(call_id, []).append(tier)
    _attempts.move_to_end(call_id)
    while len(_attempts) > REMEMBERED_CALLS:
        _attempts.popitem(last=False)


def attempts(call_id: str) -> list[str]:
    return list(_attempts.get(call_id, ()))


def note_refusal(call_id: str | None, tier: str, reason: str) -> None:
    """An attempt a plugin stopped before it reached the backend (context too small, premium not named):
    LiteLLM reports no per-attempt failure for those, so `demotion` reads them here."""
    if call_id:
        _refusals.setdefault(call_id, []).append({"tier": tier, "reason": reason})
        _refusals.move_to_end(call_id)
        while len(_refusals) > REMEMBERED_CALLS:
            _refusals.popitem(last=False)


def refusals(call_id: str) -> list[dict[str, str]]:
    return list(_refusals.pop(call_id, ()))


def note_council(call_id: str, headers: dict[str, str]) -> None:
    """The council's report for one call: which tier served each member and the chairman (see `council`)."""
    _council[call_id] = dict(headers)
    _council.move_to_end(call_id)
    while len(_council) > REMEMBERED_CALLS:
        _council.popitem(last=False)


def council_headers(call_id: str | None) -> dict[str, str]:
    """The council's headers for one call; empty for any other call."""
    return dict(_council.get(call_id or "", {}))


@dataclass(frozen=True)
class Provenance:
    requested: str
    served: str
    lane: str = "local"

    @property
    def demoted(self) -> bool:
        return self.served != self.requested

    def headers(self) -> dict[str, str]:
        out = {SERVED_BY: self.served, SERVED_LANE: self.lane}
        if self.demoted:
            out[DEMOTED_FROM] = self.requested
        return out


def degraded_marker(requested: str, served: str) -> str:
    """The seed's stderr/log form: `[degraded: fast-9b → fast-1b]`."""
    return f"[degraded: {requested} → {served}]"


def council_marker(degraded: list[tuple[str, str]], failed: int) -> str:
    """A council answer with a demoted or failed part: `[degraded: council (fast-9b → fast-3b, 1 member failed)]`."""
    parts = [f"{asked} → {served}" for asked, served in degraded]
    if failed:
        parts.append(f"{failed} member{'s' if failed > 1 else ''} failed")
    return f"[degraded: council ({', '.join(parts)})]"


def hidden_params(obj: Any) -> dict[str, Any]:
    hp = getattr(obj, "_hidden_params", None)
    return hp if isinstance(hp, dict) else {}


def _router() -> Any:
    try:
        from litellm.proxy import proxy_server
    except ImportError:  # pragma: no cover - only outside a proxy
        return None
    return getattr(proxy_server, "llm_router", None)


def chain(requested: str, kind: str = "fallbacks") -> list[str]:
    """The requested tier followed by its configured fallbacks (or `context_window_fallbacks`), in order."""
    router = _router()
    for entry in getattr(router, kind, None) or []:
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


def lane_of(tier: str) -> str:
    """A tier's lane, from its deployments' `model_info.lane` in the yaml: local unless it says otherwise."""
    router = _router()
    for deployment in (router.get_model_list(model_name=tier) if router is not None else None) or []:
        lane = (deployment.get("model_info") or {}).get("lane")
        if lane:
            return str(lane)
    return "local"


def tier_of_deployment(model_id: str | None) -> str | None:
    """The logical model (`model_name` in the yaml) that owns a deployment id."""
    if not model_id:
        return None
    router = _router()
    deployment = router.get_deployment(model_id=model_id) if router is not None else None
    return getattr(deployment, "model_name", None)


def served_tier(response: Any, model_id: str | None = None) -> str | None:
    """The tier whose deployment produced `response` (a ModelResponse or a stream wrapper). `model_id` is the
    proxy's own note of the deployment, for responses that carry no hidden params (Anthropic /v1/messages)."""
    hp = hidden_params(response)
    tier = tier_of_deployment(hp.get("model_id") or model_id)
    if tier:
        return tier
    group = (hp.get("additional_headers") or {}).get("x-litellm-model-group")
    return str(group) if group else None


def logged_tier(request: Mapping[str, Any]) -> str | None:
    details = getattr(request.get("litellm_logging_obj"), "model_call_details", None) or {}
    group = ((details.get("litellm_params") or {}).get("metadata") or {}).get("model_group")
    return str(group) if group else None


def of_response(request: Mapping[str, Any], response: Any, model_id: str | None = None) -> Provenance | None:
    """Provenance of a proxy response, or None when either side is unknown (e.g. not a chat call).

    Responses in another API's shape (Anthropic's /v1/messages) carry no deployment id: then the request's
    logging object, which LiteLLM updates with the group that answered, says it."""
    requested = request.get("model")
    served = served_tier(response, model_id) or logged_tier(request)
    if not isinstance(requested, str) or not served:
        return None
    return Provenance(requested=requested, served=served, lane=lane_of(served))
