"""`ask warm TIER` (and `ask serve`'s warm start): load a tier's model now, so the next question does not wait.

One request through the proxy, so the RAM budget plugin decides as for any other: one token, uncached, no
fallbacks (a warm fast-3b is no warm fast-9b), and `metadata.ram_budget: "warm"`, which tells the plugin never
to wait for, or push out, a busy model for it: it refuses instead, and the refusal is said.
"""

from __future__ import annotations

import sys
import time
from collections import namedtuple

from ask_cli import client
from ask_cli.query import Question
from contract import paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PROMPT = "ok"
TIMEOUT_S = 600.0  # a 19 GB model read from disk, behind the plugin's own wait for room


class Warmed(namedtuple("Warmed", ["ok", "seconds", "reason"])):
    """`ok`: the tier's own model answered; `seconds` it took; `reason` why not, in the proxy's words."""

    __slots__ = ()


def body(tier: str) -> dict[str, Any]:
    """The warm request: one token, no cache, no fallbacks, the budget plugin's warm mark."""
    out = Question(model=tier, prompt=PROMPT, max_tokens=1, fallbacks=False, cached=False).body()
    out["fallbacks"] = []
    out["metadata"] = {"ram_budget": "warm"}
    return out


def warm(tier: str, url: str | None = None, key: str | None = None, timeout: float = TIMEOUT_S) -> Warmed:
    """Send the warm request to the proxy at `url` (default `client.proxy_url()`) and wait for its answer."""
    base = url or client.proxy_url()
    key = key or paths.master_key(create=False)
    started = time.perf_counter()
    if not key:
        return Warmed(False, 0.0, f"no master key in {paths.key_file()} or ${paths.KEY_ENV}: start the stack first")
    try:
        reply, pieces = client.stream_chat(base, key, body(tier), timeout)
        for _piece in pieces:
            pass
    except client.ProxyUnreachable as exc:
        reason = f"the proxy is not running at {base} ({exc}): start it with `ask serve`"
        return Warmed(False, time.perf_counter() - started, reason)
    except client.ProxyError as exc:
        return Warmed(False, time.perf_counter() - started, exc.message)
    served = reply.provenance.served
    if served is not None and served != tier:
        return Warmed(False, time.perf_counter() - started, f"the proxy answered with {served} instead")
    return Warmed(True, time.perf_counter() - started, "")


def run(tier: str) -> int:
    """`ask warm TIER`: one stderr line; 0 warmed, 1 not (the proxy's reason), 2 a tier this stack does not serve."""
    from ask_cli import models, stack_config

    try:
        known = models.read_tiers().tiers.names()
    except stack_config.ConfigError:
        known = []  # the proxy then says whether it knows the tier
    if known and tier not in known:
        sys.stderr.write(f"ask: unknown tier '{tier}': this stack serves {', '.join(known)}\n")
        return 2
    done = warm(tier)
    if done.ok:
        sys.stderr.write(f"{tier} warm ({done.seconds:.1f} s)\n")
        return 0
    sys.stderr.write(f"ask: {tier} not warmed: {done.reason}\n")
    return 2 if done.reason.startswith(f"unknown model '{tier}'") else 1
