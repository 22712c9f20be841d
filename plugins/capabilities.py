"""Thinking only where it exists, tools only where they work: each Ollama attempt is checked against the
model's `capabilities` (Ollama's /api/show).

Ollama answers 400 `"qwen3-coder:30b" does not support thinking` to `think: true`, and `… does not support
tools` to a request with tools (server/routes.go ChatHandler, both checked before the model runs). Claude Code
asks for thinking on every turn, so each turn to `coder-30b` would fail over to the next tier. Instead:
- a thinking request (`thinking`, `reasoning_effort`, `think`) to a model without the `thinking` capability is
  sent without it, and the response says `X-Thinking-Dropped: coder-30b` — the answer is the model's own, only
  without a reasoning trace, which is not a demotion;
- a request with tools to a model without the `tools` capability is refused for that tier (503, a hop with the
  reason "no tools capability"), so the router takes the next tier that has them: a demotion, said as one,
  never tools silently stripped.
What a model can do is read once per backend and tag (kept `CACHE_S`); when /api/show does not answer within
`SHOW_TIMEOUT_S` the request goes as sent, and Ollama's own answer decides. A deployment that is not Ollama says
what it can do in its yaml (`model_info.capabilities`): the embedded SmolLM2 has no tools, so a tool request
that reaches `tiny` fails there with that reason instead of an answer that ignored the tools.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from litellm.integrations.custom_logger import CustomLogger

from contract import THINKING_DROPPED
from plugins import provenance
from plugins.log import logger

log = logger("capabilities")

SHOW_TIMEOUT_S = 2.0
CACHE_S = 300.0
THINKING_KEYS = ("thinking", "reasoning_effort", "think")


def asks_thinking(kwargs: dict[str, Any]) -> bool:
    thinking = kwargs.get("thinking")
    if isinstance(thinking, dict):
        return thinking.get("type") not in (None, "disabled")
    return bool(thinking) or kwargs.get("reasoning_effort") not in (None, "none") or bool(kwargs.get("think"))


class Capabilities(CustomLogger):
    def __init__(self) -> None:
        super().__init__()
        self._known: dict[tuple[str, str], tuple[float, frozenset[str] | None]] = {}
        self._client: httpx.AsyncClient | None = None

    async def capabilities(self, api_base: str, tag: str) -> frozenset[str] | None:
        """The model's capabilities, or None when Ollama did not say (an old Ollama, a hung one)."""
        key = (api_base, tag)
        found = self._known.get(key)
        if found and time.monotonic() - found[0] < CACHE_S:
            return found[1]
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=SHOW_TIMEOUT_S, trust_env=False)
        try:
            resp = await self._client.post(f"{api_base}/api/show", json={"model": tag})
            said = resp.json().get("capabilities") if resp.status_code == 200 else None
            caps = frozenset(map(str, said)) if isinstance(said, list) else None
        except (httpx.HTTPError, ValueError, AttributeError):
            caps = None
        self._known[key] = (time.monotonic(), caps)
        return caps

    async def async_pre_call_deployment_hook(self, kwargs: dict[str, Any], call_type: Any) -> dict[str, Any]:
        deployment = provenance.attempt_deployment(kwargs)
        thinking, tools = asks_thinking(kwargs), bool(kwargs.get("tools") or kwargs.get("functions"))
        if not (thinking or tools):
            return kwargs
        declared = (kwargs.get("model_info") or {}).get("capabilities")
        if isinstance(declared, list):
            caps: frozenset[str] | None = frozenset(map(str, declared))
        elif deployment.is_ollama and deployment.api_base:
            caps = await self.capabilities(deployment.api_base, deployment.model)
        else:
            caps = None
        if caps is None:
            return kwargs
        tier = deployment.tier
        if tools and "tools" not in caps:
            reason = f"no tools capability ({deployment.model})"
            provenance.note_failure(kwargs.get("litellm_call_id"), tier, reason)
            raise provenance.Refused(tier, reason)
        if thinking and "thinking" not in caps:
            for key in THINKING_KEYS:
                kwargs.pop(key, None)
            provenance.note_headers(kwargs.get("litellm_call_id"), {THINKING_DROPPED: tier})
        return kwargs


handler = Capabilities()
