"""The plugins' hooks called in-process, with the arguments LiteLLM itself builds: fast, beside the real-proxy tests.

A real `litellm.Router` is built from the project's own litellm-config.yaml (backends at closed loopback ports) and
installed as the proxy's `llm_router`, so `plugins.provenance.served_tiers()` sees the tiers and deployment ids a
running proxy has. The per-attempt kwargs are the router's own: a capturing callback stops each attempt at the
deployment hook, before any backend is reached; responses and streams come from LiteLLM's `mock_response`, a
demoted call from its `mock_testing_fallbacks`. Each plugin hook is then called directly with them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import litellm
import pytest
from fastapi import HTTPException
from litellm.caching.dual_cache import DualCache
from litellm.integrations.custom_logger import CustomLogger
from litellm.proxy import proxy_server
from litellm.proxy._types import UserAPIKeyAuth
from litellm.types.utils import ModelResponse, ModelResponseStream, StandardLoggingPayload
from litellm.utils import custom_llm_setup

import contract
from ask_cli import stack_config
from harness.processes import closed_port_url
from harness.stack import CONFIG
from plugins import context_window, council, demotion, keep_alive, premium_guard, provenance, request_guard, served_by
from plugins.log import ROOT as LOG_ROOT

pytestmark = pytest.mark.anyio

HI = [{"role": "user", "content": "hi"}]
USER = UserAPIKeyAuth()
PREMIUM_DEPLOYMENT = {
    "model_name": "premium",
    "litellm_params": {"model": "anthropic/claude-sonnet-4-5", "api_key": "sk-ant-unused"},
    "model_info": {"lane": contract.PREMIUM, "runtime": "cloud"},
}
RUNNER_KILLED = '{"error":"llama runner process has terminated: signal: killed"}'


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """One event loop for the module: LiteLLM's background logging worker stays on the loop it started on."""
    return "asyncio"


# -- the router the plugins see ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _council_provider() -> Iterator[None]:
    """The yaml's `custom_provider_map`, as the proxy applies it: `council/default` is a known provider."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(litellm, "custom_provider_map", [{"provider": "council", "custom_handler": council.handler}])
        mp.setattr(litellm, "provider_list", list(litellm.provider_list))
        mp.setattr(litellm, "_custom_providers", list(litellm._custom_providers))
        custom_llm_setup()
        yield


def _install_router(
    monkeypatch: pytest.MonkeyPatch, extra: list[dict[str, Any]], fallbacks: list[dict[str, list[str]]] | None = None
) -> litellm.Router:
    for name, suffix in (("OLLAMA_API_BASE", ""), ("LLAMA_SWAP_API_BASE", "/v1"), ("TINY_API_BASE", "/v1")):
        monkeypatch.setenv(name, closed_port_url(suffix))
    config = stack_config.load(CONFIG)
    settings = {**config["router_settings"], **({"fallbacks": fallbacks} if fallbacks is not None else {})}
    router = litellm.Router(model_list=[*config["model_list"], *extra], **settings)
    monkeypatch.setattr(proxy_server, "llm_router", router)
    monkeypatch.setattr(litellm, "callbacks", [])
    # LiteLLM copies the callbacks it meets into these lists (at most 30 each): undone after every test
    for name in ("input_callback", "success_callback", "failure_callback", "service_callback"):
        monkeypatch.setattr(litellm, name, list(getattr(litellm, name)))
    for name in ("_async_input_callback", "_async_success_callback", "_async_failure_callback"):
        monkeypatch.setattr(litellm, name, list(getattr(litellm, name)))
    # litellm_settings that change what a hook computes (the token counter) are the yaml's
    monkeypatch.setattr(litellm, "disable_hf_tokenizer_download", True)
    return router


@pytest.fixture
def router(monkeypatch: pytest.MonkeyPatch) -> litellm.Router:
    """The project's tiers as the running proxy's router holds them (each deployment has its model_info.id)."""
    return _install_router(monkeypatch, [])


@pytest.fixture
def premium_router(monkeypatch: pytest.MonkeyPatch) -> litellm.Router:
    """The same, plus a premium-lane tier `premium` (as litellm-config.cloud.yaml adds one)."""
    return _install_router(monkeypatch, [PREMIUM_DEPLOYMENT])


@pytest.fixture
def chain_into_premium(monkeypatch: pytest.MonkeyPatch) -> litellm.Router:
    """A hand-edited yaml run by `litellm --config` (ask serve refuses it): fast-9b falls back into premium."""
    return _install_router(monkeypatch, [PREMIUM_DEPLOYMENT], fallbacks=[{"fast-9b": ["premium"]}])


def deployment_id(router: litellm.Router, tier: str) -> str:
    (model_id,) = router.get_model_ids(model_name=tier)
    return model_id


class _Stopped(Exception):
    """The capture stopped the attempt at the deployment hook: no backend was reached."""


class _Recorder(CustomLogger):
    """What LiteLLM hands callbacks: each attempt's kwargs (optionally stopping it there) and the logged call.

    One instance for the module: LiteLLM keeps one callback per class (a second instance is not registered)."""

    def __init__(self) -> None:
        super().__init__()
        self.stop = False
        self.attempts: list[dict[str, Any]] = []
        self.logged: list[dict[str, Any]] = []

    async def async_pre_call_deployment_hook(self, kwargs: dict[str, Any], call_type: Any) -> dict[str, Any]:
        self.attempts.append(dict(kwargs))
        if self.stop:
            raise _Stopped
        return kwargs

    async def async_log_success_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self.logged.append(kwargs)


RECORDER = _Recorder()


@contextmanager
def recording(stop: bool) -> Iterator[_Recorder]:
    """The recorder as LiteLLM's only callback, for the calls made inside the `with`."""
    RECORDER.stop, RECORDER.attempts, RECORDER.logged = stop, [], []
    litellm.callbacks = [RECORDER]
    try:
        yield RECORDER
    finally:
        litellm.callbacks = []


