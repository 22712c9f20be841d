"""`ask models`: each tier, its backend, its fallback chain, and whether its model is in memory right now.

Read from the running stack first: the proxy's own `/v1/model/info` (resolved `api_base`, `model_info`) and
`/router/settings` (the fallbacks it really uses), so a proxy started with another config or environment is
shown as it is. When the proxy is down or refuses the key, the yaml is read instead and a note says so.
Ollama's `/api/ps` says what is loaded and until when. The RAM budget (`budget_view`, which `ask doctor` reads
too) is what the proxy's budget plugin last wrote (`contract.budget`), else what `/api/ps` and this machine
say (`contract.memory`). Stdlib HTTP only, every call capped at a few seconds.
"""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ask_cli import client
from contract import budget as budget_state
from contract import memory, paths
from contract import tiers as tier_model

TIMEOUT_S = 2.0
FOREVER_S = 50 * 365 * 86400  # Ollama reports a negative keep_alive as now + ~292 years


class Unreachable(Exception):
    """Nothing answered (refused, timed out, bad address); the message is short and lower-case."""


def fetch(url: str, key: str | None = None, timeout: float = TIMEOUT_S) -> tuple[int, bytes]:
    """GET `url`: (status, body) for any HTTP answer, Unreachable when there is none."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    req = urllib.request.Request(url, headers=headers)  # noqa: S310 - the stack's own http addresses
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except urllib.error.URLError as exc:
        raise Unreachable(_reason(exc.reason, timeout)) from None
    except (OSError, ValueError) as exc:  # a read timeout, a reset, a malformed URL
        raise Unreachable(_reason(exc, timeout)) from None


def _reason(exc: object, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__


def fetch_json(url: str, key: str | None = None, timeout: float = TIMEOUT_S) -> Any:
    """GET a JSON document; Unreachable also for a non-200 answer or a body that is not JSON."""
    status, body = fetch(url, key, timeout)
    if status != 200:
        raise Unreachable(f"HTTP {status}")
    try:
        return json.loads(body)
    except ValueError:
        raise Unreachable("the answer is not JSON") from None


@dataclass
class StackView:
    """The tiers, where they were read from ("proxy" or "config"), and why it was not the proxy."""

    tiers: tier_model.Tiers
    source: str
    note: str | None = None


def tiers_from_proxy(base: str, key: str, timeout: float = TIMEOUT_S) -> tier_model.Tiers:
    """The tiers the running proxy serves, with the api_base it resolved and the fallbacks its router uses.

    Raises Unreachable (message says why) when the proxy cannot tell; the caller then reads the yaml.
    """
    status, body = fetch(f"{base}/v1/model/info", key, timeout)
    if status in (400, 401, 403):
        raise Unreachable(f"the proxy rejected the master key (HTTP {status})")
    if status != 200:
        raise Unreachable(f"/v1/model/info answered HTTP {status}")
    deployments = json.loads(body).get("data") or []
    try:  # 1.106.2 serves the router's live settings here; without it the chains come from the yaml
        settings = fetch_json(f"{base}/router/settings", key, timeout).get("current_values") or {}
    except (Unreachable, AttributeError):
        settings = _yaml_router_settings()
    return tier_model.build(deployments, settings.get("fallbacks"), settings.get("context_window_fallbacks"))


def _yaml_router_settings() -> dict[str, Any]:
    from ask_cli import stack_config

    try:
        config = stack_config.load(stack_config.default_config_path())
    except stack_config.ConfigError:
        return {}
    return config.get("router_settings") or {}


def read_tiers(config: Path | None = None, timeout: float = TIMEOUT_S) -> StackView:
    """The proxy's view when it answers and accepts the key, else the yaml's (raises ConfigError if broken)."""
    from ask_cli import stack_config

    base, key = client.proxy_url(), paths.master_key(create=False)
    if not key:
        why = f"no master key in {paths.key_file()} or ${paths.KEY_ENV}"
    else:
        try:
            return StackView(tiers_from_proxy(base, key, timeout), "proxy")
        except Unreachable as exc:
            why = f"the proxy at {base} did not answer ({exc}); start it with `ask serve`"
            if "rejected" in str(exc):
                why = f"{exc}: the proxy runs with another {paths.KEY_ENV}"
        except (ValueError, AttributeError) as exc:
            why = f"the proxy at {base} sent an unexpected /v1/model/info ({exc})"
    path = config or stack_config.default_config_path()
    return StackView(tier_model.from_config(stack_config.load(path)), "config", f"read from {path}: {why}")


# -- what is loaded now --------------------------------------------------------------------------------


def normalize_tag(tag: str) -> str:
    """Ollama's name matching: case-insensitive, and a tag without `:version` means `:latest`."""
    tag = tag.strip().lower()
    return tag if ":" in tag.rsplit("/", 1)[-1] else f"{tag}:latest"


