"""A prompt longer than an Ollama tier's context escalates to a larger one instead of being cut.

Ollama silently drops the oldest messages when a prompt exceeds `num_ctx`: it answers 200, and the answer
rests on part of the input. Before each Ollama attempt this hook checks the prompt against the deployment's
`num_ctx` (litellm-config.yaml) and, when it does not fit with the answer's `max_tokens`, raises LiteLLM's
ContextWindowExceededError. The router then takes the tier's `context_window_fallbacks` (to `heavy`; with
`ask serve --cloud`, `cloud-free` first) and the escalation shows like any demotion: X-Served-By and
X-Demoted-From, the demotion log ("prompt over num_ctx (9001 > 8192 tokens), escalated"), `[degraded:
fast-9b → heavy]` in `ask`. (Ollama's own context error, with `truncate: false`, is a plain 400 to LiteLLM:
that one takes the ordinary chain.)

Counting is LiteLLM's token counter, and only for prompts with at least as many characters as the context has
tokens: shorter ones fit whatever the tokenizer (a token is at least one character), so they cost nothing.
"""

from __future__ import annotations

from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from plugins import provenance


def _chars(messages: Any) -> int:
    total = 0
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(str(part.get("text", ""))) for part in content if isinstance(part, dict))
    return total


def prompt_tokens(model: str, messages: Any) -> int:
    import litellm

    return int(litellm.token_counter(model=model, messages=messages))


class ContextWindow(CustomLogger):
    async def async_pre_call_deployment_hook(self, kwargs: dict[str, Any], call_type: Any) -> dict[str, Any]:
        deployment = provenance.attempt_deployment(kwargs)
        num_ctx = deployment.num_ctx
        if not deployment.is_ollama or num_ctx is None:
            return kwargs
        model = str(kwargs.get("model", ""))
        messages = kwargs.get("messages")
        room = num_ctx - int(kwargs.get("max_tokens") or kwargs.get("max_completion_tokens") or 0)
        if _chars(messages) < room:
            return kwargs
        needed = prompt_tokens(model, messages)
        if needed > room:
            import litellm

            tier = deployment.tier
            provenance.note_failure(
                kwargs.get("litellm_call_id"), tier, f"{provenance.ESCALATED} ({needed} > {room} tokens), escalated"
            )
            raise litellm.ContextWindowExceededError(
                message=f"{tier}: the prompt needs ~{needed} tokens, num_ctx is {num_ctx}"
                + (f" with {num_ctx - room} kept for the answer" if room != num_ctx else ""),
                model=model,
                llm_provider="ollama",
            )
        return kwargs


handler = ContextWindow()
