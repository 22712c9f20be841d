"""One ledger per call: which tier was asked, which answered, and why every other hop did not.

The only place that decides it. The plugins note what they see per call id (each attempt, each failed or
refused attempt, the council's parts); `verdict` turns that into requested, served, lane and the hops with
their reasons. `served_by` renders it as response headers, `demotion` as the demotion log, warning, webhook
and request tags, `council` as its own headers. Stdlib at import time: litellm is reached lazily, inside
the running proxy.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from contract import Provenance
from contract import tiers as tier_model

ESCALATED = "prompt over num_ctx"  # a refusal reason (plugins/context_window.py): took context_window_fallbacks
REMEMBERED_CALLS = 4096  # calls whose ledger is kept, newest only
MID_STREAM = "failed after the response started (mid-stream)"

K = TypeVar("K")
V = TypeVar("V")


class BoundedMap(Generic[K, V]):
    """The newest `limit` entries by last use: a proxy that runs for weeks keeps no more than that."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: OrderedDict[K, V] = OrderedDict()

    def entry(self, key: K, make: Callable[[], V]) -> V:
        """The entry for `key`, made if absent; the oldest entries leave past the limit."""
        if key not in self._items:
            self._items[key] = make()
        self._items.move_to_end(key)
        while len(self._items) > self.limit:
            self._items.popitem(last=False)
        return self._items[key]

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def pop(self, key: K) -> V | None:
        return self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class Hop:
    """A tier that did not answer, and why in a few words."""

    tier: str
    reason: str

    def __str__(self) -> str:
        return f"{self.tier}: {self.reason}"


class Refused(Exception):
    """An attempt a plugin stops before its backend (the model would not fit the RAM budget, its backend hangs,
    it lacks a capability the request needs): the router moves down the chain, and the reason is the hop's in
    the headers and the demotion log."""

    status_code = 503

    def __init__(self, tier: str, reason: str) -> None:
        super().__init__(f"{tier}: {reason}")
        self.tier, self.reason = tier, reason


@dataclass
class Ledger:
    """What one call did, in order."""

    attempts: list[str] = field(default_factory=list)  # the tier of every deployment attempt
    failures: list[Hop] = field(default_factory=list)  # attempts that failed or that a plugin refused
    said: dict[str, str] = field(default_factory=dict)  # headers plugins add: the council's, X-Max-Tokens-Clamped


_ledgers: BoundedMap[str, Ledger] = BoundedMap(REMEMBERED_CALLS)


def ledger(call_id: str) -> Ledger:
    return _ledgers.entry(call_id, Ledger)


def note_attempt(call_id: str | None, tier: str | None) -> None:
    """A deployment of `tier` is about to be tried for this call."""
    if call_id and tier:
        ledger(call_id).attempts.append(tier)


def note_failure(call_id: str | None, tier: str | None, reason: str) -> None:
    """An attempt failed at the backend, or a plugin stopped it before it got there (context too small, premium
    not named: LiteLLM reports no per-attempt failure for those)."""
    if call_id and tier:
        ledger(call_id).failures.append(Hop(tier, reason))


def note_headers(call_id: str | None, headers: Mapping[str, str]) -> None:
    """Headers a plugin adds to this call's response: the council's report (which tier served each member and
    the chairman), a clamped max_tokens, a dropped thinking request."""
    if call_id:
        ledger(call_id).said.update(headers)


def said_headers(call_id: str | None) -> dict[str, str]:
    """The headers plugins noted for one call; empty for most."""
    found = _ledgers.get(call_id) if call_id else None
    return dict(found.said) if found else {}


def failures(call_id: str | None) -> list[Hop]:
    found = _ledgers.get(call_id) if call_id else None
    return list(found.failures) if found else []


def forget(call_id: str | None) -> None:
    """The call's outcome is written: its attempts go; the council's report stays for the headers still to come."""
    found = _ledgers.get(call_id) if call_id else None
    if found is not None:
        found.attempts.clear()
        found.failures.clear()


def council_words(exc: BaseException) -> str | None:
    """The council's own error (plugins/council.py), whole: it already names each member or the chairman and why."""
    text = str(exc)
    start = text.find("council: ")
    if start < 0 or ("CouncilException" not in text and not text.startswith("council: ")):
        return None
    words = " ".join(text[start:].split())
    for tail in (" Deployment Info:", " LiteLLM: model group", " Received Model Group"):  # the router's additions
        words = words.split(tail, 1)[0]
    return words


