"""`async_pre_call_deployment_hook`: each Ollama deployment's keep_alive policy on every attempt.

The policy lives in litellm-config.yaml under each deployment's `model_info.keep_alive` (Ollama's duration
syntax: "15m", "30s", 0, -1). The hook runs once per attempt, with the deployment the router chose, so
every fallback hop carries its own model's policy: the 9B stays warm, the 30B coder leaves RAM quickly.
A keep_alive the client sent wins. Non-Ollama backends never receive the field.
"""

from __future__ import annotations

from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from plugins import provenance


def client_keep_alive(kwargs: dict[str, Any]) -> bool:
    """Whether the client's own request body named a keep_alive."""
    body = (kwargs.get("proxy_server_request") or {}).get("body") or {}
    return isinstance(body, dict) and "keep_alive" in body


class KeepAlive(CustomLogger):
    async def async_pre_call_deployment_hook(self, kwargs: dict[str, Any], call_type: Any) -> dict[str, Any]:
        if not provenance.attempt_deployment(kwargs).is_ollama:
            kwargs.pop("keep_alive", None)
            return kwargs
        if client_keep_alive(kwargs):
            return kwargs
        policy = (kwargs.get("model_info") or {}).get("keep_alive")
        if policy is not None:
            kwargs["keep_alive"] = policy
        return kwargs


handler = KeepAlive()
