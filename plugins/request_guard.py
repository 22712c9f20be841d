"""`async_pre_call_hook`: refuse what no tier can serve, with a 400 that says what to send instead.

An unknown model gets the list of tiers (LiteLLM's own message sends the user to another endpoint), and a
body no backend should see gets a 400 naming the field instead of a walk down the chain (LiteLLM forwards most
of these: `max_tokens: -1` becomes Ollama's "unlimited", `stream: "yes"` fails every tier): `stream` not a
boolean, `n` above 1, numbers out of range or of the wrong type, chat messages that are not role/content
objects with a known role, a chat body without messages. The council (plugins/council.py) is never cached:
its request gets LiteLLM's per-request cache control `no-cache` + `no-store`. Nor is a /v1/messages stream:
LiteLLM 1.106.2 answers one whose prompt a chat stream cached with that chat completion's JSON, not the SSE
events an Anthropic client reads (Claude Code's turns are rarely repeated; cron work uses chat).

A body LiteLLM cannot read as an object is named before any hook runs: LiteLLM 1.106.2's body reader
(`litellm.proxy.common_utils.http_parsing_utils.read_request_body`) reads invalid UTF-8 and JSON nested past
its parser's depth as `{}` (then "Missing required parameter: 'messages'") and passes a JSON list on (an HTTP
500). Its wrapper here looks again only when the reader gave nothing or no object, so a good body costs nothing.
And a key that is not the proxy's is a 401 that says so: with no database LiteLLM answers it with HTTP 400 "No
connected db.", which sends the user looking for a database they never needed.
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from typing import Any

import orjson
from litellm.integrations.custom_logger import CustomLogger

from contract import COUNCIL, no_cache
from plugins import provenance

CHECKED_ON = "1.106.2"  # the LiteLLM version both patches below were read against
BODY_READERS = ("read_request_body", "_read_request_body")  # the names LiteLLM's modules import it by
EXAMPLE_BODY = 'e.g. {"model": "fast-9b", "messages": [{"role": "user", "content": "hi"}]}'
ANTHROPIC = "anthropic_messages"  # the call type of /v1/messages
EMBEDDING_CALLS = frozenset({"embedding", "aembedding"})
CHAT_CALLS = frozenset({"completion", "acompletion"})
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
MAX_TOKENS_LIMIT = 1_000_000  # far above any local context: beyond it a number is a mistake, not a request
# (field, low, high, what it is): a number out of range is refused, never forwarded (Ollama would take
# max_tokens -1 as "unlimited" and a negative timeout would fail every hop as a timeout).
NUMBERS = (
    ("max_tokens", 1, MAX_TOKENS_LIMIT, "an integer"),
    ("max_completion_tokens", 1, MAX_TOKENS_LIMIT, "an integer"),
    ("temperature", 0, 2, "a number"),
    ("top_p", 0, 1, "a number"),
    ("timeout", 0, None, "a number of seconds"),  # None: any number above 0
    ("stream_timeout", 0, None, "a number of seconds"),
)


class RequestGuard(CustomLogger):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reads_bad_bodies = apply_body_check()
        self.names_wrong_keys = apply_key_words()

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict, call_type: Any) -> dict:
        model = data.get("model")
        tiers = sorted(provenance.served_tiers().names())
        if isinstance(model, str) and tiers and model not in tiers:
            raise bad_request(f"unknown model '{model}': this stack serves {', '.join(tiers)}")
        problem = body_problem(data, str(getattr(call_type, "value", call_type)))
        problem = problem or _mode_problem(model, str(getattr(call_type, "value", call_type)))
        if problem:
            raise bad_request(problem)
        anthropic_stream = data.get("stream") is True and str(getattr(call_type, "value", call_type)) == ANTHROPIC
        if model == COUNCIL or anthropic_stream:
            data["cache"] = no_cache()  # never cached: the council must ask its members afresh
        return data


def _mode_problem(model: Any, call_type: str) -> str | None:
    """An embedding asked of a chat tier (or the reverse): said at once, never a walk down a chain of tiers that
    cannot do it. Embeddings never fall back: another model's vectors do not compare with the first one's."""
    tiers = provenance.served_tiers()
    tier = tiers.get(model) if isinstance(model, str) else None
    if tier is None:
        return None
    embedders = [t.name for t in tiers if t.embeds]
    if call_type in EMBEDDING_CALLS and not tier.embeds:
        if not embedders:
            return f"{model} does not serve embeddings, and no tier here does: add an embed tier (README, Embeddings)"
        return f"{model} does not serve embeddings: ask for {' or '.join(embedders)}"
    if call_type not in EMBEDDING_CALLS and tier.embeds:
        return f"{model} serves embeddings only (POST /v1/embeddings): for text, ask for another tier"
    return None


def body_problem(data: dict[str, Any], call_type: str) -> str | None:
    """What is wrong with a request body, in words the client can act on; None when nothing is."""
    if "stream" in data and not isinstance(data["stream"], bool):
        return f"stream must be true or false, not {data['stream']!r}"
    n = data.get("n")
    if n is not None and (isinstance(n, bool) or n != 1):
        return f"n must be 1: a local model gives one choice per request (got {n!r}); send the request again instead"
    for name, low, high, kind in NUMBERS:
        value = data.get(name)
        if value is None:
            continue
        integer = kind == "an integer"
        if isinstance(value, bool) or not isinstance(value, int if integer else int | float) or value != value:
            return f"{name} must be {kind}, not {value!r}"
        if value <= low if high is None else not low <= value <= high:  # no upper bound: above `low`
            bounds = f"above {low}" if high is None else f"from {low} to {high:,}"
            return f"{name} must be {bounds} (got {value!r})"
    if call_type in CHAT_CALLS:
        if "messages" not in data:
            return "the body has no messages: send a JSON object with a messages list, " + EXAMPLE_BODY
        return _messages_problem(data["messages"])
    return None


def _messages_problem(messages: Any) -> str | None:
    example = 'e.g. [{"role": "user", "content": "hi"}]'
    if not isinstance(messages, list) or not messages:
        return f"messages must be a non-empty list of objects with a role, {example}"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return f"messages must be a non-empty list of objects with a role, {example}"
        role, content = message["role"], message.get("content")
        if role not in ROLES:
            return f"messages[{i}].role must be one of {', '.join(ROLES)} (got {role!r})"
        empty_ok = role in ("assistant", "function", "tool") and content is None  # a tool call's own turn
        parts_ok = isinstance(content, list) and all(isinstance(part, dict) for part in content)
        if not (isinstance(content, str) or parts_ok or empty_ok):
            return f"messages[{i}].content must be a string or a list of parts, not {type(content).__name__}"
    return None


def raw_body_problem(raw: bytes) -> str | None:
    """Why `raw` is not a JSON object, in words the client can act on; None when it is one (or is empty)."""
    if not raw.strip():
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"the body is not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}): send JSON encoded as UTF-8"
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in exc.msg or "recursion" in exc.msg.lower():
            return "the body's JSON is nested too deeply to read (over 1,024 levels): send a JSON object"
        return f"the body is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}): send a JSON object"
    if not isinstance(value, dict):
        return f"the body must be a JSON object, not {_json_kind(value)}: {EXAMPLE_BODY}"
    return None


def _json_kind(value: Any) -> str:
    kinds = {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def apply_body_check() -> bool:
    """Wrap LiteLLM's body reader wherever its proxy modules imported it; False (nothing changed) on another
    LiteLLM version. Installing twice is once."""
    if version("litellm") != CHECKED_ON:
        return False
    from litellm.proxy._types import ProxyException
    from litellm.proxy.common_utils import http_parsing_utils

    original = http_parsing_utils.read_request_body
    if getattr(original, "names_bad_bodies", False):
        return True

    async def read_request_body(request: Any) -> Any:
        parsed = await original(request)
        if (isinstance(parsed, dict) and parsed) or request is None or not _json_body(request):
            return parsed
        problem = raw_body_problem(await request.body())
        if problem:
            raise ProxyException(message=problem, type="invalid_request_error", param="request_body", code=400)
        return parsed

    read_request_body.names_bad_bodies = True  # type: ignore[attr-defined]
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith("litellm.proxy"):
            continue
        found = vars(module)  # never getattr: some LiteLLM modules import lazily on attribute access
        for reader in BODY_READERS:
            if found.get(reader) is original:
                setattr(module, reader, read_request_body)
    return True


WRONG_KEY = "the key was refused: it is not this proxy's master key (LITELLM_MASTER_KEY); send that key as the bearer"


def apply_key_words() -> bool:
    """Wrap LiteLLM's key check so "No connected db." (a key that is not the master key, and no database of
    virtual keys to look it up in) is a 401 in words; False (nothing changed) on another LiteLLM version."""
    if version("litellm") != CHECKED_ON:
        return False
    from litellm.proxy._types import ProxyErrorTypes, ProxyException
    from litellm.proxy.auth import user_api_key_auth as auth

    original = auth.user_api_key_auth_builder
    if getattr(original, "names_wrong_keys", False):
        return True

    async def user_api_key_auth_builder(*args: Any, **kwargs: Any) -> Any:
        try:
            return await original(*args, **kwargs)
        except ProxyException as exc:
            if exc.type != ProxyErrorTypes.no_db_connection:
                raise
            raise ProxyException(message=WRONG_KEY, type=ProxyErrorTypes.auth_error, param=None, code=401) from None

    user_api_key_auth_builder.names_wrong_keys = True  # type: ignore[attr-defined]
    auth.user_api_key_auth_builder = user_api_key_auth_builder  # type: ignore[assignment]
    return True


def _json_body(request: Any) -> bool:
    """Form uploads and binary bodies are LiteLLM's to read; anything else is meant as JSON."""
    content_type = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    return not (content_type.startswith("multipart/") or content_type.endswith(("form-urlencoded", "protobuf")))


def bad_request(message: str) -> Exception:
    """A 400 with `message` as the client's error text (also used by plugins/premium_guard.py)."""
    from fastapi import HTTPException

    return HTTPException(status_code=400, detail=message)


handler = RequestGuard()
