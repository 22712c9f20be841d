"""`async_pre_call_hook`: refuse a request for a model the stack does not serve, naming the tiers it does.

LiteLLM's own message ("Invalid model name passed in model=...") sends the user to another endpoint;
this one answers the question in the error itself.
"""

from __future__ import annotations

from typing import Any

from litellm.integrations.custom_logger import CustomLogger

import plugins.environment  # noqa: F401  (loopback defaults and the master key)


def served_tiers() -> list[str]:
    from litellm.proxy import proxy_server

    router = getattr(proxy_server, "llm_router", None)
    return sorted(router.get_model_names()) if router is not None else []


class RequestGuard(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict, call_type: Any) -> dict:
        model = data.get("model")
        tiers = served_tiers()
        if isinstance(model, str) and tiers and model not in tiers:
            from fastapi import HTTPException

            raise HTTPException(
                status_code=400,
                detail=f"unknown model '{model}': this stack serves {', '.join(tiers)}",
            )
        return data


handler = RequestGuard()
