"""Response headers: `X-Served-By: <tier that answered>` and, when demoted, `X-Demoted-From: <tier asked for>`.

Non-streaming responses get them from `async_post_call_response_headers_hook`. For streams that hook runs
before the first chunk and can be stale after a fallback, so the streaming iterator hook writes the
headers into the stream's hidden params just before the first chunk leaves, when the served deployment
is known.

Council responses (plugins/council.py) also get the council's own headers (`X-Council-Members`,
`X-Council-Chairman`, `X-Council-Failed`, `X-Council-Degraded`), copied here as plain headers from the report
the council leaves per call id: headers a custom provider sets itself come out prefixed `llm_provider-`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

import plugins.environment  # noqa: F401  (loopback defaults and the master key)
from plugins import provenance


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
        found = provenance.of_response(data, response, (litellm_call_info or {}).get("model_id"))
        headers = {**(found.headers() if found else {}), **council_headers(data)}
        return headers or None

    async def async_post_call_streaming_iterator_hook(
        self, user_api_key_dict: Any, response: Any, request_data: dict
    ) -> AsyncGenerator[Any, None]:
        first = True
        async for chunk in response:
            if first:
                first = False
                found = provenance.of_response(request_data, response)
                hp = provenance.hidden_params(response)
                headers = {**(found.headers() if found else {}), **council_headers(request_data)}
                if headers and hp is not None:
                    hp.setdefault("additional_headers", {}).update(headers)
            yield chunk


def council_headers(data: dict) -> dict[str, str]:
    """The council's report for this call as plain headers; empty for any other call."""
    return provenance.council_headers(data.get("litellm_call_id"))


handler = ServedBy()
