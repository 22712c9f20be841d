"""`ask "prompt"`: one question to one tier, the answer streamed, the tier that answered made plain.

Kept apart from the subcommands so the common case pays for nothing else: the fast path (ask_cli/entry.py)
imports this module and nothing heavier. Its records are namedtuples and plain classes, as `contract`'s and
`client`'s are: `dataclasses` (it imports `inspect`) would cost every call ~15 ms, `typing.NamedTuple` ~4 ms
(bench/README.md, `cli.py`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import namedtuple

from ask_cli.options import Option, between, check_values, non_empty
from contract import COUNCIL, DEFAULT_TIER, SERVED_BY, Provenance, no_cache, paths

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~3 ms) on every call
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any


class TierFlag(namedtuple("TierFlag", ["flag", "tier", "about", "example"])):
    """One `ask --9b`-style flag: the tier it asks for, what sets that tier apart, an example question (str each)."""

    __slots__ = ()

    @property
    def help(self) -> str:
        return f"{self.tier}{', ' + self.about if self.about else ''}. Example: ask {self.flag} '{self.example}'"


# The explicit tier flags, one line each: `ask --help`, Typer's parser and the fast path all read this table.
# `-m NAME` reaches any other tier the proxy serves.
TIER_FLAGS: tuple[TierFlag, ...] = (
    TierFlag("--9b", DEFAULT_TIER, "the default", "hi"),
    TierFlag("--3b", "fast-3b", "", "classify: ..."),
    TierFlag("--1b", "fast-1b", "", "yes or no: ..."),
    TierFlag("--think", "think-9b", "", "why …"),
    TierFlag("--coder", "coder-30b", "", "refactor ..."),
    TierFlag("--heavy", "heavy", "llama.cpp", "plan ..."),
    TierFlag("--council", COUNCIL, "uncached", "…"),
    TierFlag("--tiny", "tiny", "embedded", "hi"),
    TierFlag("--premium", "premium", "paid cloud (ask serve --cloud)", "…"),  # only ever reached by asking for it
)


# The question's other options (ask_cli/options.py): `dest` is `ask()`'s keyword.
QUESTION_OPTIONS: tuple[Option, ...] = (
    Option(("-m", "--model"), "model", str, "Any tier. Example: -m coder-30b", check=non_empty),
    Option(("-s", "--system"), "system", str, "System prompt. Example: -s 'Be terse.'"),
    Option(
        ("--temperature",),
        "temperature",
        float,
        "Sampling temperature. Example: --temperature 0",
        check=between(0.0, 2.0),
    ),
    Option(("--max-tokens",), "max_tokens", int, "Answer length cap. Example: --max-tokens 200", check=between(1)),
    Option(("--json",), "as_json", bool, "One JSON object: answer, served_by, demoted, ..."),
    Option(("--no-cache",), "no_cache", bool, "A fresh answer: no cache read or written."),
    Option(("--no-fallback",), "no_fallback", bool, "Fail rather than demote. For cron."),
)
SERVED_UNKNOWN = f"the proxy did not say which tier served (no {SERVED_BY})"
WAIT_AFTER_S = 0.7  # a first token later than this gets the waiting line (on a terminal)
WAIT_POLL_S = 0.5  # how often the line re-reads the budget plugin's state
CLEAR_LINE = "\r\x1b[2K"


class UsageError(Exception):
    """The command line cannot be run as given (exit 2)."""


class NoKey(Exception):
    """No master key anywhere: the stack has never been started on this machine."""


class Terminated(Exception):
    """SIGTERM while a question was being answered: handled as Ctrl-C is (exit 143)."""


def _terminated(signum: int, frame: object) -> None:
    raise Terminated()


class Question(
    namedtuple(
        "Question",
        ["model", "prompt", "system", "temperature", "max_tokens", "fallbacks", "cached"],
        defaults=(None, None, None, True, True),
    )
):
    """One question as asked, what the request body and the cache key are made of: `model` (the tier) and
    `prompt`; `system`, `temperature`, `max_tokens` (None: unset); `fallbacks` False: fail rather than demote;
    `cached` False: neither this CLI's cache nor the proxy's answers or keeps it."""

    __slots__ = ()

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
            body["cache"] = no_cache()
        return body


def pick_tier(flags: Iterable[str], model: str | None) -> str:
    """The one tier asked for (flags in any order or repeated count once); UsageError for two."""
    given = set(flags)
    chosen = [row.tier for row in TIER_FLAGS if row.flag in given] + ([model] if model else [])
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


def warn(message: str) -> None:
    """One `ask: warning: …` line on stderr: something the user should know about an answer that still came."""
    sys.stderr.write(f"ask: warning: {message}\n")
    sys.stderr.flush()


class Outcome:
    """What one call gave, filled in as it goes.

    `served_by` "": no tier answered (an error); None: one did, but the proxy did not say which. `demoted`: not what
    the tier asked for would have given (demoted, or a weakened council). `council`: the council's members and
    their answers (`--council`). `lane`: where the answer was made (X-Served-Lane); None for a cache hit."""

    __slots__ = (
        "answer",
        "council",
        "demoted",
        "error",
        "exit_code",
        "lane",
        "latency_s",
        "served_by",
        "ttft_s",
        "usage",
    )

    def __init__(
        self,
        *,
        answer: str = "",
        served_by: str | None = "",
        demoted: bool = False,
        usage: dict[str, Any] | None = None,
        lane: str | None = None,
        latency_s: float = 0.0,
        exit_code: int = 0,
    ) -> None:
        self.answer, self.served_by, self.demoted, self.usage = answer, served_by, demoted, usage or {}
        self.lane, self.latency_s, self.exit_code = lane, latency_s, exit_code
        self.council: dict[str, Any] | None = None
        self.ttft_s: float | None = None
        self.error: str | None = None


class WaitingLine:
    """What a slow first token waits for, on a terminal's stderr: after `WAIT_AFTER_S`, the budget plugin's
    `contract.budget.waiting_line` (`loading coder-30b…`, `waiting for fast-9b to finish…`), else `waiting for
    fast-9b…`; re-read every `WAIT_POLL_S`, rewritten in place when it changes, erased by `stop` before the
    first token is written.

    A thread of `_thread`, the documented low-level API the interpreter has loaded already: `threading` would
    cost every interactive call ~2 ms of import, and a socket timeout cannot resume a buffered read."""

    def __init__(self, tier: str) -> None:
        import _thread

        self.tier = tier
        self._shown = ""
        self._stopped = False
        self._screen = _thread.allocate_lock()  # one writer on stderr at a time
        self._wake = _thread.allocate_lock()  # held until `stop`: the thread's sleep
        self._wake.acquire()
        _thread.start_new_thread(self._run, ())

    def _run(self) -> None:
        try:
            if self._wake.acquire(timeout=WAIT_AFTER_S):
                return
            from contract import budget

            while True:
                text = budget.waiting_line(budget.read_state(), self.tier) or f"waiting for {self.tier}…"
                with self._screen:
                    if self._stopped:
                        return
                    if text != self._shown:
                        self._write(CLEAR_LINE + _fit(text))
                        self._shown = text
                if self._wake.acquire(timeout=WAIT_POLL_S):
                    return
        except Exception:  # noqa: S110 - a terminal that cannot be written to must not break the answer
            pass

    def say(self, line: str) -> None:
        """A whole stderr line (a warning, the demotion marker) above the waiting line, which comes back after."""
        with self._screen:
            self._erase()
            self._write(line + "\n")

    def stop(self) -> None:
        """Erase the line for good (idempotent)."""
        with self._screen:
            if self._stopped:
                return
            self._stopped = True
            self._erase()
        self._wake.release()

    def _erase(self) -> None:
        if self._shown:
            self._write(CLEAR_LINE)
            self._shown = ""

    @staticmethod
    def _write(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()


def _fit(text: str) -> str:
    """One terminal row: a longer line would wrap, and `\r` clears only the last row."""
    import os

    try:
        width = os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        return text
    return text if width < 2 or len(text) < width else text[: width - 2] + "…"  # width 0: size unknown


def waiting_line_for(json_output: bool, tier: str) -> WaitingLine | None:
    """A `WaitingLine` when stderr is a terminal and the answer is not one JSON object; None otherwise."""
    if json_output or sys.stderr is None or not sys.stderr.isatty():
        return None
    return WaitingLine(tier)


def error(message: str) -> None:
    """One `ask: …` line on stderr: why this call gives no answer."""
    sys.stderr.write(f"ask: {message}\n")
    sys.stderr.flush()


def ask(
    prompt: str | None,
    tier_flags: Iterable[str],
    *,
    model: str | None = None,
    system: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    as_json: bool = False,
    no_cache: bool = False,
    no_fallback: bool = False,
) -> int:
    """`ask "prompt"` once its command line is parsed (the fast path's parser or Typer's: the keywords are
    `QUESTION_OPTIONS`' dests): the answer printed, the exit code returned (2 a usage error, 130 interrupted)."""
    from ask_cli import client

    given = {"model": model, "temperature": temperature, "max_tokens": max_tokens}
    try:
        bad = check_values(QUESTION_OPTIONS, given)
        if bad:
            raise UsageError(bad)
        try:
            client.timeout_s()
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        tier = pick_tier(tier_flags, model)
        text, warnings = read_prompt(prompt)
    except UsageError as exc:
        error(str(exc))
        return 2
    for warning in warnings:
        warn(warning)
    asked = Question(
        model=tier,
        prompt=text,
        system=system,
        temperature=temperature,
        max_tokens=max_tokens,
        fallbacks=not no_fallback,
        cached=not no_cache,
    )
    outcome = answer(asked, as_json)
    if outcome.exit_code == 130:
        sys.stderr.write("\n")  # after the terminal's ^C; SIGTERM (143) is said as `ask: terminated`
    elif outcome.exit_code:
        error(outcome.error or "failed")
    return outcome.exit_code


def answer(question: Question, json_output: bool = False, url: str | None = None) -> Outcome:
    """Ask and print, for `ask "prompt"` and `ask serve --ask` alike: a cached answer if there is one, else the
    proxy's (at `url`, default `client.proxy_url()`) streamed to stdout, or as one JSON object, with a demotion
    said on stderr; then the telemetry line and the cache write. A failure comes back in the outcome
    (`exit_code` 1, 2 for a bad ASK_TIMEOUT_S (nothing logged), 130 interrupted, 143 terminated, and `error`)
    for the caller to say; warnings are said here. SIGTERM is handled as Ctrl-C while the proxy is asked, and
    only then."""
    # `signal` wraps the interpreter's own `_signal`, loaded at start-up, in enums: ~0.7 ms of every miss
    import _signal

    from ask_cli import client

    if question.cached and answer_from_cache(question, json_output):
        return Outcome()
    base = url or client.proxy_url()
    outcome = Outcome()  # filled as the answer arrives: a failure keeps what was known (served_by "": none yet)
    started = time.perf_counter()
    try:
        timeout = client.timeout_s()
    except ValueError as exc:  # ASK_TIMEOUT_S (`ask` checks it before reading stdin)
        outcome.exit_code, outcome.error = 2, str(exc)
        return outcome
    previous = _signal.signal(_signal.SIGTERM, _terminated)
    try:
        _ask_proxy(question, base, json_output, outcome, timeout)
    except (NoKey, paths.KeyFileError) as exc:
        outcome.exit_code, outcome.error = 1, str(exc)
    except client.ProxySilent as exc:
        outcome.exit_code = 1
        outcome.error = (
            f"the proxy at {base} sent nothing for {exc.seconds:g} s (hung? restart it: ask serve); "
            f"set {client.TIMEOUT_ENV} to wait longer"
        )
    except client.ProxyUnreachable as exc:
        outcome.exit_code = 1
        outcome.error = (
            f"the proxy is not running at {base} ({exc}): start it with `ask serve`"
            if outcome.ttft_s is None and not outcome.answer
            else f"the answer was cut off: {exc}"
        )
    except client.ProxyError as exc:
        outcome.exit_code = 1
        outcome.error = f"the answer was cut off: {exc.message}" if outcome.answer else exc.message
        if exc.status == 401:
            outcome.error = refused_key(base)
        if exc.headers and not outcome.served_by:  # an error status: the tier that failed, when the headers say
            outcome.served_by = Provenance.of_headers(question.model, exc.headers).served
        if outcome.served_by is None and not outcome.answer:  # no text came: no tier answered
            outcome.served_by = ""
    except ValueError as exc:  # an event that is not JSON: logged as the failure it is, not as an answer
        outcome.exit_code, outcome.error = 1, f"the proxy sent a stream event that is not JSON ({exc})"
    except KeyboardInterrupt:
        outcome.exit_code, outcome.error = 130, "interrupted"
    except Terminated:
        outcome.exit_code, outcome.error = 143, "terminated"
    finally:
        _signal.signal(_signal.SIGTERM, previous)
        if outcome.exit_code:
            outcome.latency_s = round(time.perf_counter() - started, 3)
            if outcome.answer and not json_output and not outcome.answer.endswith("\n"):
                sys.stdout.write("\n")  # the part that came stays on screen, on its own lines
                sys.stdout.flush()
        warnings = [log_call(question, outcome, cache_hit=False)]
    if outcome.exit_code == 0:
        if json_output:
            sys.stdout.write(as_json(question, outcome, cache_hit=False) + "\n")
        elif outcome.answer and not outcome.answer.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()
        if question.cached:
            warnings.append(store_answer(question, outcome))
    for warning in filter(None, warnings):
        warn(warning)
    return outcome


def refused_key(base: str) -> str:
    """The line for a 401: which key `ask` sent, and the two ways to make the two sides agree."""
    sent = f"${paths.KEY_ENV}" if os.environ.get(paths.KEY_ENV, "").strip() else str(paths.key_file())
    return (
        f"the proxy at {base} refused the key from {sent}: it runs with another master key; set "
        f"{paths.KEY_ENV} to the proxy's key, or restart the stack with `ask serve`"
    )


def _ask_proxy(question: Question, base: str, json_output: bool, outcome: Outcome, timeout: float) -> None:
    """Stream the proxy's answer to stdout (unless `json_output`) into `outcome`, as it arrives; say on stderr
    what the headers say. Raises what the client raises, with `outcome` holding what came before."""
    from ask_cli import client

    key = paths.master_key(create=False)
    if not key:
        raise NoKey(
            f"no master key in {paths.key_file()} or ${paths.KEY_ENV}: start the stack once with "
            "`ask serve`, which creates it"
        )
    started = time.perf_counter()
    waiting = waiting_line_for(json_output, question.model)
    try:
        reply, pieces = client.stream_chat(base, key, question.body(), timeout)
        said = reply.provenance
        if said.served is None:
            _stderr_line(f"ask: warning: {SERVED_UNKNOWN}", waiting)
        marker = said.marker()
        if marker:
            _stderr_line(marker, waiting)
        if waiting and said.served:
            waiting.tier = said.served  # what the budget plugin's state names
        outcome.served_by, outcome.demoted, outcome.lane = said.served, marker is not None, said.lane
        for piece in pieces:
            if outcome.ttft_s is None:
                outcome.ttft_s = round(time.perf_counter() - started, 3)
                if waiting:
                    waiting.stop()
            outcome.answer += piece
            if not json_output:
                sys.stdout.write(piece)
                sys.stdout.flush()
    finally:
        if waiting:
            waiting.stop()
    outcome.answer, outcome.usage, outcome.council = reply.text, reply.usage, reply.council
    outcome.latency_s = round(time.perf_counter() - started, 3)


def _stderr_line(line: str, waiting: WaitingLine | None) -> None:
    if waiting:
        waiting.say(line)
    else:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def as_json(question: Question, outcome: Outcome, cache_hit: bool) -> str:
    council = {COUNCIL: outcome.council} if outcome.council is not None else {}
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
    with cache.PromptCache(recover=True) as store:
        hit = store.get(key)
    if store.notice:
        error(store.notice)
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
    """Keep a good answer for cron's next identical call (see `cache.should_store`). Returns a warning line when
    the cache could not be written."""
    from ask_cli import cache

    key = cache_key(question)
    if (
        key is None
        or outcome.exit_code != 0
        or not cache.should_store(question.model, outcome.served_by, outcome.demoted)
    ):
        return None
    with cache.PromptCache(recover=True) as store:
        if store.notice:
            error(store.notice)
        if store.put(key, outcome.answer, outcome.served_by or "", question.model, outcome.usage):
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
