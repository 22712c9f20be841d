"""The proxy's chat endpoint over stdlib HTTP: `ask` must not pay for importing an HTTP library.

The served tier is read from the proxy's `X-Served-By` / `X-Demoted-From` headers, never guessed; the
council's parts from `X-Council-Degraded` / `X-Council-Failed` (plugins/council.py).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PROXY = "http://127.0.0.1:4000"


def proxy_url() -> str:
    return os.environ.get("ASK_PROXY_URL", DEFAULT_PROXY).rstrip("/")


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
    text: str = ""
    requested: str = ""
    served_by: str = ""
    demoted_from: str | None = None
    lane: str | None = None  # X-Served-Lane: local, free-cloud or premium
    usage: dict[str, Any] = field(default_factory=dict)
    council_degraded: list[tuple[str, str]] = field(default_factory=list)  # (asked, served) per demoted part
    council_failed: int = 0  # council members that failed
    council: dict[str, Any] | None = None  # the members' answers, when the council answered

    @property
    def demoted(self) -> bool:
        return self.demoted_from is not None

    @property
    def council_weakened(self) -> bool:
        return bool(self.council_degraded or self.council_failed)


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


def _provenance(reply: Reply, headers: Any) -> None:
    reply.served_by = headers.get("x-served-by") or reply.requested
    reply.demoted_from = headers.get("x-demoted-from")
    reply.lane = headers.get("x-served-lane")
    degraded = headers.get("x-council-degraded") or ""
    reply.council_degraded = [tuple(p.split("->", 1)) for p in degraded.split(",") if "->" in p]  # type: ignore[misc]
    failed = headers.get("x-council-failed") or "0"
    reply.council_failed = int(failed) if failed.isdigit() else 0


def _council_fields(reply: Reply, holder: dict[str, Any]) -> None:
    council = (holder.get("provider_specific_fields") or {}).get("council")
    if isinstance(council, dict):
        reply.council = council


def chat(base: str, key: str, body: dict[str, Any], timeout: float = 600.0) -> Reply:
    """One non-streaming completion."""
    with _open(_request(base, key, {**body, "stream": False}), timeout) as resp:
        payload = json.loads(resp.read())
        reply = Reply(requested=str(body.get("model", "")))
        _provenance(reply, resp.headers)
    reply.text = payload["choices"][0]["message"].get("content") or ""
    _council_fields(reply, payload["choices"][0]["message"])
    reply.usage = payload.get("usage") or {}
    return reply


def stream_chat(base: str, key: str, body: dict[str, Any], timeout: float = 600.0) -> tuple[Reply, Iterator[str]]:
    """A streaming completion: the reply's provenance is known from the headers before the first token."""
    resp = _open(_request(base, key, {**body, "stream": True}), timeout)
    reply = Reply(requested=str(body.get("model", "")))
    _provenance(reply, resp.headers)

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
                    _council_fields(reply, choice.get("delta") or {})
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        reply.text += piece
                        yield piece

    return reply, pieces()