def parse_expiry(value: str) -> float | None:
    """Epoch seconds of Ollama's RFC 3339 `expires_at` (nanoseconds and any offset allowed)."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$", value.strip())
    if not m:
        return None
    stamp, frac, zone = m.groups()
    text = stamp + (f".{frac[:6]}" if frac else "") + ("+00:00" if zone in (None, "Z") else zone)
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:  # e.g. year 2318 is fine, but guard against out-of-range dates anyway
        return None


@dataclass(frozen=True)
class Loaded:
    """One model in Ollama's `/api/ps`: the epoch when it unloads (None if unreadable), the GB it holds."""

    expires: float | None
    gb: float | None


def loaded_models(ollama_base: str, timeout: float = TIMEOUT_S) -> dict[str, Loaded]:
    """Ollama's `/api/ps`: normalized tag -> when it unloads and what it holds. Raises Unreachable."""
    payload = fetch_json(f"{ollama_base}/api/ps", timeout=timeout)
    loaded: dict[str, Loaded] = {}
    for row in payload.get("models") or []:
        name = row.get("name") or row.get("model")
        if name:
            size = row.get("size")
            gb = size / memory.GB if isinstance(size, int | float) and not isinstance(size, bool) else None
            loaded[normalize_tag(name)] = Loaded(parse_expiry(str(row.get("expires_at") or "")), gb)
    return loaded


PsCache = dict[str, dict[str, Loaded] | str]  # per Ollama address: its /api/ps, or why it is unknown


def ps_of(ps: PsCache, api_base: str, timeout: float = TIMEOUT_S) -> dict[str, Loaded] | str:
    """`loaded_models(api_base)`, read once per `ps` (one `ask models` or `ask doctor` run)."""
    if api_base not in ps:
        try:
            ps[api_base] = loaded_models(api_base, timeout)
        except Unreachable as exc:
            ps[api_base] = f"Ollama at {api_base}: {exc}"
    return ps[api_base]


