"""The demotion log: one JSON line and one WARNING per demoted request, an optional webhook alert, a desktop
notification (plugins/desktop.py), and tags.

Renders `provenance`'s verdict, decides nothing itself. Hooks: `async_pre_call_deployment_hook` and
`async_post_call_failure_deployment_hook` note each attempt and each failed one (with a short reason) in the
call's ledger; `async_log_success_event` writes the record when the tier that answered is not the tier asked
for; `async_post_call_failure_hook` writes it when the whole chain failed, and rewrites the client's error to
name every tier tried and why; `async_logging_hook` tags what LiteLLM logs (and, with a database, shows in the
UI's Logs page) with the tier that served and, for a demotion, the tier asked for. Silent demotion is worse than
honest failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncGenerator
from datetime import datetime
from pathlib import Path
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from contract import COUNCIL, degraded_marker
from contract.paths import demotion_log, private_dir
from plugins import provenance
from plugins.desktop import DesktopNotice
from plugins.log import logger
from plugins.provenance import short_reason

log = logger("demotion")

WEBHOOK_ENV = "DEMOTION_WEBHOOK_URL"
WEBHOOK_INTERVAL_ENV = "DEMOTION_WEBHOOK_MIN_INTERVAL_S"
SETTLE_STEPS = 50  # x 20 ms: how long a demotion record waits for a late per-attempt failure report
# Request tags in LiteLLM's logs (the UI's Logs page filters on them): served-by:<tier> on every answer, and
# demoted + demoted-from:<tier> on a demoted one.
SERVED_TAG, DEMOTED_TAG, DEMOTED_FROM_TAG = "served-by:", "demoted", "demoted-from:"


def append_record(path: Path, record: dict[str, Any]) -> None:
    """One `write` of one line with O_APPEND: lines from concurrent writers never interleave."""
    private_dir(path.parent)
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


class Webhook:
    """A Slack-compatible alert, at most one per interval, sent in the background and never raised."""

    def __init__(self, url: str | None, min_interval_s: float) -> None:
        self.url = url
        self.min_interval_s = min_interval_s
        self._last = float("-inf")
        self._tasks: set[asyncio.Task[None]] = set()

    def fire(self, text: str) -> None:
        now = time.monotonic()
        if not self.url or now - self._last < self.min_interval_s:
            return
        self._last = now
        task = asyncio.get_running_loop().create_task(self._post(text))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, text: str) -> None:
        try:
            import httpx

            async with httpx.AsyncClient(timeout=5.0) as client:
                await client.post(str(self.url), json={"text": text})
        except Exception as exc:
            log.warning("demotion webhook failed: %s", short_reason(exc))


class DemotionLog(CustomLogger):
    def __init__(self) -> None:
        super().__init__()
        self.webhook = Webhook(os.environ.get(WEBHOOK_ENV) or None, float(os.environ.get(WEBHOOK_INTERVAL_ENV, "300")))
        self.desktop = DesktopNotice.from_env()

    # -- collecting attempts ---------------------------------------------------------------------------
    async def async_pre_call_deployment_hook(self, kwargs: dict[str, Any], call_type: Any) -> None:
        provenance.note_attempt(kwargs.get("litellm_call_id"), provenance.attempt_tier(kwargs))

    async def async_post_call_failure_deployment_hook(
        self, request_data: Any, exception: Exception, call_type: Any, fallback_depth: int | None = None
    ) -> None:
        tier = provenance.attempt_tier(request_data) or str(request_data.get("model", "?"))
        provenance.note_failure(request_data.get("litellm_call_id"), tier, short_reason(exception))

    # -- what LiteLLM logs -----------------------------------------------------------------------------
    async def async_logging_hook(self, kwargs: dict, result: Any, call_type: str | None) -> tuple[dict, Any]:
        """Runs after LiteLLM builds a call's log payload and before any logger (the database's spend log
        included) reads it: the served and requested tiers become request tags there."""
        payload = kwargs.get("standard_logging_object")
        found = provenance.of_logged(kwargs)
        if found is None or found.served is None or not isinstance(payload, dict):
            return kwargs, result
        tags = [f"{SERVED_TAG}{found.served}"]
        if found.demoted:
            tags += [DEMOTED_TAG, f"{DEMOTED_FROM_TAG}{found.requested}"]
        metadata = (kwargs.get("litellm_params") or {}).get("metadata") or {}
        # Into the payload, and into the request's own tags, which LiteLLM reads again whenever it rebuilds the
        # payload (its sync and async success handlers both do, on different threads).
        for holder, key in ((payload, "request_tags"), (metadata, "tags")):
            existing = holder.get(key) or []
            if isinstance(existing, list):
                holder[key] = [*existing, *(t for t in tags if t not in existing)]
        return kwargs, result

    # -- outcomes -------------------------------------------------------------------------------------
    async def async_log_success_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        call_id = kwargs.get("litellm_call_id") or ""
        found = provenance.of_logged(kwargs)
        if found is None or not found.demoted:
            provenance.forget(call_id)
            return
        for _ in range(SETTLE_STEPS):  # LiteLLM may report a failed hop after the success event
            if provenance.settled(call_id, found.served):
                break
            await asyncio.sleep(0.02)
        stream = bool(kwargs.get("stream"))
        verdict = await provenance.verdict(call_id, found.requested, found.served, stream)
        self._write(verdict, _since_received((kwargs.get("litellm_params") or {}).get("metadata") or {}))

    async def async_post_call_failure_hook(
        self,
        request_data: dict,
        original_exception: Exception,
        user_api_key_dict: Any,
        traceback_str: str | None = None,
    ) -> Any:
        call_id = request_data.get("litellm_call_id") or ""
        requested = provenance.requested_tier(request_data)
        council = requested == COUNCIL and provenance.council_words(original_exception)
        if not provenance.failures(call_id):
            provenance.forget(call_id)
            # e.g. the council's deadline: no attempt failed, the council's words say why
            return _http_error(original_exception, council) if council else None
        if not requested:
            return None
        stream = bool(request_data.get("stream"))
        verdict = await provenance.verdict(call_id, requested, None, stream)
        self._write(verdict, _since_received(request_data.get("metadata") or {}))
        tried = "; ".join(str(h) for h in verdict.hops)
        return _http_error(original_exception, council or f"every tier in the chain for '{requested}' failed ({tried})")

    async def async_post_call_streaming_iterator_hook(
        self, user_api_key_dict: Any, response: Any, request_data: dict
    ) -> AsyncGenerator[Any, None]:
        """A stream that breaks after its first bytes reached the client has no failure event of LiteLLM's:
        the record is written here (the tier that was answering, and why), then the error goes on."""
        sent = False
        try:
            async for chunk in response:
                yield chunk
                sent = True
        except Exception as exc:
            tier = await self._stream_broke(request_data, response, exc, sent)
            if tier and sent:
                _name_in_error_event(exc, tier)
            raise

    async def _stream_broke(self, request_data: dict, response: Any, exc: BaseException, sent: bool) -> str | None:
        """Record a broken stream; the tier that was answering. `sent`: the client had part of the answer (a
        council fails before its first chunk, its members having failed: not mid-answer)."""
        call_id = request_data.get("litellm_call_id") or ""
        requested = provenance.requested_tier(request_data)
        if not requested:
            return None
        found = provenance.of_response(request_data, response)
        answering = (found.served if found else None) or requested
        provenance.note_failure(call_id, answering, f"{short_reason(exc)}, mid-answer" if sent else short_reason(exc))
        verdict = await provenance.verdict(call_id, requested, None, True, broke_at=answering)
        self._write(verdict, _since_received(request_data.get("metadata") or {}))
        return answering

    # -- writing --------------------------------------------------------------------------------------
    def _write(self, verdict: provenance.Verdict, latency_s: float | None) -> None:
        record = {
            "ts": round(time.time(), 3),
            "call_id": verdict.call_id,
            "requested": verdict.requested,
            "served": verdict.served,
            "failed": [str(h) for h in verdict.hops],
            "hops": len(verdict.hops),
            "stream": verdict.stream,
            "latency_s": latency_s,
        }
        why = ", ".join(record["failed"]) or "no failure was reported"
        if verdict.served is None:
            log.warning("[failed: %s] (%s)", verdict.requested, why)
        else:
            log.warning("%s (%s)", degraded_marker(verdict.requested, verdict.served), why)
            self.webhook.fire(f"fallback fired: used {verdict.served} because {verdict.requested} failed ({why})")
            self.desktop.fire(verdict.requested, verdict.served, why)
        path = demotion_log()
        try:
            append_record(path, record)
        except OSError as exc:
            log.warning("could not write the demotion log %s: %s", path, exc.strerror or exc)


def _name_in_error_event(exc: BaseException, tier: str) -> None:
    """The error event that ends a broken stream is made from the exception's `message` (LiteLLM's proxy): it
    starts with the tier that stopped, as the demotion record does."""
    message = getattr(exc, "message", None)
    if isinstance(message, str) and not message.startswith(f"{tier} "):
        exc.message = f"{tier} stopped mid-answer: {message}"  # type: ignore[attr-defined]


def _http_error(exc: BaseException, detail: str) -> Exception:
    from fastapi import HTTPException

    status = getattr(exc, "status_code", None) or 503
    return HTTPException(status_code=int(status) if int(status) >= 400 else 503, detail=detail)


def _since_received(metadata: dict[str, Any]) -> float | None:
    """Seconds since the proxy received the request: the whole chain, not only the last hop."""
    received = metadata.get("litellm_received_at")
    if isinstance(received, datetime):
        return round(time.time() - received.timestamp(), 3)
    return None


handler = DemotionLog()