async def attempt(router: litellm.Router, tier: str, body: dict[str, Any] | None = None, call_id: str = "") -> dict:
    """The kwargs the router gives the deployment hooks for an attempt at `tier`, for a client body `body`
    (the proxy passes the body's fields on and keeps the body itself as `proxy_server_request`)."""
    body = {"model": tier, "messages": HI, **(body or {})}
    fields = {k: v for k, v in body.items() if k != "model"}
    with recording(stop=True) as recorder, pytest.raises(_Stopped):
        await router.acompletion(
            model=tier,
            **fields,
            proxy_server_request={"body": body},
            litellm_call_id=call_id or new_call_id(),
            disable_fallbacks=True,
        )
    (kwargs,) = recorder.attempts
    assert kwargs["metadata"]["model_group"] == tier
    return kwargs


def new_call_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def plugin_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The plugins' own log (plugins/log.py: "local_llm_stack" does not propagate to the root logger)."""
    root = logging.getLogger(LOG_ROOT)
    root.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger=LOG_ROOT)
    try:
        yield caplog
    finally:
        root.removeHandler(caplog.handler)


@pytest.fixture
def demotion_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "demotions" / "demotions.jsonl"
    monkeypatch.setenv("DEMOTION_LOG", str(path))
    return path


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- keep_alive ---------------------------------------------------------------------------------------------------


async def test_keep_alive_each_ollama_attempt_gets_its_deployments_policy(router: litellm.Router) -> None:
    for tier, policy in (("fast-9b", "15m"), ("fast-3b", "5m"), ("coder-30b", "30s")):
        kwargs = await attempt(router, tier)
        assert "keep_alive" not in kwargs
        assert (await keep_alive.handler.async_pre_call_deployment_hook(kwargs, "acompletion"))["keep_alive"] == policy


async def test_keep_alive_sent_by_the_client_wins(router: litellm.Router) -> None:
    kwargs = await attempt(router, "fast-9b", {"keep_alive": "1h"})
    assert kwargs["keep_alive"] == "1h"
    assert (await keep_alive.handler.async_pre_call_deployment_hook(kwargs, "acompletion"))["keep_alive"] == "1h"


