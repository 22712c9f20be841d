"""The demotion log: one JSON line and one WARNING per demoted request, and an optional webhook alert.

Hooks: `async_post_call_failure_deployment_hook` collects each failed attempt with a short reason;
`async_log_success_event` writes the record when the tier that answered is not the tier asked for;
`async_post_call_failure_hook` writes it when the whole chain failed, and rewrites the client's error to
name every tier tried and why; `async_logging_hook` tags what LiteLLM logs (and, with a database, shows in the
UI's Logs page) with the tier that served and, for a demotion, the tier asked for. Silent demotion is worse than
honest failure.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

import plugins.environment  # noqa: F401  (loopback defaults and the master key)
from ask_cli.paths import data_dir, private_dir
from plugins import provenance

log = logging.getLogger("local_llm_stack.demotion")
if not log.handlers:  # the proxy configures LiteLLM's loggers only: give ours a visible WARNING line
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s local-llm-stack: %(message)s"))
    log.addHandler(_handler)
    log.propagate = False

LOG_ENV = "DEMOTION_LOG"
WEBHOOK_ENV = "DEMOTION_WEBHOOK_URL"
WEBHOOK_INTERVAL_ENV = "DEMOTION_WEBHOOK_MIN_INTERVAL_S"
SETTLE_STEPS = 50  # x 20 ms: how long a demotion record waits for a late per-attempt failure report
PENDING_LIMIT = 2048  # calls whose failed hops wait for their outcome; old ones are dropped
# Request tags in LiteLLM's logs (the UI's Logs page filters on them): served-by:<tier> on every answer, and
# demoted + demoted-from:<tier> on a demoted one.
SERVED_TAG, DEMOTED_TAG, DEMOTED_FROM_TAG = "served-by:", "demoted", "demoted-from:"


def short_reason(exc: BaseException) -> str:
    """A few words a user can act on: `connection refused`, `timeout`, `HTTP 500: <backend's words>`."""
    name = type(exc).__name__
    text = str(exc)
    low = text.lower()
    if any(
        s in low
        for s in (
            "connection refused",
            "connecterror",
            "all connection attempts failed",
            "cannot connect to host",
            "connect call failed",
            "connection error",
        )
    ):
        return "connection refused"
    if "timeout" in name.lower() or "timed out" in low or "timeout" in low:
        return "timeout"
    if "contextwindow" in name.lower() or "context window" in low or "context length" in low:
        return "context window exceeded"
    if any(s in low for s in ("disconnected", "peer closed", "incomplete", "remoteprotocolerror", "reset by peer")):
        return "connection dropped"
    status = getattr(exc, "status_code", None)
    detail = _backend_words(text)
    if status == 404:
        return f"not found (404): {detail}" if detail else "not found (404)"
    if status:
        return f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
    return detail or name


def _backend_words(text: str) -> str:
    """The backend's own error text, without LiteLLM's class-name prefixes, kept to one short line."""
    match = re.search(r'"error"\s*:\s*"((?:[^"\\]|\\.)*)"', text)
    words = match.group(1) if match else re.sub(r"^(?:(?:litellm\.)?\w+(?:Error|Exception)\s*[:-]\s*)+", "", text)
    words = " ".join(words.split())
    return words[:120] + ("…" if len(words) > 120 else "")


def _council_words(exc: BaseException) -> str | None:
    """The council's own error (plugins/council.py), whole: it already names each member or the chairman and why."""
    text = str(exc)
    start = text.find("council: ")
    if start < 0:
        return None
    words = " ".join(text[start:].split())
    for tail in (" Deployment Info:", " LiteLLM: model group", " Received Model Group"):  # the router's additions
        words = words.split(tail, 1)[0]
    return words