def human_duration(seconds: float) -> str:
    """14m, 45s, 2h05m: the "(in …)" of an expiry."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{round(s / 60)}m"
    hours, rest = divmod(s, 3600)
    return f"{hours}h{rest // 60:02d}m"


def describe_expiry(expires: float | None, now: float) -> str:
    """ "loaded, until 14:32 (in 14m)" in local time; a date too if it is not today."""
    if expires is None:
        return "loaded"
    if expires - now > FOREVER_S:
        return "loaded, kept until Ollama stops (keep_alive < 0)"
    if expires <= now:
        return "loaded, unloading now"
    when, today = datetime.fromtimestamp(expires), datetime.fromtimestamp(now)
    clock = when.strftime("%H:%M") if when.date() == today.date() else when.strftime("%b %d %H:%M")
    return f"loaded, until {clock} (in {human_duration(expires - now)})"


def _server_answers(api_base: str, timeout: float) -> bool:
    """An OpenAI-compatible server (llama-swap, llama.cpp) answers `/models` under its API base."""
    try:
        return fetch(f"{api_base}/models", timeout=timeout)[0] == 200
    except Unreachable:
        return False


def rows(
    view: StackView, now: float | None = None, timeout: float = TIMEOUT_S, ps: PsCache | None = None
) -> list[dict[str, Any]]:
    """One JSON-ready dict per tier: the view's fields plus `loaded`, `expires_at`, `expires_in_s`, `now`.

    `loaded` is True/False for Ollama tiers (None when Ollama is down or for other runtimes); `answers` says
    whether the tier's server (Ollama, llama-swap, the embedded model) is up, `error` why not for Ollama.
    `ps` keeps each Ollama address's `/api/ps` for the caller's next question (`budget_view`).
    """
    now = time.time() if now is None else now
    ps = {} if ps is None else ps
    out = []
    for tier in view.tiers:
        for deployment in tier.deployments:
            out.append(_row(tier, deployment, view.source, ps, now, timeout))
    return out


def _row(
    tier: tier_model.Tier,
    deployment: tier_model.Deployment,
    source: str,
    ps: PsCache,
    now: float,
    timeout: float,
) -> dict[str, Any]:
    """One deployment's row; `ps` holds each Ollama address's `/api/ps`, read once per `rows` call."""
    row: dict[str, Any] = {
        "name": tier.name,
        "runtime": deployment.runtime,
        "model": deployment.model,
        "api_base": deployment.api_base or "",
        "keep_alive": deployment.keep_alive,
        "resident_gb": deployment.resident_gb,
        "fallbacks": list(tier.fallbacks),
        "source": source,
        "loaded": None,
        "expires_at": None,
        "expires_in_s": None,
        "answers": None,
        "error": None,
    }
    api_base = deployment.api_base or ""
    if deployment.is_ollama:
        loaded = ps_of(ps, api_base, timeout)
        if isinstance(loaded, str):
            row["answers"], row["error"] = False, loaded
            row["now"] = "unknown: Ollama is down"
        else:
            row["answers"] = True
            tag = normalize_tag(deployment.model)
            row["loaded"] = tag in loaded
            expires = loaded[tag].expires if tag in loaded else None
            if row["loaded"] and expires is not None:
                row["expires_at"] = datetime.fromtimestamp(expires).astimezone().isoformat(timespec="seconds")
                row["expires_in_s"] = round(expires - now)
            row["now"] = describe_expiry(expires, now) if row["loaded"] else "not loaded"
    elif deployment.runtime == "council":  # no server of its own: it asks other tiers (plugins/council.py)
        row["now"] = "asks other tiers"
    else:
        row["answers"] = _server_answers(api_base, timeout) if api_base else False
        up = "server answers, always loaded" if deployment.runtime == "embedded" else "server answers"
        row["now"] = up if row["answers"] else f"server down at {api_base or '(no api_base)'}"
    return row


def collect(config: Path | None = None, now: float | None = None, timeout: float = TIMEOUT_S) -> list[dict[str, Any]]:
    """The tiers of `ask models --json`: `rows(read_tiers())`."""
    return rows(read_tiers(config, timeout), now, timeout)


# -- the RAM budget ------------------------------------------------------------------------------------

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def budget_view(
    tiers: tier_model.Tiers, ps: PsCache | None = None, config: Path | None = None, timeout: float = TIMEOUT_S
) -> dict[str, Any]:
    """The RAM budget as `ask models` shows it and `ask doctor` checks against: `budget_gb` (None: unknown) and
    its `source`, what is `resident` (tier, model, runtime, gb, busy), `loading`, `unloading`, `queued`, and
    `from` where this was read.

    What the proxy's budget plugin last wrote (`contract.budget.read_state`) when it is fresh; else this
    machine's own answer: the models Ollama on this machine holds (`/api/ps`, read once per `ps`; a tag is
    named by the first tier that uses it, busy unknown) and `contract.memory.budget` with the explicit budget
    (`RAM_BUDGET_GB`, else the yaml's `ram_budget.budget_gb`)."""
    state = budget_state.read_state()
    if state is not None:
        gb = state.get("budget_gb")
        return {
            "budget_gb": float(gb) if isinstance(gb, int | float) else None,
            "source": str(state.get("source") or ""),
            **{key: list(state.get(key) or []) for key in ("resident", "loading", "unloading", "queued")},
            "from": f"the proxy's budget plugin ({budget_state.state_file()})",
        }
    ps = {} if ps is None else ps
    resident: list[dict[str, Any]] = []
    for base in dict.fromkeys(d.api_base for d in tiers.deployments() if d.is_ollama and d.api_base):
        if urlsplit(base).hostname not in LOOPBACK:
            continue  # another machine's RAM
        loaded = ps_of(ps, base, timeout)
        if isinstance(loaded, str):
            continue
        named = {}
        for deployment in tiers.deployments():
            if deployment.is_ollama and deployment.api_base == base:
                named.setdefault(normalize_tag(deployment.model), deployment.tier)
        for tag, model in loaded.items():
            resident.append(
                {"tier": named.get(tag, tag), "model": tag, "runtime": "ollama", "gb": model.gb, "busy": None}
            )
    held = sum(row["gb"] or 0.0 for row in resident)
    try:
        explicit, label = memory.explicit_budget(_yaml_block("ram_budget", config).get("budget_gb"))
        total, source = memory.budget(explicit, held, explicit_source=label)
    except ValueError as exc:
        total, source = None, str(exc)
    return {
        "budget_gb": total,
        "source": source,
        "resident": resident,
        "loading": [],
        "unloading": [],
        "queued": [],
        "from": "Ollama's /api/ps and this machine's free memory (the proxy's budget plugin has said nothing)",
    }


def _yaml_block(name: str, config: Path | None = None) -> dict[str, Any]:
    """One top-level block of the yaml (`ram_budget:`), {} when absent or unreadable."""
    from ask_cli import stack_config

    try:
        block = stack_config.load(config or stack_config.default_config_path()).get(name)
    except stack_config.ConfigError:
        return {}
    return block if isinstance(block, dict) else {}


def _gb(value: Any) -> str:
    return f"{value:.1f} GB" if isinstance(value, int | float) else "? GB"


def _ago(since: Any, now: float) -> str:
    return f", {human_duration(now - since)}" if isinstance(since, int | float) else ""


def budget_lines(view: dict[str, Any], now: float | None = None) -> list[str]:
    """The budget under the table: one line for the budget, one per resident, loading, unloading or queued model."""
    now = time.time() if now is None else now
    total = view["budget_gb"]
    lines = [f"budget: {_gb(total)} ({view['source']})" if total is not None else f"budget: unknown ({view['source']})"]
    for row in view["resident"]:
        busy = row.get("busy")
        state = "busy" if busy else ("idle" if busy is not None else "busy unknown")
        lines.append(f"resident: {row.get('tier')} ({row.get('model')}) {_gb(row.get('gb'))}, {state}")
    for row in view["loading"]:
        since = _ago(row.get("since"), now)
        lines.append(f"loading: {row.get('tier')} ({row.get('model')}) {_gb(row.get('gb'))}{since}")
    for row in view["unloading"]:
        lines.append(f"unloading: {row.get('tier')} ({row.get('model')}){_ago(row.get('since'), now)}")
    for row in view["queued"]:
        behind = ", ".join(str(name) for name in row.get("waiting_for") or ()) or "another switch"
        since = _ago(row.get("since"), now)
        lines.append(f"queued: {row.get('tier')} {_gb(row.get('gb'))}, waiting for {behind}{since}")
    return lines


# -- output --------------------------------------------------------------------------------------------

COLUMNS = (
    ("TIER", "name"),
    ("RUNTIME", "runtime"),
    ("MODEL", "model"),
    ("KEEP_ALIVE", "keep_alive"),
    ("FALLS BACK TO", "chain"),
    ("NOW", "now"),
)


def table(data: list[dict[str, Any]]) -> str:
    """Fixed-width columns, headers in capitals, `-` for nothing."""
    cells = []
    for row in data:
        shown = {**row, "chain": " → ".join(row.get("fallbacks") or []) or "-"}
        cells.append([str(shown.get(key) or "-") for _, key in COLUMNS])
    headers = [title for title, _ in COLUMNS]
    widths = [max(len(c) for c in column) for column in zip(headers, *cells, strict=False)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in [headers, *cells]]
    return "\n".join(lines)


def run(as_json: bool = False, config: Path | None = None) -> int:
    """`ask models [--json] [--config PATH]`: the table and the budget (or one JSON object: `tiers`, `budget`) on
    stdout, notes on stderr.

    `config` is the yaml read only when the proxy cannot be asked (down, or the key is not its key).

    Exit 0 whenever the tiers could be read, 2 if neither the proxy nor the yaml could tell.
    """
    from ask_cli import stack_config

    try:
        view = read_tiers(config)
    except stack_config.ConfigError as exc:
        print(f"ask: {exc}", file=sys.stderr)
        return 2
    ps: PsCache = {}
    data = rows(view, ps=ps)
    budget = budget_view(view.tiers, ps, config)
    if as_json:
        print(json.dumps({"tiers": data, "budget": budget}, ensure_ascii=False, indent=2))
    else:
        print("\n".join([table(data), "", *budget_lines(budget)]))
    for note in dict.fromkeys([view.note, *(row.get("error") for row in data)]):
        if note:
            print(f"ask: {note}", file=sys.stderr)
    return 0