async def test_keep_alive_never_reaches_a_non_ollama_backend(router: litellm.Router) -> None:
    plain = await attempt(router, "heavy")
    assert "keep_alive" not in await keep_alive.handler.async_pre_call_deployment_hook(dict(plain), "acompletion")
    sent = await attempt(router, "heavy", {"keep_alive": "1h"})  # the client's value has nowhere to go: dropped
    assert "keep_alive" not in await keep_alive.handler.async_pre_call_deployment_hook(sent, "acompletion")


# -- context_window -----------------------------------------------------------------------------------------------


async def test_context_window_refuses_a_prompt_over_num_ctx_and_notes_why(router: litellm.Router) -> None:
    call_id = new_call_id()
    long = [{"role": "user", "content": "word " * 9000}]
    kwargs = await attempt(router, "fast-9b", {"messages": long, "max_tokens": 512}, call_id)
    with pytest.raises(litellm.ContextWindowExceededError) as refused:
        await context_window.handler.async_pre_call_deployment_hook(kwargs, "acompletion")
    assert "fast-9b: the prompt needs ~" in str(refused.value) and "num_ctx is 8192 with 512 kept" in str(refused.value)
    (hop,) = provenance.failures(call_id)
    assert hop.tier == "fast-9b"
    assert hop.reason.startswith("prompt over num_ctx (") and hop.reason.endswith(" > 7680 tokens), escalated")


async def test_context_window_lets_a_short_prompt_and_a_non_ollama_tier_pass(router: litellm.Router) -> None:
    short_id, other_id = new_call_id(), new_call_id()
    short = await attempt(router, "fast-9b", {"max_tokens": 512}, short_id)
    assert await context_window.handler.async_pre_call_deployment_hook(dict(short), "acompletion") == short
    long = [{"role": "user", "content": "word " * 9000}]
    heavy = await attempt(router, "heavy", {"messages": long, "max_tokens": 512}, other_id)
    assert await context_window.handler.async_pre_call_deployment_hook(dict(heavy), "acompletion") == heavy
    assert provenance.failures(short_id) == [] and provenance.failures(other_id) == []


# -- premium_guard ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"model": "fast-9b", "fallbacks": ["fast-3b", "premium"]},
        {"model": "fast-9b", "fallbacks": [{"model": "premium"}]},
        {"model": "fast-9b", "context_window_fallbacks": [{"fast-9b": ["premium"]}]},
        {"model": "fast-9b", "default_fallbacks": ["premium"]},
        {"model": "premium", "fallbacks": ["fast-9b"]},
    ],
    ids=["fallbacks", "fallbacks-model", "context-window", "default", "premium-with-fallbacks"],
)
async def test_premium_guard_refuses_a_body_chain_with_premium(premium_router: litellm.Router, body: dict) -> None:
    with pytest.raises(HTTPException) as refused:
        await premium_guard.handler.async_pre_call_hook(USER, DualCache(), {**body, "messages": HI}, "completion")
    assert refused.value.status_code == 400
    assert "premium" in refused.value.detail


async def test_premium_guard_refuses_an_attempt_at_premium_for_another_model(premium_router: litellm.Router) -> None:
    call_id = new_call_id()
    kwargs = await attempt(premium_router, "premium", {"model": "fast-9b"}, call_id)  # e.g. a hand-edited chain
    with pytest.raises(premium_guard.PremiumRefused, match="asked for fast-9b"):
        await premium_guard.handler.async_pre_call_deployment_hook(kwargs, "acompletion")
    assert provenance.failures(call_id) == [provenance.Hop("premium", "refused: premium only when named")]


async def test_premium_guard_refuses_a_fallback_into_premium_from_an_inner_call(
    chain_into_premium: litellm.Router,
) -> None:
    """What the council does: `router.acompletion(model="fast-9b", ...)` from inside the proxy. fast-9b fails and
    the router's next hop is the premium deployment."""
    call_id = new_call_id()
    with recording(stop=False) as recorder:
        await chain_into_premium.acompletion(
            model="fast-9b",
            messages=HI,
            mock_response="Hello from Claude",
            mock_testing_fallbacks=True,  # LiteLLM's own way to fail the first hop
            litellm_call_id=call_id,
        )
    (hop,) = recorder.attempts  # the mocked failure of fast-9b stops before the deployment hook
    assert (hop["metadata"]["original_model_group"], hop["metadata"]["model_group"]) == ("fast-9b", "premium")
    with pytest.raises(premium_guard.PremiumRefused):
        await premium_guard.handler.async_pre_call_deployment_hook(hop, "acompletion")


