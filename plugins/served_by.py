"""Response headers: `X-Served-By: <tier that answered>` and, when demoted, `X-Demoted-From: <tier asked for>`.

Renders `provenance`'s answer, decides nothing itself. Non-streaming responses get the headers from
`async_post_call_response_headers_hook`. For streams that hook runs before the first chunk and can be stale
after a fallback, so the streaming iterator hook writes them into the stream's hidden params just before the
first chunk leaves, when the served deployment is known; a stream with nowhere to put them is said in the log.

Council responses (plugins/council.py) also get the council's own headers (`X-Council-*`, contract), copied
here as plain headers from the report the council leaves in the call's ledger: headers a custom provider sets
itself come out prefixed `llm_provider-`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from plugins import provenance
from plugins.log import logger

log = logger("served_by")


def headers_for(request: dict, response: Any, model_id: str | None = None) -> dict[str, str]:
    """The provenance headers of one response, the council's included; empty when nothing is known."""
    found = provenance.of_response(request, response, model_id)
    return {**(found.headers() if found else {}), **provenance.council_headers(request.get("litellm_call_id"))}


class ServedBy(CustomLogger):
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
        return headers_for(data, response, (litellm_call_info or {}).get("model_id")) or None

    async def async_post_call_streaming_iterator_hook(
        self, user_api_key_dict: Any, response: Any, request_data: dict
    ) -> AsyncGenerator[Any, None]:
        first = True
        async for chunk in response:
            if first:
                first = False
                attach(response, headers_for(request_data, response))
            yield chunk


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
