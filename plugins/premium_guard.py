"""The premium lane is reached only by name: never by a fallback of any kind, never by a client's `fallbacks`.

A tier is premium when its deployments say `model_info.lane: premium` (litellm-config.cloud.yaml: Claude, paid).
Three locks, so no request can spend premium tokens it did not ask for:
- `ask serve` refuses a config whose chains lead into or out of premium (`stack_config.routing_problems`);
- a request body naming premium in `fallbacks`, `context_window_fallbacks` or `default_fallbacks`, or asking
  premium itself with any of them, is refused here with a 400 before routing;
- every attempt is checked where it happens (`async_pre_call_deployment_hook`): a premium deployment reached
  for a request that named another model is refused, so even a hand-edited yaml run by `litellm --config`
  cannot fall into it. The router then moves on down the chain, and the demotion log says why.
"""

from __future__ import annotations

from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from contract import PREMIUM
from plugins import provenance
from plugins.request_guard import bad_request

BODY_CHAINS = ("fallbacks", "context_window_fallbacks", "default_fallbacks")


class PremiumRefused(Exception):
    """An attempt at a premium deployment for a request that did not name it."""

    status_code = 403


def _named(value: Any) -> set[str]:
    """Every model a client-side chain names: ["a", "b"], [{"model": "a"}], [{"fast-9b": ["a"]}]."""
    names: set[str] = set()
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str):
            names.add(item)
        elif isinstance(item, dict):
            if isinstance(item.get("model"), str):
                names.add(item["model"])
            for targets in item.values():
                if isinstance(targets, list):
                    names |= _named(targets)
    return names


class PremiumGuard(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict, call_type: Any) -> dict:
        chains = {key: data[key] for key in BODY_CHAINS if data.get(key)}
        if not chains:
            return data
        premium = provenance.served_tiers().premium()
        if data.get("model") in premium:
            raise bad_request(
                f"'{data['model']}' is the premium lane: it has no fallback; remove "
                f"{', '.join(chains)} from the request"
            )
        for key, value in chains.items():
            named = sorted(_named(value) & premium)
            if named:
                raise bad_request(
                    f"{key} names the premium lane '{named[0]}': premium is reached only by "
                    f"asking for it as the model; remove it from {key}"
                )
        return data

    async def async_pre_call_deployment_hook(self, kwargs: dict[str, Any], call_type: Any) -> dict[str, Any]:
        if provenance.attempt_deployment(kwargs).lane != PREMIUM:
            return kwargs
        body = (kwargs.get("proxy_server_request") or {}).get("body") or {}
        metadata = provenance.call_metadata(kwargs)
        # A client's request names its model in the body; a call made inside the proxy (the council's members and
        # chairman) has no body, and the router's record of the group it started from says it instead.
        asked = body.get("model") if isinstance(body, dict) and body else metadata.get("original_model_group")
        tier = provenance.attempt_tier(kwargs)
        if asked != tier:  # unknown counts as not named: premium is never spent on a guess
            provenance.note_failure(kwargs.get("litellm_call_id"), str(tier), "refused: premium only when named")
            raise PremiumRefused(
                f"{tier}: refused, premium is reached only when a request names it (this one asked for {asked})"
            )
        return kwargs


handler = PremiumGuard()
