"""A prompt longer than an Ollama tier's context escalates to a larger one instead of being cut; an answer
limit that does not fit beside a prompt that does is clamped to what fits, and said.

Ollama silently drops the oldest messages when a prompt exceeds `num_ctx`: it answers 200, and the answer
rests on part of the input. Before each Ollama attempt this hook estimates what the backend will see — the
system prompt, every message block, tool schemas, tool calls and results, images — against the deployment's
`num_ctx` (litellm-config.yaml):
- the prompt and the asked `max_tokens` fit: the request goes as is;
- the prompt fits with room for an answer (`MIN_ANSWER_TOKENS`, or less when less was asked) but not with the
  asked `max_tokens` (Claude Code asks 32,000 of an 8,192 context): `max_tokens` is cut to what is left and
  the response says `X-Max-Tokens-Clamped: 32000 -> 4096`;
- it does not: LiteLLM's ContextWindowExceededError, so the router takes the tier's `context_window_fallbacks`
  (to `heavy`; with `ask serve --cloud`, `cloud-free` first), shown like any demotion: X-Served-By and
  X-Demoted-From, the demotion log ("prompt over num_ctx (9001 > 7680 tokens), escalated"), `[degraded:
  fast-9b → heavy]` in `ask`. (Ollama's own context error, with `truncate: false`, is a plain 400 to LiteLLM:
  that one takes the ordinary chain.)

The estimate is the request's JSON (keys and all, as a chat template renders roles and tool schemas as text)
counted with cl100k, the tokenizer at hand offline, times `MARGIN`, plus `IMAGE_TOKENS` per image. It is only
counted when the request has at least as many bytes as could matter: a token is at least one byte, so shorter
ones fit whatever the tokenizer, and cost nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from contract import MAX_TOKENS_CLAMPED
from plugins import provenance
from plugins.log import logger

log = logger("context_window")

# What the backend renders into its context, in each route's shape: chat and completions (`messages`, `tools`,
# `functions`), /v1/messages (`system`, Anthropic blocks), /v1/responses (`instructions`, `input`).
PROMPT_KEYS = ("system", "instructions", "messages", "input", "prompt", "tools", "functions")
# The answer's limit, by route: chat (both names), /v1/messages, /v1/responses.
MAX_TOKEN_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
# cl100k against Llama 3's, Qwen's and Gemma's own tokenizers on English, code and JSON: within ~10 % either
# way; the margin keeps the estimate on the high side for every family the tiers use.
MARGIN = 1.15
# An image, whatever its size: Llama 3.2 Vision's four 560-px tiles (1,601 tokens); Gemma 3 takes 256, LLaVA 576.
IMAGE_TOKENS = 1600
IMAGE_TYPES = frozenset({"image_url", "image", "input_image"})
# The least answer worth clamping to: a prompt that leaves less escalates instead.
MIN_ANSWER_TOKENS = 512


def _without_images(value: Any, images: list[int]) -> Any:
    """`value` with every image part emptied (its bytes are not its token cost), counting them in `images`."""
    if isinstance(value, Mapping):
        if isinstance(value.get("type"), str) and value["type"] in IMAGE_TYPES:  # a schema's "type" can be a dict
            images[0] += 1
            return {}
        return {k: _without_images(v, images) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_images(v, images) for v in value]
    return value


def rendered(kwargs: Mapping[str, Any]) -> tuple[str, int]:
    """What the backend will see as text, and how many images beside it."""
    images = [0]
    parts = {k: _without_images(kwargs[k], images) for k in PROMPT_KEYS if kwargs.get(k)}
    return json.dumps(parts, ensure_ascii=False, default=str), images[0]


def estimate(model: str, text: str, images: int, upper_bound: int | None = None) -> int:
    """Tokens the backend will take for `text` and `images`, on the high side. With `upper_bound`, a request
    whose bytes alone keep it at or under that bound is not counted: the bytes' estimate is returned."""
    by_bytes = math.ceil(len(text.encode()) * MARGIN) + images * IMAGE_TOKENS
    if upper_bound is not None and by_bytes <= upper_bound:
        return by_bytes
    import litellm

    return math.ceil(int(litellm.token_counter(model=model, text=text)) * MARGIN) + images * IMAGE_TOKENS


def asked_max_tokens(kwargs: Mapping[str, Any]) -> tuple[str, int] | None:
    for key in MAX_TOKEN_KEYS:
        value = kwargs.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return key, value
    return None


class ContextWindow(CustomLogger):
    async def async_pre_call_deployment_hook(self, kwargs: dict[str, Any], call_type: Any) -> dict[str, Any]:
        deployment = provenance.attempt_deployment(kwargs)
        num_ctx = deployment.num_ctx
        if not deployment.is_ollama or num_ctx is None or deployment.mode == "embedding":
            return kwargs  # an embedding's input is cut by Ollama itself (truncate), with no answer to make room for
        asked = asked_max_tokens(kwargs)
        answer = asked[1] if asked else MIN_ANSWER_TOKENS  # Ollama's own default: until the context is full
        kept = min(answer, MIN_ANSWER_TOKENS)
        try:
            text, images = rendered(kwargs)
            needed = estimate(str(kwargs.get("model", "")), text, images, upper_bound=num_ctx - answer)
        except Exception:  # a request shape this cannot count must not fail the request: Ollama will judge it
            log.exception("could not count the request for %s; sent as it is", deployment.tier)
            return kwargs
        if needed + answer <= num_ctx:
            return kwargs
        call_id = kwargs.get("litellm_call_id")
        if asked and needed + kept <= num_ctx:
            key, value = asked
            kwargs[key] = num_ctx - needed
            # /v1/messages is counted twice, in Anthropic's shape and then in OpenAI's: say what the client asked
            earlier = provenance.said_headers(call_id).get(MAX_TOKENS_CLAMPED)
            asked_by_client = earlier.split(" -> ")[0] if earlier else str(value)
            provenance.note_headers(call_id, {MAX_TOKENS_CLAMPED: f"{asked_by_client} -> {kwargs[key]}"})
            return kwargs
        import litellm

        room = num_ctx - kept
        tier = deployment.tier
        provenance.note_failure(call_id, tier, f"{provenance.ESCALATED} ({needed} > {room} tokens), escalated")
        raise litellm.ContextWindowExceededError(
            message=f"{tier}: the prompt needs ~{needed} tokens, num_ctx is {num_ctx} with {kept} kept for the answer",
            model=str(kwargs.get("model", "")),
            llm_provider="ollama",
        )


handler = ContextWindow()
