"""The council: a LiteLLM custom provider served as the logical model `council`.

Several members answer the question concurrently; a chairman reads their answers, labelled "Response A",
"Response B", ... with no model names, and writes one final answer (after karpathy/llm-council, without its
ranking stage). Configured in the yaml under the council deployment's `litellm_params`, which arrive here in
`optional_params`:

    model: council/default
    members: [fast-9b, fast-9b]     # tiers, called concurrently
    member_temperature: 0.7
    chairman: think-9b
    deadline_s: 240                 # the whole council, members and chairman (a request's `timeout` may shorten it)

Every inner call goes through the proxy's own router (read at call time), so fallbacks, keep_alive, the
demotion log and cooldowns apply to it as to any request. A request with `disable_fallbacks` (`ask --no-fallback`)
passes it on: then no part of the council may demote.

Honesty: the council leaves a report per call id (`provenance.note_headers`), which `plugins/served_by.py` turns into
plain response headers: `X-Council-Members` (the tier that served each member that answered, after any
fallback), `X-Council-Chairman`, `X-Council-Failed` (how many members failed, when any did) and
`X-Council-Degraded` (`fast-9b->fast-3b,...`, when any part was demoted). Headers a custom handler sets itself
come out prefixed `llm_provider-`, and a streaming handler cannot reach its stream's headers at all, hence the
report. (The report lives in `provenance`, a normal import: LiteLLM loads this file as a separate module object.)
The members' answers travel in the response: `choices[0].message.provider_specific_fields.council`
(non-streaming) or the first chunk's `choices[0].delta.provider_specific_fields.council` (streaming).

Never cached: `plugins/request_guard.py` turns the proxy's cache off for `council`, and the inner calls are
made with the cache off too (two identical questions must ask the members twice).
"""

# No `from __future__ import annotations`: LiteLLM loads this file without registering it in sys.modules, where
# dataclasses look string annotations up.
import asyncio
import string
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from litellm.llms.custom_llm import CustomLLM, CustomLLMError

from contract import (
    COUNCIL,
    COUNCIL_CHAIRMAN,
    COUNCIL_DEGRADED,
    COUNCIL_FAILED,
    COUNCIL_FIELD,
    COUNCIL_MEMBERS,
    DEFAULT_TIER,
    format_pairs,
    no_cache,
)
from plugins import provenance
from plugins.provenance import short_reason

DEFAULT_MEMBERS = (DEFAULT_TIER, DEFAULT_TIER)
DEFAULT_MEMBER_TEMPERATURE = 0.7
DEFAULT_CHAIRMAN = "think-9b"
DEFAULT_DEADLINE_S = 240.0
UNKNOWN = "unknown"  # a part answered but nothing said which tier: shown so, never guessed as the tier asked for

CHAIRMAN_PROMPT = """You are the chairman of a council of assistants. Each member answered the question below
on their own; their answers follow, anonymised.

Question:
{question}

{responses}

Write the single best final answer to the question. Use what is correct and useful in the responses, settle
their disagreements, and leave out their mistakes. Answer the question directly: do not mention the council,
the members or the responses."""


@dataclass
class MemberAnswer:
    requested: str
    label: str | None = None  # "A", "B", ... among the members that answered, in member order
    served: str | None = None
    text: str = ""
    error: str | None = None


@dataclass
class Settings:
    members: tuple[str, ...]
    member_temperature: float
    chairman: str
    deadline_s: float

    @classmethod
    def of(cls, optional_params: dict[str, Any], timeout: Any = None) -> "Settings":
        """The yaml's settings; a request's own `timeout` (seconds) may shorten the deadline, never lengthen it."""
        members = optional_params.get("members") or DEFAULT_MEMBERS
        if isinstance(members, str):
            members = [m.strip() for m in members.split(",") if m.strip()]
        return cls(
            members=tuple(str(m) for m in members),
            member_temperature=float(optional_params.get("member_temperature", DEFAULT_MEMBER_TEMPERATURE)),
            chairman=str(optional_params.get("chairman") or DEFAULT_CHAIRMAN),
            deadline_s=min(
                float(optional_params.get("deadline_s") or DEFAULT_DEADLINE_S),
                float(timeout) if isinstance(timeout, (int, float)) and timeout > 0 else float("inf"),
            ),
        )


# -- the report that becomes response headers ---------------------------------------------------------