def short_reason(exc: BaseException) -> str:
    """A few words a user can act on: `connection refused`, `timeout`, `HTTP 500: <backend's words>`; the
    council's own words whole (they name each member's reasons)."""
    council = council_words(exc)
    if council:
        return council.removeprefix("council: ")
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


# -- the tiers, as the running router serves them ------------------------------------------------------------


def _router() -> Any:
    try:
        from litellm.proxy import proxy_server
    except ImportError:  # pragma: no cover - only outside a proxy
        return None
    return getattr(proxy_server, "llm_router", None)


def served_tiers() -> tier_model.Tiers:
    """The tier model of the running router (empty outside a proxy)."""
    router = _router()
    return tier_model.from_router(router) if router is not None else tier_model.Tiers(())


def call_metadata(kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
    """The router's notes on one attempt (`model_group`, ...): under `metadata` for chat and completions, under
    `litellm_metadata` for /v1/messages and /v1/responses, whose own APIs have a `metadata` field (Claude Code
    sends one)."""
    for key in ("metadata", "litellm_metadata"):
        found = kwargs.get(key)
        if isinstance(found, Mapping) and found.get("model_group"):
            return found
    found = kwargs.get("metadata")
    return found if isinstance(found, Mapping) else {}


def attempt_tier(kwargs: Mapping[str, Any]) -> str | None:
    """The tier an attempt belongs to, from a deployment hook's kwargs: the router's group, else the tier that
    owns the deployment id. None when neither says it (never the backend's tag)."""
    group = call_metadata(kwargs).get("model_group")
    if group:
        return str(group)
    return tier_of_deployment((kwargs.get("model_info") or {}).get("id"))


def attempt_deployment(kwargs: Mapping[str, Any]) -> tier_model.Deployment:
    """The deployment an attempt is about to use, read from a deployment hook's kwargs (its litellm_params and
    model_info, merged by the router) the way the tier model reads the yaml."""
    tier = attempt_tier(kwargs) or kwargs.get("model")
    return tier_model.Deployment.of(
        {"model_name": tier, "litellm_params": kwargs, "model_info": kwargs.get("model_info")}
    )


async def cooling_down(tier: str) -> bool:
    """Whether the router is skipping `tier` because it failed recently (LiteLLM's cooldown)."""
    router = _router()
    if router is None:
        return False
    ids = set(router.get_model_ids(model_name=tier))
    active = await router.cooldown_cache.async_get_active_cooldowns(model_ids=list(ids), parent_otel_span=None)
    return any(isinstance(item, tuple) and item[0] in ids for item in active or [])


# -- deciding ---------------------------------------------------------------------------------------------


def hidden_params(obj: Any) -> dict[str, Any] | None:
    """A response's (or stream wrapper's) `_hidden_params`, where LiteLLM keeps the deployment and the headers;
    None when it has none."""
    hp = getattr(obj, "_hidden_params", None)
    return hp if isinstance(hp, dict) else None


def tier_of_deployment(model_id: str | None) -> str | None:
    """The tier (`model_name`) that owns a router deployment id."""
    if not model_id:
        return None
    found = served_tiers().deployment(model_id)
    if found:
        return found.tier
    router = _router()  # a deployment added at run time, not yet in the cached model
    deployment = router.get_deployment(model_id=model_id) if router is not None else None
    return getattr(deployment, "model_name", None)


def served_tier(response: Any = None, model_id: str | None = None, logged_group: str | None = None) -> str | None:
    """The tier that produced an answer, from the best evidence at hand, in this order: the deployment id in the
    response's hidden params (or `model_id`, the proxy's own note, for responses in another API's shape), the
    router's group header on the response, then the group LiteLLM logged for the call (`logged_group`). None
    when nothing says it: never guessed from the tier asked for."""
    hp = hidden_params(response) or {}
    tier = tier_of_deployment(hp.get("model_id") or model_id)
    if tier:
        return tier
    group = (hp.get("additional_headers") or {}).get("x-litellm-model-group") or logged_group
    return str(group) if group else None


def requested_tier(request: Mapping[str, Any]) -> str | None:
    """The tier the client asked for: a request's `model`; in a logging hook's kwargs (whose `model` is the
    backend's), the group the router started from."""
    if isinstance(request.get("litellm_params"), Mapping):
        metadata = _metadata(request)
        asked = metadata.get("original_model_group") or metadata.get("model_group")
    else:
        asked = request.get("model")
    return str(asked) if isinstance(asked, str) and asked else None


def _metadata(request: Mapping[str, Any]) -> Mapping[str, Any]:
    params = request.get("litellm_params")
    metadata = (params.get("metadata") if isinstance(params, Mapping) else None) or request.get("metadata")
    return metadata if isinstance(metadata, Mapping) else {}


def _logged_group(request: Mapping[str, Any]) -> str | None:
    """The group LiteLLM's logging object holds for a request: it updates it with the group that answered."""
    details = getattr(request.get("litellm_logging_obj"), "model_call_details", None)
    group = _metadata(details).get("model_group") if isinstance(details, Mapping) else None
    return str(group) if group else None


def of_response(request: Mapping[str, Any], response: Any, model_id: str | None = None) -> Provenance | None:
    """The provenance of a proxy response, or None when either side is unknown (e.g. not a chat call)."""
    requested = requested_tier(request)
    served = served_tier(response, model_id, _logged_group(request))
    if not requested or not served:
        return None
    return Provenance(requested=requested, served=served, lane=served_tiers().lane_of(served))


def of_logged(kwargs: Mapping[str, Any]) -> Provenance | None:
    """The provenance of a call from a logging hook's kwargs."""
    requested = requested_tier(kwargs)
    payload = kwargs.get("standard_logging_object")
    served = served_tier(logged_group=payload.get("model_group") if isinstance(payload, Mapping) else None)
    if not requested or not served:
        return None
    return Provenance(requested=requested, served=served, lane=served_tiers().lane_of(served))


def settled(call_id: str, served: str | None) -> bool:
    """Every attempt but the one that answered has its failure noted (LiteLLM may report a failed hop after the
    success event)."""
    found = _ledgers.get(call_id)
    if found is None:
        return True
    return set(found.attempts) - {served} <= {h.tier for h in found.failures}


@dataclass(frozen=True)
class Verdict:
    """A call's whole story: what the demotion log, the warning and the client's error say."""

    call_id: str
    requested: str
    served: str | None  # None: every tier failed
    hops: list[Hop]
    stream: bool

    @property
    def demoted(self) -> bool:
        return self.served is not None and self.served != self.requested


def _path(requested: str, served: str | None, escalated: set[str]) -> list[str]:
    """The tiers LiteLLM walks: the asked tier's chain, and from a tier whose prompt did not fit, that tier's
    context-window chain instead (LiteLLM 1.106.2 takes the failing hop's `context_window_fallbacks`)."""
    tiers, path = served_tiers(), []
    queue = tiers.chain(requested)
    while queue:
        tier = queue.pop(0)
        if tier in path:
            continue
        path.append(tier)
        if tier == served:
            break
        if tier in escalated:
            queue = tiers.chain(tier, context=True)[1:]
    return path


async def verdict(
    call_id: str, requested: str, served: str | None, stream: bool, broke_at: str | None = None
) -> Verdict:
    """The hops of one call in chain order: its failed and refused attempts, the tiers that failed without a
    report (a stream that broke mid-way), the tiers passed over (cooling down), then any attempt outside the
    configured chain; up to `broke_at`, the tier whose answer broke after reaching the client (nothing after it
    was tried). The call's attempts are consumed."""
    found = _ledgers.get(call_id) or Ledger()
    failures, attempted = list(found.failures), set(found.attempts)
    forget(call_id)
    tried = {h.tier for h in failures}
    escalated = {h.tier for h in failures if h.reason.startswith(ESCALATED)}
    hops: list[Hop] = []
    for tier in _path(requested, served, escalated):
        if tier == served:
            break
        if tier in tried:
            hops.extend(h for h in failures if h.tier == tier)
        elif tier in attempted:
            hops.append(Hop(tier, MID_STREAM if stream else "failed (LiteLLM reported no reason)"))
        else:
            cooling = await cooling_down(tier)
            hops.append(Hop(tier, "skipped, cooling down after recent failures" if cooling else "skipped"))
        if tier == broke_at:
            break
    listed = {h.tier for h in hops}
    hops.extend(h for h in failures if h.tier not in listed)
    # /v1/messages and /v1/responses run each attempt as an outer call around an inner chat call, and LiteLLM
    # reports one failure for each: one hop, said once.
    unique = list(dict.fromkeys(hops))
    return Verdict(call_id=call_id, requested=requested, served=served, hops=unique, stream=stream)