async def test_premium_guard_lets_premium_asked_by_name_pass(premium_router: litellm.Router) -> None:
    data = {"model": "premium", "messages": HI}
    assert await premium_guard.handler.async_pre_call_hook(USER, DualCache(), dict(data), "completion") == data
    plain = {"model": "fast-9b", "messages": HI, "fallbacks": ["fast-1b"]}
    assert await premium_guard.handler.async_pre_call_hook(USER, DualCache(), dict(plain), "completion") == plain
    call_id = new_call_id()
    kwargs = await attempt(premium_router, "premium", call_id=call_id)
    assert await premium_guard.handler.async_pre_call_deployment_hook(dict(kwargs), "acompletion") == kwargs
    assert provenance.failures(call_id) == []


# -- request_guard ------------------------------------------------------------------------------------------------


async def test_request_guard_unknown_model_gets_the_tiers(router: litellm.Router) -> None:
    with pytest.raises(HTTPException) as refused:
        await request_guard.handler.async_pre_call_hook(
            USER, DualCache(), {"model": "gpt-4o", "messages": HI}, "completion"
        )
    assert refused.value.status_code == 400
    assert refused.value.detail.startswith("unknown model 'gpt-4o': this stack serves ")
    assert set(refused.value.detail.split("serves ", 1)[1].split(", ")) == set(provenance.served_tiers().names())


@pytest.mark.parametrize("messages", ["hi", [], [{"content": "hi"}], ["hi"]], ids=["str", "empty", "no-role", "list"])
async def test_request_guard_malformed_messages_get_a_400(router: litellm.Router, messages: Any) -> None:
    with pytest.raises(HTTPException) as refused:
        await request_guard.handler.async_pre_call_hook(
            USER, DualCache(), {"model": "fast-9b", "messages": messages}, "completion"
        )
    assert refused.value.status_code == 400 and "messages must be a non-empty list" in refused.value.detail


async def test_request_guard_turns_the_cache_off_for_the_council_only(router: litellm.Router) -> None:
    data = await request_guard.handler.async_pre_call_hook(
        USER, DualCache(), {"model": contract.COUNCIL, "messages": HI}, "completion"
    )
    assert data["cache"] == contract.no_cache() == {"no-cache": True, "no-store": True}
    plain = await request_guard.handler.async_pre_call_hook(
        USER, DualCache(), {"model": "fast-9b", "messages": HI}, "completion"
    )
    assert "cache" not in plain


# -- served_by ----------------------------------------------------------------------------------------------------


async def test_served_by_headers_of_a_demoted_answer(router: litellm.Router) -> None:
    response = await router.acompletion(model="fast-3b", messages=HI, mock_response="Hello from llama3.2:3b")
    assert isinstance(response, ModelResponse)
    assert response._hidden_params["model_id"] == deployment_id(router, "fast-3b")
    data = {"model": "fast-9b", "messages": HI, "litellm_call_id": new_call_id()}
    headers = await served_by.handler.async_post_call_response_headers_hook(data, USER, response)
    assert headers == {"X-Served-By": "fast-3b", "X-Demoted-From": "fast-9b", "X-Served-Lane": "local"}

    asked = await served_by.handler.async_post_call_response_headers_hook({**data, "model": "fast-3b"}, USER, response)
    assert asked == {"X-Served-By": "fast-3b", "X-Served-Lane": "local"}
    # streams get theirs from the iterator hook, where the served deployment is known
    assert (
        await served_by.handler.async_post_call_response_headers_hook({**data, "stream": True}, USER, response) is None
    )