def _report(call_id: str | None, members: list[MemberAnswer], settings: Settings, chairman: str | None) -> None:
    if not call_id:
        return
    answered = [m for m in members if m.served]
    headers = {COUNCIL_MEMBERS: ",".join(m.served or "" for m in answered)}
    if chairman:
        headers[COUNCIL_CHAIRMAN] = chairman
    failed = len(members) - len(answered)
    if failed:
        headers[COUNCIL_FAILED] = str(failed)
    demoted = [(m.requested, m.served or UNKNOWN) for m in answered if m.served != m.requested]
    if chairman and chairman != settings.chairman:
        demoted.append((settings.chairman, chairman))
    if demoted:
        headers[COUNCIL_DEGRADED] = format_pairs(demoted)
    provenance.note_headers(call_id, headers)


# -- the stages ---------------------------------------------------------------------------------------


def _own_call() -> dict[str, Any]:
    """An inner call's own id and arrival time, as the proxy gives a client's call: every hop of one member's
    chain then shares one ledger, so its demotion record says each hop's reason and the chain's latency (an
    inner call without them got a fresh id per hop: 'fast-9b: skipped', latency null)."""
    return {"litellm_call_id": str(uuid.uuid4()), "metadata": {"litellm_received_at": datetime.now(UTC)}}


def _router() -> Any:
    from litellm.proxy import proxy_server

    router = getattr(proxy_server, "llm_router", None)
    if router is None:
        raise CustomLLMError(status_code=500, message="council: the proxy's router is not running")
    return router


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content or "")


def question_of(messages: list[dict[str, Any]]) -> str:
    """The user's question: the last user message."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text(message.get("content"))
    return _text(messages[-1].get("content")) if messages else ""


async def stage1_collect_responses(
    messages: list[dict[str, Any]], settings: Settings, extra: dict[str, Any]
) -> list[MemberAnswer]:
    """Every member answers the whole conversation, concurrently; a member's failure is kept, not raised."""
    router = _router()
    answers = [MemberAnswer(requested=tier) for tier in settings.members]

    async def ask(answer: MemberAnswer) -> None:
        call = _own_call()
        try:
            response = await router.acompletion(
                model=answer.requested,
                messages=messages,
                temperature=settings.member_temperature,
                cache=no_cache(),
                **call,
                **extra,
            )
        except Exception as exc:  # one member's failure is the council's information, not its end
            hops = provenance.failures(call["litellm_call_id"])  # every tier of its chain, not only the last
            answer.error = "; ".join(str(h) for h in hops) if hops else short_reason(exc)
            provenance.forget(call["litellm_call_id"])
            return
        answer.text = _text(response.choices[0].message.content)
        answer.served = provenance.served_tier(response) or UNKNOWN

    await asyncio.gather(*(ask(a) for a in answers))
    for letter, answer in zip(string.ascii_uppercase, [a for a in answers if a.served], strict=False):
        answer.label = letter
    return answers


def chairman_messages(question: str, answers: list[MemberAnswer]) -> list[dict[str, str]]:
    responses = "\n\n".join(f"Response {a.label}:\n{a.text}" for a in answers if a.served)
    return [{"role": "user", "content": CHAIRMAN_PROMPT.format(question=question, responses=responses)}]


async def stage3_synthesize_final(
    question: str, answers: list[MemberAnswer], settings: Settings, extra: dict[str, Any], stream: bool
) -> Any:
    """The chairman's answer: a ModelResponse, or a stream of chunks when `stream`."""
    try:
        return await _router().acompletion(
            model=settings.chairman,
            messages=chairman_messages(question, answers),
            cache=no_cache(),
            stream=stream,
            **_own_call(),
            **extra,
        )
    except Exception as exc:
        raise CustomLLMError(
            status_code=getattr(exc, "status_code", None) or 503,
            message=f"council: the chairman {settings.chairman} failed ({short_reason(exc)})",
        ) from exc


def _members_failed(answers: list[MemberAnswer]) -> CustomLLMError:
    why = "; ".join(a.error if a.error.startswith(f"{a.requested}: ") else f"{a.requested}: {a.error}" for a in answers)
    return CustomLLMError(status_code=503, message=f"council: every member failed ({why})")


def _member_fields(answers: list[MemberAnswer]) -> dict[str, Any]:
    return {
        COUNCIL_FIELD: {
            "members": [
                {"label": a.label, "requested": a.requested, "served_by": a.served, "answer": a.text, "error": a.error}
                for a in answers
            ]
        }
    }


def _deadline_error(settings: Settings, stage: str) -> CustomLLMError:
    return CustomLLMError(
        status_code=504, message=f"council: deadline of {settings.deadline_s:g} s passed while {stage}"
    )