def log_path() -> Path:
    configured = os.environ.get(LOG_ENV)
    return Path(configured).expanduser() if configured else data_dir() / "demotions.jsonl"


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
        self._hops: OrderedDict[str, list[dict[str, str]]] = OrderedDict()
        self.webhook = Webhook(os.environ.get(WEBHOOK_ENV) or None, float(os.environ.get(WEBHOOK_INTERVAL_ENV, "300")))

    # -- collecting attempts ---------------------------------------------------------------------------
    async def async_pre_call_deployment_hook(self, kwargs: dict[str, Any], call_type: Any) -> None:
        call_id = kwargs.get("litellm_call_id")
        tier = (kwargs.get("metadata") or {}).get("model_group")
        if call_id and tier:
            provenance.note_attempt(call_id, tier)

    async def async_post_call_failure_deployment_hook(
        self, request_data: Any, exception: Exception, call_type: Any, fallback_depth: int | None = None
    ) -> None:
        call_id = request_data.get("litellm_call_id")
        if not call_id:
            return
        metadata = request_data.get("metadata") or {}
        tier = metadata.get("model_group") or str(request_data.get("model", "?"))
        _remember(self._hops, call_id, list).append({"tier": tier, "reason": short_reason(exception)})

    # -- what LiteLLM logs -----------------------------------------------------------------------------
    async def async_logging_hook(self, kwargs: dict, result: Any, call_type: str | None) -> tuple[dict, Any]:
        """Runs after LiteLLM builds a call's log payload and before any logger (the database's spend log
        included) reads it: the served and requested tiers become request tags there."""
        payload = kwargs.get("standard_logging_object")
        metadata = (kwargs.get("litellm_params") or {}).get("metadata") or {}
        served = payload.get("model_group") if isinstance(payload, dict) else None
        if not served:
            return kwargs, result
        requested = metadata.get("original_model_group") or metadata.get("model_group") or served
        tags = [f"{SERVED_TAG}{served}"]
        if requested != served:
            tags += [DEMOTED_TAG, f"{DEMOTED_FROM_TAG}{requested}"]
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
        metadata = (kwargs.get("litellm_params") or {}).get("metadata") or {}
        requested = metadata.get("original_model_group") or metadata.get("model_group")
        served = (kwargs.get("standard_logging_object") or {}).get("model_group")
        if not requested or not served or requested == served:
            self._hops.pop(call_id, None)
            return
        await self._settle(call_id, served)
        hops = [*provenance.refusals(call_id), *self._hops.pop(call_id, [])]
        attempted = set(provenance.attempts(call_id))
        hops = await _with_skipped(requested, served, hops, attempted, bool(kwargs.get("stream")))
        self._write(
            call_id=call_id,
            requested=requested,
            served=served,
            hops=hops,
            stream=bool(kwargs.get("stream")),
            latency_s=_since_received(metadata),
        )

    async def _settle(self, call_id: str, served: str) -> None:
        """LiteLLM may run the per-attempt failure hook after the success event: give it a moment, so a
        reason is not mistaken for a missing one."""
        for _ in range(SETTLE_STEPS):
            failed = {h["tier"] for h in self._hops.get(call_id, [])}
            if set(provenance.attempts(call_id)) - {served} <= failed:
                return
            await asyncio.sleep(0.02)

    async def async_post_call_failure_hook(
        self,
        request_data: dict,
        original_exception: Exception,
        user_api_key_dict: Any,
        traceback_str: str | None = None,
    ) -> Any:
        call_id = request_data.get("litellm_call_id") or ""
        hops = [*provenance.refusals(call_id), *self._hops.pop(call_id, [])]
        attempted = set(provenance.attempts(call_id))
        requested = request_data.get("model")
        council = requested == "council" and _council_words(original_exception)
        if not hops and council:  # e.g. the council's deadline: no attempt failed, the council's words say why
            return _http_error(original_exception, council)
        if not hops or not isinstance(requested, str):
            return None
        hops = await _with_skipped(requested, None, hops, attempted, bool(request_data.get("stream")))
        self._write(
            call_id=call_id,
            requested=requested,
            served=None,
            hops=hops,
            stream=bool(request_data.get("stream")),
            latency_s=_since_received(request_data.get("metadata") or {}),
        )
        tried = "; ".join(f"{h['tier']}: {h['reason']}" for h in hops)
        return _http_error(original_exception, council or f"every tier in the chain for '{requested}' failed ({tried})")

    # -- writing --------------------------------------------------------------------------------------
    def _write(
        self,
        *,
        call_id: str,
        requested: str,
        served: str | None,
        hops: list[dict[str, str]],
        stream: bool,
        latency_s: float | None,
    ) -> None:
        record = {
            "ts": round(time.time(), 3),
            "call_id": call_id,
            "requested": requested,
            "served": served,
            "failed": [f"{h['tier']}: {h['reason']}" for h in hops],
            "hops": len(hops),
            "stream": stream,
            "latency_s": latency_s,
        }
        why = ", ".join(record["failed"]) or "no failure was reported"
        if served is None:
            log.warning("[failed: %s] (%s)", requested, why)
        else:
            log.warning("%s (%s)", provenance.degraded_marker(requested, served), why)
            self.webhook.fire(f"fallback fired: used {served} because {requested} failed ({why})")
        try:
            append_record(log_path(), record)
        except OSError as exc:
            log.warning("could not write the demotion log %s: %s", log_path(), exc.strerror or exc)


def _http_error(exc: BaseException, detail: str) -> Exception:
    from fastapi import HTTPException

    status = getattr(exc, "status_code", None) or 503
    return HTTPException(status_code=int(status) if int(status) >= 400 else 503, detail=detail)


def _remember(pending: OrderedDict[str, Any], call_id: str, empty: Callable[[], Any]) -> Any:
    """The pending entry for a call, kept among the newest PENDING_LIMIT calls only."""
    if call_id not in pending:
        pending[call_id] = empty()
    pending.move_to_end(call_id)
    while len(pending) > PENDING_LIMIT:
        pending.popitem(last=False)
    return pending[call_id]


async def _with_skipped(
    requested: str, served: str | None, hops: list[dict[str, str]], attempted: set[str], stream: bool
) -> list[dict[str, str]]:
    """The failed attempts plus the tiers that failed without a report (mid-stream) or were passed over
    (cooldown), in chain order."""
    tried = {h["tier"] for h in hops}
    out: list[dict[str, str]] = []
    escalated = any(h["tier"] == requested and h["reason"].startswith(provenance.ESCALATED) for h in hops)
    path = provenance.chain(requested, "context_window_fallbacks" if escalated else "fallbacks")
    for tier in path:
        if tier == served:
            break
        if tier in tried:
            out.extend(h for h in hops if h["tier"] == tier)
        elif tier in attempted:  # LiteLLM reports no per-attempt failure for a stream that broke mid-way
            out.append(
                {
                    "tier": tier,
                    "reason": "failed after the response started (mid-stream)"
                    if stream
                    else "failed (LiteLLM reported no reason)",
                }
            )
        else:
            cooling = await provenance.cooling_down(tier)
            out.append(
                {"tier": tier, "reason": "skipped, cooling down after recent failures" if cooling else "skipped"}
            )
    listed = {h["tier"] for h in out}
    out.extend(h for h in hops if h["tier"] not in listed)  # attempts outside the configured chain
    return out


def _since_received(metadata: dict[str, Any]) -> float | None:
    """Seconds since the proxy received the request: the whole chain, not only the last hop."""
    received = metadata.get("litellm_received_at")
    if isinstance(received, datetime):
        return round(time.time() - received.timestamp(), 3)
    return None


handler = DemotionLog()