async def test_served_by_names_the_premium_lane(premium_router: litellm.Router) -> None:
    response = await premium_router.acompletion(model="premium", messages=HI, mock_response="Hello from Claude")
    data = {"model": "premium", "messages": HI, "litellm_call_id": new_call_id()}
    headers = await served_by.handler.async_post_call_response_headers_hook(data, USER, response)
    assert headers == {"X-Served-By": "premium", "X-Served-Lane": "premium"}


async def test_served_by_writes_stream_headers_before_the_first_chunk(router: litellm.Router) -> None:
    stream = await router.acompletion(model="fast-3b", messages=HI, mock_response="Hello there", stream=True)
    assert isinstance(stream, litellm.litellm_core_utils.streaming_handler.CustomStreamWrapper)
    request = {"model": "fast-9b", "messages": HI, "stream": True, "litellm_call_id": new_call_id()}
    chunks = served_by.handler.async_post_call_streaming_iterator_hook(USER, stream, request)
    assert "X-Served-By" not in stream._hidden_params["additional_headers"]
    first = await chunks.__anext__()
    assert isinstance(first, ModelResponseStream)
    headers = stream._hidden_params["additional_headers"]  # where the proxy reads a stream's headers
    assert (headers["X-Served-By"], headers["X-Demoted-From"], headers["X-Served-Lane"]) == (
        "fast-3b",
        "fast-9b",
        "local",
    )
    rest = [chunk async for chunk in chunks]
    text = "".join(c.choices[0].delta.content or "" for c in [first, *rest])
    assert text == "Hello there"


class _BareStream:
    """A stream with no `_hidden_params`: the proxy has nowhere to read headers from."""

    def __init__(self, chunks: list[Any]) -> None:
        self._chunks = chunks

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        for chunk in self._chunks:
            yield chunk


