"""`ask "prompt"`: one question to one tier, the answer streamed, the tier that answered made plain.

Kept apart from the subcommands so the common case pays for nothing else.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from ask_cli import paths

DEFAULT_TIER = "fast-9b"
# flag -> tier: the explicit tier flags. `-m NAME` reaches any other tier the proxy serves.
TIER_FLAGS: dict[str, str] = {
    "--9b": "fast-9b",
    "--3b": "fast-3b",
    "--1b": "fast-1b",
    "--think": "think-9b",
    "--coder": "coder-30b",
    "--heavy": "heavy",
    "--council": "council",
    "--tiny": "tiny",
    "--premium": "premium",  # the paid lane (ask serve --cloud): only ever reached by asking for it
}


class UsageError(Exception):
    """The command line cannot be run as given (exit 2)."""


class NoKey(Exception):
    """No master key anywhere: the stack has never been started on this machine."""


@dataclass
class Question:
    model: str
    prompt: str
    system: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    fallbacks: bool = True
    cached: bool = True  # False: neither this CLI's cache nor the proxy's answers or keeps it
    warnings: list[str] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages.append({"role": "user", "content": self.prompt})
        body: dict[str, Any] = {"model": self.model, "messages": messages, "stream_options": {"include_usage": True}}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if not self.fallbacks:
            body["disable_fallbacks"] = True  # LiteLLM: this request fails rather than demote
        if not self.cached:
            body["cache"] = {"no-cache": True, "no-store": True}  # LiteLLM's per-request cache control
        return body


def pick_tier(flags: list[str], model: str | None) -> str:
    chosen = [TIER_FLAGS[f] for f in flags] + ([model] if model else [])
    if len(chosen) > 1:
        raise UsageError(f"pick one tier, not {len(chosen)} ({', '.join(chosen)})")
    return chosen[0] if chosen else DEFAULT_TIER


_piped: list[bytes] = []


def piped_stdin() -> bytes:
    """Whatever was piped in, read once: the cache-hit path and the full CLI must see the same bytes."""
    if not _piped:
        _piped.append(b"" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer.read())
    return _piped[0]


def read_prompt(argument: str | None, raw: bytes | None = None) -> tuple[str, list[str]]:
    """The argument and piped stdin together (`git diff | ask "commit message"`); invalid UTF-8 replaced."""
    raw = piped_stdin() if raw is None else raw
    warnings: list[str] = []
    piped = raw.decode("utf-8", errors="replace")
    if "\ufffd" in piped and b"\xef\xbf\xbd" not in raw:
        warnings.append("stdin was not valid UTF-8: undecodable bytes were replaced with U+FFFD")
    parts = [p for p in ((argument or "").strip(), piped.strip()) if p]
    if not parts:
        raise UsageError('no prompt: give one as an argument (ask "...") or on stdin (... | ask)')
    return "\n\n".join(parts), warnings


@dataclass
class Outcome:
    answer: str = ""
    served_by: str = ""
    demoted_from: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    council: dict[str, Any] | None = None  # the council's members and their answers (`--council`)
    council_weakened: bool = False  # a council part was demoted or a member failed
    lane: str | None = None  # where the answer was made (X-Served-Lane); None for a cache hit
    ttft_s: float | None = None
    latency_s: float = 0.0
    exit_code: int = 0
    error: str | None = None

    @property
    def demoted(self) -> bool:
        """The answer is not what the tier asked for would have given: demoted, or a weakened council."""
        return self.demoted_from is not None or self.council_weakened


def ask_proxy(question: Question, emit: Any, marker: Any) -> Outcome:
    """Stream the answer through `emit(piece)`; call `marker(text)` once if the proxy demoted the request."""
    from ask_cli import client
    from plugins.provenance import council_marker, degraded_marker

    key = paths.master_key(create=False)
    if not key:
        raise NoKey(
            f"no master key in {paths.key_file()} or $LITELLM_MASTER_KEY: start the stack once with "
            "`ask serve`, which creates it"
        )
    started = time.perf_counter()
    outcome = Outcome()
    reply, pieces = client.stream_chat(client.proxy_url(), key, question.body())
    outcome.served_by, outcome.demoted_from = reply.served_by, reply.demoted_from
    outcome.council_weakened = reply.council_weakened
    outcome.lane = reply.lane
    if reply.demoted:
        marker(degraded_marker(question.model, reply.served_by))
    elif reply.council_weakened:
        marker(council_marker(reply.council_degraded, reply.council_failed))
    for piece in pieces:
        if outcome.ttft_s is None:
            outcome.ttft_s = round(time.perf_counter() - started, 3)
        emit(piece)
    outcome.answer, outcome.usage, outcome.council = reply.text, reply.usage, reply.council
    outcome.latency_s = round(time.perf_counter() - started, 3)
    return outcome


def as_json(question: Question, outcome: Outcome, cache_hit: bool) -> str:
    council = {"council": outcome.council} if outcome.council is not None else {}
    return json.dumps(
        {
            "answer": outcome.answer,
            "model": question.model,
            "served_by": outcome.served_by,
            "demoted": outcome.demoted,
            "lane": outcome.lane,
            "cache_hit": cache_hit,
            "latency_s": outcome.latency_s,
            "usage": outcome.usage,
            **council,
        },
        ensure_ascii=False,
    )


def cache_key(question: Question) -> str | None:
    """The prompt-cache key, or None for a tier that is never cached (the council)."""
    from ask_cli import cache

    if not cache.cacheable(question.model):
        return None
    return cache.cache_key(question.model, question.system, question.prompt, question.temperature, question.max_tokens)


def answer_from_cache(question: Question, json_output: bool) -> bool:
    """Print a cached answer and log the call; False on a miss. No network, no heavy imports."""
    from ask_cli import cache

    key = cache_key(question)
    if key is None or not cache.cache_path().exists():
        return False
    started = time.perf_counter()
    with cache.PromptCache() as store:
        hit = store.get(key)
    if hit is None:
        return False
    outcome = Outcome(
        answer=hit.answer, served_by=hit.served_by, usage=hit.usage, latency_s=round(time.perf_counter() - started, 4)
    )
    sys.stdout.write(
        as_json(question, outcome, cache_hit=True) + "\n"
        if json_output
        else hit.answer + ("" if hit.answer.endswith("\n") else "\n")
    )
    sys.stdout.flush()
    log_call(question, outcome, cache_hit=True)
    return True


def store_answer(question: Question, outcome: Outcome) -> str | None:
    """Keep a good answer for cron's next identical call; never a demoted one (the next call should retry the
    healthy tier) nor the council's. Returns a warning line when the cache could not be written."""
    from ask_cli import cache

    key = cache_key(question)
    if key is None or outcome.exit_code != 0 or not cache.should_store(question.model, outcome.demoted):
        return None
    with cache.PromptCache() as store:
        if store.put(key, outcome.answer, outcome.served_by, question.model, outcome.usage):
            return None
        return store.last_error


def log_call(question: Question, outcome: Outcome, cache_hit: bool) -> str | None:
    """One telemetry line for this call (never the text); a warning line when it could not be written."""
    from ask_cli import telemetry

    tokens = outcome.usage.get("completion_tokens") if outcome.usage else None
    ok = telemetry.record(
        model=question.model,
        served_by=outcome.served_by,
        prompt=question.prompt,
        response=outcome.answer,
        latency_s=outcome.latency_s,
        cache_hit=cache_hit,
        demoted=outcome.demoted,
        exit_code=outcome.exit_code,
        tokens=tokens if isinstance(tokens, int) else None,
        ttft_s=outcome.ttft_s,
        error=outcome.error,
        lane=outcome.lane,
    )
    return None if ok else telemetry.last_error
