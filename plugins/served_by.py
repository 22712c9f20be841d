"""Response headers: `X-Served-By: <tier that answered>` and, when demoted, `X-Demoted-From: <tier asked for>`.

Renders `provenance`'s answer, decides nothing itself. Non-streaming responses get the headers from
`async_post_call_response_headers_hook`. For streams that hook runs before the first chunk and can be stale
after a fallback, so the streaming iterator hook writes them into the stream's hidden params just before the
first chunk leaves, when the served deployment is known; a stream with nowhere to put them is said in the log.

The body says the same tier: `model` is the tier that answered, on every route, never the backend's tag
(LiteLLM's non-streamed body after a fallback says `ollama_chat/llama3.2:3b`) nor the tier asked for (the
`message_start` of a /v1/messages stream does). Clients that never show headers (llm, aider, OpenCode, Claude
Code) show or log the body's model.

A /v1/completions stream's chunks always carry `text`: LiteLLM 1.106.2's last one (the finish reason) has none,
and a client that joins the texts (`llm`) fails on it.

Council responses (plugins/council.py) also get the council's own headers (`X-Council-*`, contract), copied
here as plain headers from the report the council leaves in the call's ledger: headers a custom provider sets
itself come out prefixed `llm_provider-`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from plugins import provenance
from plugins.log import logger

log = logger("served_by")


def headers_for(request: dict, response: Any, model_id: str | None = None) -> dict[str, str]:
    """The provenance headers of one response, the council's included; empty when nothing is known."""
    found = provenance.of_response(request, response, model_id)
    return {**(found.headers() if found else {}), **provenance.said_headers(request.get("litellm_call_id"))}


class ServedBy(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict, call_type: Any) -> dict:
        if str(getattr(call_type, "value", call_type)) == "anthropic_messages":
            # LiteLLM 1.106.2 stamps the tier asked for on a /v1/messages stream's message_start unless this flag
            # (its complexity router's) is set; the tier that answered is stamped below instead.
            from litellm.constants import RETURN_RAW_MODEL_NAME_METADATA_KEY

            metadata = data.get("litellm_metadata")
            if isinstance(metadata, dict):
                metadata[RETURN_RAW_MODEL_NAME_METADATA_KEY] = True
        return data

    async def async_post_call_success_hook(self, data: dict, user_api_key_dict: Any, response: Any) -> Any:
        found = provenance.of_response(data, response)
        if found is not None:
            name_model(response, found.served)
        return response

    async def async_post_call_response_headers_hook(
        self,
        data: dict,
        user_api_key_dict: Any,
        response: Any,
        request_headers: dict[str, str] | None = None,
        litellm_call_info: dict[str, Any] | None = None,
    ) -> dict[str, str] | None:
        if response is None or data.get("stream"):
            return None
        info = litellm_call_info or {}
        # A /v1/messages cache hit says nothing of its tier but the deployment the router had picked.
        picked = (info.get("model_info") or {}).get("id")
        return headers_for(data, response, info.get("model_id")) or headers_for(data, response, picked) or None

    async def async_post_call_streaming_iterator_hook(
        self, user_api_key_dict: Any, response: Any, request_data: dict
    ) -> AsyncGenerator[Any, None]:
        first, served = True, None
        async for chunk in response:
            if first:
                first = False
                attach(response, headers_for(request_data, response))
                found = provenance.of_response(request_data, response)
                served = found.served if found else None
            if served is not None:
                chunk = name_model(chunk, served)
            yield with_text(chunk)


def with_text(chunk: Any) -> Any:
    """A text-completion chunk whose every choice has a `text` ("" where LiteLLM left it None)."""
    if getattr(chunk, "object", None) == "text_completion":
        for choice in getattr(chunk, "choices", None) or []:
            if choice.get("text") is None:
                choice["text"] = ""
    return chunk


def name_model(body: Any, tier: str) -> Any:
    """`body` with its `model` set to `tier`: a response object or dict, a stream chunk or event (a /v1/responses
    event's own `response` included), or the raw SSE bytes of a /v1/messages stream (whose `message_start` names
    the model; its other events carry none)."""
    if isinstance(body, bytes | str):
        return _name_model_in_sse(body, tier)
    for holder in (body, body.get("response") if isinstance(body, dict) else getattr(body, "response", None)):
        if isinstance(holder, dict):
            if "model" in holder:
                holder["model"] = tier
        elif getattr(holder, "model", None) not in (None, tier):
            with contextlib.suppress(AttributeError, TypeError, ValueError):  # frozen: its model stays as it came
                holder.model = tier
    return body


def _name_model_in_sse(frame: bytes | str, tier: str) -> bytes | str:
    text = frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame
    if '"message_start"' not in text:
        return frame
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not line.startswith("data:"):
            continue
        try:
            event = json.loads(line[5:])
        except ValueError:
            continue
        message = event.get("message") if isinstance(event, dict) else None
        if event.get("type") == "message_start" and isinstance(message, dict) and "model" in message:
            message["model"] = tier
            lines[i] = "data: " + json.dumps(event, separators=(",", ":"))
    joined = "\n".join(lines)
    return joined.encode("utf-8") if isinstance(frame, bytes) else joined


def attach(stream: Any, headers: dict[str, str]) -> bool:
    """Put headers where the proxy reads a stream's headers (its hidden params). A stream without hidden params
    would drop them silently: that is logged instead, once per stream."""
    if not headers:
        return False
    hp = provenance.hidden_params(stream)
    if hp is None:
        log.warning(
            "%s lost: this %s stream has no _hidden_params for the proxy to read (%s)",
            ", ".join(sorted(headers)),
            type(stream).__name__,
            ", ".join(f"{k}: {v}" for k, v in sorted(headers.items())),
        )
        return False
    hp.setdefault("additional_headers", {}).update(headers)
    return True


handler = ServedBy()