def _extra(optional_params: dict[str, Any], litellm_params: dict[str, Any] | None) -> dict[str, Any]:
    from litellm.router_utils.fallback_event_handlers import fallbacks_disabled_for_request

    params = litellm_params or {}
    disabled = fallbacks_disabled_for_request(params) or bool(optional_params.get("disable_fallbacks"))
    return {"disable_fallbacks": True} if disabled else {}


def _prepare(optional_params: dict[str, Any], litellm_params: Any, timeout: Any) -> tuple[Settings, dict, float]:
    """The settings, the options every inner call gets, and the deadline on the running loop's clock."""
    settings = Settings.of(optional_params, timeout)
    deadline = asyncio.get_running_loop().time() + settings.deadline_s
    return settings, _extra(optional_params, litellm_params), deadline


def _usage(usage: Any) -> dict[str, int]:
    return {key: int(getattr(usage, key, 0) or 0) for key in ("prompt_tokens", "completion_tokens", "total_tokens")}


class Council(CustomLLM):
    async def _members(
        self, messages: list, settings: Settings, extra: dict[str, Any], deadline: float
    ) -> list[MemberAnswer]:
        try:
            async with asyncio.timeout_at(deadline):
                answers = await stage1_collect_responses(messages, settings, extra)
        except TimeoutError:
            raise _deadline_error(settings, "the members answered") from None
        if not any(a.served for a in answers):
            raise _members_failed(answers)
        return answers

    async def acompletion(
        self,
        model: str,
        messages: list,
        api_base: str,
        custom_prompt_dict: dict,
        model_response: Any,
        print_verbose: Any,
        encoding: Any,
        api_key: Any,
        logging_obj: Any,
        optional_params: dict,
        *args: Any,
        litellm_params: Any = None,
        timeout: Any = None,
        **kwargs: Any,
    ) -> Any:
        settings, extra, deadline = _prepare(optional_params, litellm_params, timeout)
        answers = await self._members(messages, settings, extra, deadline)
        try:
            async with asyncio.timeout_at(deadline):
                final = await stage3_synthesize_final(question_of(messages), answers, settings, extra, stream=False)
        except TimeoutError:
            raise _deadline_error(settings, "the chairman answered") from None
        _report(
            getattr(logging_obj, "litellm_call_id", None),
            answers,
            settings,
            provenance.served_tier(final) or UNKNOWN,
        )
        message = model_response.choices[0].message
        message.content = _text(final.choices[0].message.content)
        message.provider_specific_fields = _member_fields(answers)
        model_response.choices[0].finish_reason = final.choices[0].finish_reason or "stop"
        model_response.model = f"{COUNCIL}/{model}"
        model_response.created = int(time.time())
        # the chairman's usage; each member's call is logged on its own
        model_response.usage = _usage(getattr(final, "usage", None))
        return model_response

    async def astreaming(
        self,
        model: str,
        messages: list,
        api_base: str,
        custom_prompt_dict: dict,
        model_response: Any,
        print_verbose: Any,
        encoding: Any,
        api_key: Any,
        logging_obj: Any,
        optional_params: dict,
        *args: Any,
        litellm_params: Any = None,
        timeout: Any = None,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        settings, extra, deadline = _prepare(optional_params, litellm_params, timeout)
        answers = await self._members(messages, settings, extra, deadline)  # nothing is sent meanwhile
        try:
            async with asyncio.timeout_at(deadline):
                stream = await stage3_synthesize_final(question_of(messages), answers, settings, extra, stream=True)
        except TimeoutError:
            raise _deadline_error(settings, "the chairman answered") from None
        chunks = stream.__aiter__()
        first, usage = True, None
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await chunks.__anext__()
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise _deadline_error(settings, "the chairman answered") from None
            if first:
                _report(
                    getattr(logging_obj, "litellm_call_id", None),
                    answers,
                    settings,
                    provenance.served_tier(stream) or UNKNOWN,
                )
            usage = getattr(chunk, "usage", None) or usage
            choices = getattr(chunk, "choices", None) or []
            text = (getattr(choices[0].delta, "content", None) or "") if choices else ""
            if not text and not first:
                continue
            yield {
                "text": text,
                "is_finished": False,
                "finish_reason": None,
                "index": 0,
                "tool_use": None,
                "usage": None,
                "provider_specific_fields": _member_fields(answers) if first else None,
            }
            first = False
        done = _usage(usage) if usage else None
        yield {"text": "", "is_finished": True, "finish_reason": "stop", "index": 0, "tool_use": None, "usage": done}


handler = Council()
