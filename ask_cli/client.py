"""The proxy's chat endpoint over stdlib HTTP: `ask` must not pay for importing an HTTP library.

Which tier answered is what the response headers say (`contract.Provenance.of_headers`), never guessed: when
the proxy does not say, the reply's served tier is None.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from contract import COUNCIL_FIELD, DEFAULT_PROXY_URL, PROXY_URL_ENV, Provenance


def proxy_url() -> str:
    return os.environ.get(PROXY_URL_ENV, DEFAULT_PROXY_URL).rstrip("/")


class ProxyUnreachable(Exception):
    """Nothing answers at the proxy's address."""


class ProxyError(Exception):
    """The proxy answered with an error; `message` is its own words."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


@dataclass
class Reply:
    provenance: Provenance  # from the headers, known before the first token
    text: str = ""
    usage: dict[str, Any] = field(default_factory=dict)
    council: dict[str, Any] | None = None  # the members' answers, when the council answered


def _request(base: str, key: str, body: dict[str, Any]) -> urllib.request.Request:
    return urllib.request.Request(  # noqa: S310 - the proxy's own http URL
        f"{base}/v1/chat/completions",
        data=json.dumps(body).encode("utf-8"),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )


def _error_message(raw: bytes) -> str:
    try:
        err = json.loads(raw).get("error", {})
        return str(err.get("message") if isinstance(err, dict) else err)
    except (ValueError, AttributeError):
        return raw.decode("utf-8", "replace").strip()[:500]


def _open(req: urllib.request.Request, timeout: float) -> Any:
    try:
        return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - the proxy's own URL
    except urllib.error.HTTPError as exc:
        raise ProxyError(exc.code, _error_message(exc.read())) from None
    except (urllib.error.URLError, ConnectionError) as exc:
        raise ProxyUnreachable(str(getattr(exc, "reason", exc))) from None


def stream_chat(base: str, key: str, body: dict[str, Any], timeout: float = 600.0) -> tuple[Reply, Iterator[str]]:
    """A streaming completion: the reply's provenance is known from the headers before the first token."""
    resp = _open(_request(base, key, {**body, "stream": True}), timeout)
    reply = Reply(Provenance.of_headers(str(body.get("model", "")), resp.headers))

    def pieces() -> Iterator[str]:
        with resp:
            for raw in resp:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    return
                event = json.loads(data)
                if "error" in event:
                    raise ProxyError(500, _error_message(data))
                if event.get("usage"):
                    reply.usage = event["usage"]
                for choice in event.get("choices") or []:
                    delta = choice.get("delta") or {}
                    # plugins/council.py sends the members' answers under the tier's name, in the first chunk
                    council = (delta.get("provider_specific_fields") or {}).get(COUNCIL_FIELD)
                    if isinstance(council, dict):
                        reply.council = council
                    piece = delta.get("content")
                    if piece:
                        reply.text += piece
                        yield piece

    return reply, pieces()
