"""`async_pre_call_hook`: refuse what no tier can serve, with a 400 that says what to send instead.

An unknown model gets the list of tiers (LiteLLM's own message sends the user to another endpoint), and
chat messages that are not a list of role/content objects get a 400 instead of the 500 LiteLLM gives
after trying every backend with them. The council (plugins/council.py) is never cached: its request gets
LiteLLM's per-request cache control `no-cache` + `no-store`.
"""

from __future__ import annotations

from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from contract import COUNCIL, no_cache
from plugins import provenance


class RequestGuard(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict, call_type: Any) -> dict:
        model = data.get("model")
        tiers = sorted(provenance.served_tiers().names())
        if isinstance(model, str) and tiers and model not in tiers:
            raise bad_request(f"unknown model '{model}': this stack serves {', '.join(tiers)}")
        if "messages" in data and not _valid_messages(data["messages"]):
            raise bad_request(
                'messages must be a non-empty list of objects with a role, e.g. [{"role": "user", "content": "hi"}]'
            )
        if model == COUNCIL:
            data["cache"] = no_cache()  # never cached: each call must ask its members afresh
        return data


def _valid_messages(messages: Any) -> bool:
    return (
        isinstance(messages, list)
        and bool(messages)
        and all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages)
    )


def bad_request(message: str) -> Exception:
    """A 400 with `message` as the client's error text (also used by plugins/premium_guard.py)."""
    from fastapi import HTTPException

    return HTTPException(status_code=400, detail=message)


handler = RequestGuard()