async def test_served_by_says_so_when_a_stream_cannot_carry_headers(
    router: litellm.Router, plugin_log: pytest.LogCaptureFixture
) -> None:
    """Regression: the headers were once written into a throwaway dict, and the client got none, silently."""
    real = await router.acompletion(model="fast-3b", messages=HI, mock_response="Hello there", stream=True)
    chunks = [chunk async for chunk in real]
    # the served tier is still known from the call's logging object (the group LiteLLM logged)
    request = {"model": "fast-9b", "stream": True, "litellm_logging_obj": real.logging_obj}
    bare = _BareStream(chunks)
    passed = [chunk async for chunk in served_by.handler.async_post_call_streaming_iterator_hook(USER, bare, request)]
    assert passed == chunks
    warnings = [r for r in plugin_log.records if r.name == "local_llm_stack.served_by" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert message.startswith("X-Demoted-From, X-Served-By, X-Served-Lane lost: this _BareStream stream has no")
    assert "X-Served-By: fast-3b" in message and "X-Demoted-From: fast-9b" in message


# -- demotion -----------------------------------------------------------------------------------------------------


async def logged_call(router: litellm.Router, tier: str, call_id: str, **request: Any) -> tuple[Any, dict]:
    """A real call answered by LiteLLM's `mock_response`, and the kwargs its success event gave the loggers."""
    with recording(stop=False) as recorder:
        response = await router.acompletion(model=tier, messages=HI, litellm_call_id=call_id, **request)
        if request.get("stream"):
            async for _ in response:
                pass
        for _ in range(300):  # success events are delivered by LiteLLM's logging worker, in the background
            mine = [k for k in recorder.logged if k.get("litellm_call_id") == call_id]
            if mine:
                return response, mine[0]
            await asyncio.sleep(0.01)
    raise AssertionError(f"LiteLLM logged nothing for {call_id}")


async def demoted_call(router: litellm.Router, call_id: str) -> tuple[Any, dict]:
    """A fast-9b call that LiteLLM serves from fast-3b after a failure (its `mock_testing_fallbacks`)."""
    return await logged_call(
        router, "fast-9b", call_id, mock_response="Hello from llama3.2:3b", mock_testing_fallbacks=True
    )


def ollama_500(model: str) -> Exception:
    return litellm.InternalServerError(
        message=f"Ollama_chatException - {RUNNER_KILLED}", llm_provider="ollama_chat", model=model
    )


async def test_demotion_writes_one_record_for_a_demoted_call(
    router: litellm.Router, demotion_log: Path, plugin_log: pytest.LogCaptureFixture
) -> None:
    call_id = new_call_id()
    hooks = demotion.handler
    nine = await attempt(router, "fast-9b", call_id=call_id)
    await hooks.async_pre_call_deployment_hook(nine, "acompletion")
    await hooks.async_post_call_failure_deployment_hook(nine, ollama_500("qwen3.5:9b"), "acompletion")
    await hooks.async_pre_call_deployment_hook(await attempt(router, "fast-3b", call_id=call_id), "acompletion")
    response, logged = await demoted_call(router, call_id)
    assert logged["litellm_params"]["metadata"]["original_model_group"] == "fast-9b"
    assert logged["standard_logging_object"]["model_group"] == "fast-3b"

    await hooks.async_log_success_event(logged, response, None, None)
    (record,) = records(demotion_log)
    assert record["call_id"] == call_id
    assert (record["requested"], record["served"], record["hops"], record["stream"]) == ("fast-9b", "fast-3b", 1, False)
    assert record["failed"] == ["fast-9b: HTTP 500: llama runner process has terminated: signal: killed"]
    assert provenance.failures(call_id) == []  # the call's attempts are consumed
    warnings = [r.getMessage() for r in plugin_log.records if r.name == "local_llm_stack.demotion"]
    assert warnings == [
        "[degraded: fast-9b → fast-3b] (fast-9b: HTTP 500: llama runner process has terminated: signal: killed)"
    ]


async def test_demotion_writes_nothing_for_an_answer_from_the_tier_asked(
    router: litellm.Router, demotion_log: Path
) -> None:
    response, logged = await logged_call(router, "fast-9b", new_call_id(), mock_response="Hello")
    await demotion.handler.async_log_success_event(logged, response, None, None)
    assert records(demotion_log) == []


async def test_demotion_names_every_tier_when_the_whole_chain_fails(
    router: litellm.Router, demotion_log: Path, plugin_log: pytest.LogCaptureFixture
) -> None:
    call_id = new_call_id()
    hooks = demotion.handler
    think = await attempt(router, "think-9b", call_id=call_id)
    heavy = await attempt(router, "heavy", call_id=call_id)
    down = litellm.ServiceUnavailableError(
        message='OpenAIException - {"error": "gemma-3-27b-it-qat is failing"}', llm_provider="openai", model="x"
    )
    for kwargs, exc in ((think, ollama_500("qwen3.5:9b")), (heavy, down)):
        await hooks.async_pre_call_deployment_hook(kwargs, "acompletion")
        await hooks.async_post_call_failure_deployment_hook(kwargs, exc, "acompletion")

    request = {"model": "think-9b", "messages": HI, "litellm_call_id": call_id, "metadata": {}}
    error = await hooks.async_post_call_failure_hook(request, ollama_500("qwen3.5:9b"), USER)
    assert isinstance(error, HTTPException) and error.status_code == 500  # the status of the tier asked for
    assert error.detail == (
        "every tier in the chain for 'think-9b' failed (think-9b: HTTP 500: llama runner process has terminated: "
        "signal: killed; heavy: HTTP 503: gemma-3-27b-it-qat is failing)"
    )
    (record,) = records(demotion_log)
    assert (record["requested"], record["served"], record["hops"]) == ("think-9b", None, 2)
    assert any(r.getMessage().startswith("[failed: think-9b] (think-9b: HTTP 500") for r in plugin_log.records)


async def test_demotion_leaves_an_error_alone_when_no_attempt_failed(router: litellm.Router) -> None:
    request = {"model": "fast-9b", "messages": HI, "litellm_call_id": new_call_id()}
    assert await demotion.handler.async_post_call_failure_hook(request, ValueError("bad"), USER) is None


async def test_demotion_tags_what_litellm_logs(router: litellm.Router) -> None:
    _, logged = await demoted_call(router, new_call_id())
    payload: StandardLoggingPayload = logged["standard_logging_object"]
    kwargs, _ = await demotion.handler.async_logging_hook(logged, None, "acompletion")
    assert {"served-by:fast-3b", "demoted", "demoted-from:fast-9b"} <= set(payload["request_tags"])
    assert "served-by:fast-9b" not in payload["request_tags"]
    assert {"served-by:fast-3b", "demoted"} <= set(kwargs["litellm_params"]["metadata"]["tags"])
    again, _ = await demotion.handler.async_logging_hook(kwargs, None, "acompletion")  # LiteLLM may rebuild it
    assert sorted(again["standard_logging_object"]["request_tags"]) == sorted(set(payload["request_tags"]))

    _, logged = await logged_call(router, "fast-9b", new_call_id(), mock_response="Hello")
    plain, _ = await demotion.handler.async_logging_hook(logged, None, "acompletion")
    assert plain["standard_logging_object"]["request_tags"] == ["served-by:fast-9b"]


# -- council ------------------------------------------------------------------------------------------------------


def test_council_settings_a_request_timeout_shortens_the_deadline_never_lengthens_it() -> None:
    yaml = {"members": "fast-9b, fast-3b", "chairman": "think-9b", "deadline_s": 240, "member_temperature": 0.2}
    assert council.Settings.of(yaml, timeout=30) == council.Settings(("fast-9b", "fast-3b"), 0.2, "think-9b", 30.0)
    assert council.Settings.of(yaml, timeout=600).deadline_s == 240
    assert council.Settings.of(yaml, timeout=None).deadline_s == 240
    assert council.Settings.of(yaml, timeout=0).deadline_s == 240
    defaults = council.Settings.of({})
    assert (defaults.members, defaults.chairman, defaults.deadline_s) == (council.DEFAULT_MEMBERS, "think-9b", 240)


async def test_council_chairman_reads_anonymised_answers(router: litellm.Router) -> None:
    settings = council.Settings(("fast-9b", "no-such-tier", "fast-3b"), 0.7, "think-9b", 10)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    answers = await council.stage1_collect_responses(question, settings, {"mock_response": "Paris, I think."})
    assert [(a.requested, a.label, a.served) for a in answers] == [
        ("fast-9b", "A", "fast-9b"),
        ("no-such-tier", None, None),
        ("fast-3b", "B", "fast-3b"),
    ]
    assert answers[1].error

    (message,) = council.chairman_messages(council.question_of(question), answers)
    prompt = message["content"]
    assert "Question:\nWhat is the capital of France?" in prompt
    assert "Response A:\nParis, I think." in prompt and "Response B:\nParis, I think." in prompt
    assert "Response C" not in prompt
    names = ["fast-9b", "fast-3b", "no-such-tier", "think-9b", "qwen", "llama"]
    assert not [name for name in names if name in prompt]


async def test_council_report_becomes_its_headers(router: litellm.Router) -> None:
    call_id = new_call_id()
    settings = council.Settings(("fast-9b", "fast-9b", "fast-9b"), 0.7, "think-9b", 240)
    members = [
        council.MemberAnswer("fast-9b", "A", "fast-9b", "Paris"),
        council.MemberAnswer("fast-9b", "B", "fast-3b", "Paris"),
        council.MemberAnswer("fast-9b", error="timeout"),
    ]
    council._report(call_id, members, settings, chairman="heavy")
    expected = {
        "X-Council-Members": "fast-9b,fast-3b",
        "X-Council-Chairman": "heavy",
        "X-Council-Failed": "1",
        "X-Council-Degraded": "fast-9b->fast-3b,think-9b->heavy",
    }
    assert provenance.said_headers(call_id) == expected
    seen = contract.Provenance.of_headers(contract.COUNCIL, expected)  # what `ask` reads back
    assert (seen.council_degraded, seen.council_failed) == ([("fast-9b", "fast-3b"), ("think-9b", "heavy")], 1)

    response = ModelResponse()  # the council's answer: produced by the council deployment
    response._hidden_params = {"model_id": deployment_id(router, contract.COUNCIL)}
    data = {"model": contract.COUNCIL, "messages": HI, "litellm_call_id": call_id}
    headers = await served_by.handler.async_post_call_response_headers_hook(data, USER, response)
    assert headers == {"X-Served-By": "council", "X-Served-Lane": "local", **expected}

    whole = new_call_id()
    council._report(whole, members[:1], settings, chairman="think-9b")
    assert provenance.said_headers(whole) == {"X-Council-Members": "fast-9b", "X-Council-Chairman": "think-9b"}


# -- provenance ---------------------------------------------------------------------------------------------------


def test_bounded_map_keeps_the_newest_entries_by_last_use() -> None:
    kept: provenance.BoundedMap[int, list[int]] = provenance.BoundedMap(3)
    for key in range(5):
        kept.entry(key, list).append(key)
    assert len(kept) == 3 and kept.get(0) is None and kept.get(1) is None and kept.get(4) == [4]
    kept.entry(2, list).append(22)  # used again: now the newest
    kept.entry(5, list)
    assert kept.get(3) is None and kept.get(2) == [2, 22] and len(kept) == 3
    assert kept.pop(2) == [2, 22] and kept.pop(2) is None and len(kept) == 2


async def test_verdict_orders_hops_along_the_chain(router: litellm.Router) -> None:
    call_id = new_call_id()
    for tier in ("fast-9b", "fast-3b", "tiny"):
        provenance.note_attempt(call_id, tier)
    provenance.note_failure(call_id, "fast-3b", "timeout")  # reported out of order
    provenance.note_failure(call_id, "fast-9b", "HTTP 500: killed")
    provenance.note_failure(call_id, "heavy", "connection refused")  # not on fast-9b's chain: listed last
    found = await provenance.verdict(call_id, "fast-9b", "tiny", stream=False)
    assert [str(h) for h in found.hops] == [
        "fast-9b: HTTP 500: killed",
        "fast-3b: timeout",
        "fast-1b: skipped",
        "heavy: connection refused",
    ]
    assert found.demoted and provenance.failures(call_id) == []


@pytest.mark.parametrize(
    ("stream", "reason"), [(True, provenance.MID_STREAM), (False, "failed (LiteLLM reported no reason)")]
)
async def test_verdict_an_attempt_without_a_failure_report(router: litellm.Router, stream: bool, reason: str) -> None:
    call_id = new_call_id()
    provenance.note_attempt(call_id, "fast-9b")
    provenance.note_attempt(call_id, "fast-3b")
    found = await provenance.verdict(call_id, "fast-9b", "fast-3b", stream=stream)
    assert found.hops == [provenance.Hop("fast-9b", reason)]
    assert provenance.MID_STREAM == "failed after the response started (mid-stream)"


async def test_verdict_follows_the_context_window_chain_after_an_escalation(router: litellm.Router) -> None:
    call_id = new_call_id()
    provenance.note_attempt(call_id, "fast-9b")
    provenance.note_failure(call_id, "fast-9b", f"{provenance.ESCALATED} (9001 > 8192 tokens), escalated")
    provenance.note_attempt(call_id, "heavy")
    found = await provenance.verdict(call_id, "fast-9b", "heavy", stream=False)
    assert [str(h) for h in found.hops] == ["fast-9b: prompt over num_ctx (9001 > 8192 tokens), escalated"]


async def test_verdict_an_escalation_at_a_later_hop(router: litellm.Router) -> None:
    """fast-9b's runner dies; fast-3b (as if its num_ctx were smaller) refuses the prompt; LiteLLM 1.106.2 then
    takes fast-3b's context_window_fallbacks, and heavy answers. fast-1b and tiny were never in the way."""
    call_id = new_call_id()
    provenance.note_attempt(call_id, "fast-9b")
    provenance.note_failure(call_id, "fast-9b", "HTTP 500: killed")
    provenance.note_attempt(call_id, "fast-3b")
    provenance.note_failure(call_id, "fast-3b", f"{provenance.ESCALATED} (5000 > 4096 tokens), escalated")
    provenance.note_attempt(call_id, "heavy")
    found = await provenance.verdict(call_id, "fast-9b", "heavy", stream=False)
    assert [str(h) for h in found.hops] == [
        "fast-9b: HTTP 500: killed",
        "fast-3b: prompt over num_ctx (5000 > 4096 tokens), escalated",
    ]
