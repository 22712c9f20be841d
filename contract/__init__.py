"""What the proxy (plugins/) and the `ask` CLI must agree on, in one place: stdlib only, no side effects.

Header names, the demotion marker and its parsing, the council's header formats, the per-request cache
control, the default tier and the backend addresses both sides assume. `plugins/` and `ask_cli/` each import
this package and never each other; the tier model is `contract.tiers`, the files both use `contract.paths`.
"""

from __future__ import annotations

from collections import namedtuple

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: `ask` reads this module on every call
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

DEFAULT_TIER = "fast-9b"
COUNCIL = "council"  # the council's tier name: never cached by the proxy or by `ask`
# The key under the answer's `provider_specific_fields` (the first chunk's delta when streaming) that holds the
# council's members and their answers: {"members": [{"label", "requested", "served_by", "answer", "error"}]}.
COUNCIL_FIELD = "council"

# Response headers the proxy writes (plugins/served_by.py) and `ask` reads (ask_cli/client.py).
SERVED_BY = "X-Served-By"  # the tier that answered
DEMOTED_FROM = "X-Demoted-From"  # the tier asked for, only when another one answered
SERVED_LANE = "X-Served-Lane"  # local, free-cloud or premium: the served tier's model_info.lane
COUNCIL_MEMBERS = "X-Council-Members"  # the tier that served each member that answered: "fast-9b,fast-3b"
COUNCIL_CHAIRMAN = "X-Council-Chairman"  # the tier that served the chairman
COUNCIL_FAILED = "X-Council-Failed"  # how many members failed, when any did
COUNCIL_DEGRADED = "X-Council-Degraded"  # "fast-9b->fast-3b,think-9b->heavy", when any part was demoted
MAX_TOKENS_CLAMPED = "X-Max-Tokens-Clamped"  # "32000 -> 4096": the answer's limit cut to what num_ctx leaves
THINKING_DROPPED = "X-Thinking-Dropped"  # a tier whose model cannot think: the request's thinking was not sent

LOCAL, FREE_CLOUD, PREMIUM = "local", "free-cloud", "premium"  # model_info.lane values

# Where a stack started with nothing set finds its backends (the yaml's os.environ/ references).
BACKEND_DEFAULTS: dict[str, str] = {
    "OLLAMA_API_BASE": "http://127.0.0.1:11434",
    "LLAMA_SWAP_API_BASE": "http://127.0.0.1:8080/v1",
    "TINY_API_BASE": "http://127.0.0.1:11435/v1",
}
# litellm-config.cloud.yaml reaches Gemini through its OpenAI-compatible endpoint; the other cloud providers'
# addresses default inside LiteLLM when their *_API_BASE is unset.
CLOUD_DEFAULTS: dict[str, str] = {"GEMINI_API_BASE": "https://generativelanguage.googleapis.com/v1beta/openai"}
PROXY_URL_ENV, DEFAULT_PROXY_URL = "ASK_PROXY_URL", "http://127.0.0.1:4000"
# The embedded model's API key: `ask serve` gives it the master key (the key the proxy's `tiny` deployment
# sends), so no other local program uses it or reads its /props; a server started without one takes any key.
TINY_KEY_ENV = "TINY_API_KEY"


def no_cache() -> dict[str, bool]:
    """LiteLLM's per-request cache control for an answer that must be fresh and never kept."""
    return {"no-cache": True, "no-store": True}


def degraded_marker(requested: str, served: str) -> str:
    """The seed's stderr/log form: `[degraded: fast-9b → fast-1b]`."""
    return f"[degraded: {requested} → {served}]"


def council_marker(degraded: list[tuple[str, str]], failed: int) -> str:
    """A council answer with a demoted or failed part: `[degraded: council (fast-9b → fast-3b, 1 member failed)]`."""
    parts = [f"{asked} → {served}" for asked, served in degraded]
    if failed:
        parts.append(f"{failed} member{'s' if failed > 1 else ''} failed")
    return f"[degraded: council ({', '.join(parts)})]"


def format_pairs(pairs: list[tuple[str, str]]) -> str:
    """`X-Council-Degraded`'s value: `fast-9b->fast-3b,think-9b->heavy`."""
    return ",".join(f"{asked}->{served}" for asked, served in pairs)


def parse_pairs(value: str | None) -> list[tuple[str, str]]:
    """The inverse of `format_pairs`; anything malformed is left out."""
    pairs = []
    for part in (value or "").split(","):
        asked, sep, served = part.strip().partition("->")
        if sep and asked and served:
            pairs.append((asked, served))
    return pairs


class Provenance(
    namedtuple(
        "Provenance", ["requested", "served", "lane", "council_degraded", "council_failed"], defaults=(None, (), 0)
    )
):
    """Which tier answered a request, as the headers say it: the tier `requested`; the one `served` (None: the
    proxy did not say); its `lane`; for the council, the (asked, served) pairs of its demoted parts and how many
    members failed. A namedtuple, not a dataclass: every `ask` call reads it (see ask_cli/query.py)."""

    __slots__ = ()

    @property
    def demoted(self) -> bool:
        return self.served is not None and self.served != self.requested

    @property
    def council_weakened(self) -> bool:
        return bool(self.council_degraded or self.council_failed)

    def headers(self) -> dict[str, str]:
        """The response headers that say it (the proxy's side)."""
        if self.served is None:
            return {}
        out = {SERVED_BY: self.served, SERVED_LANE: self.lane or LOCAL}
        if self.demoted:
            out[DEMOTED_FROM] = self.requested
        return out

    def marker(self) -> str | None:
        """The `[degraded: …]` line for stderr, or None when the answer is what was asked for."""
        if self.demoted and self.served:
            return degraded_marker(self.requested, self.served)
        if self.council_weakened:
            return council_marker(self.council_degraded, self.council_failed)
        return None

    @classmethod
    def of_headers(cls, requested: str, headers: Mapping[str, Any]) -> Provenance:
        """What the response headers say (the client's side); header names are case-insensitive."""
        low = {str(k).lower(): str(v) for k, v in headers.items()}
        failed = low.get(COUNCIL_FAILED.lower(), "0")
        return cls(
            requested=requested,
            served=low.get(SERVED_BY.lower()) or None,
            lane=low.get(SERVED_LANE.lower()) or None,
            council_degraded=parse_pairs(low.get(COUNCIL_DEGRADED.lower())),
            council_failed=int(failed) if failed.isdigit() else 0,
        )
