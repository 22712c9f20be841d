"""`ask doctor`: one line per part of the stack, `ok`, `warn` or `FAIL`, and for each failure the command that fixes it.

Every check is capped at about 2 s and they run side by side, so a dead or black-holed backend costs
seconds, not minutes; one failing check never stops the others. Exit 1 if any check FAILs: `warn` is for
optional parts (heavy) and for the memory budget, which is a fact about this machine, not a fault.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ask_cli import client
from ask_cli.models import TIMEOUT_S, Unreachable, budget_view, fetch, fetch_json, normalize_tag, read_tiers
from contract import memory, paths
from contract.tiers import Deployment, Tiers

# With --ram-gb: what macOS and the user's open apps hold, per the seed: "macOS plus everything I have open eats
# 12–16 GB". The low end is taken, so a pair flagged then cannot fit even on a good day: 24 GB leaves 12 GB.
OS_ALLOWANCE_GB = 12.0
SHORT_KEEP_ALIVE_S = 60  # a model that leaves within a minute of its last call does not hold the other out
GIB = 1024**3  # bench/stress.py counts RAM in GiB; the budget is in GB (10^9 bytes, contract.memory)
START_OLLAMA = "brew services start ollama (macOS) or `ollama serve` (Linux)"


@dataclass
class Check:
    status: str  # "ok", "warn" or "FAIL"
    what: str
    fix: str | None = None

    def line(self) -> str:
        return f"{self.status:<4}  {self.what}" + (f" — fix: {self.fix}" if self.fix else "")


def _home(path: Path) -> str:
    """`~/.config/ask/master.key` rather than the full home path: what the user would type."""
    text, home = str(path), str(Path.home())
    return "~" + text[len(home) :] if text.startswith(home + os.sep) else text


# -- the proxy ---------------------------------------------------------------------------------------------


def check_proxy(timeout: float = TIMEOUT_S) -> list[Check]:
    """Liveliness, then an authenticated cheap call (`/v1/models`) to prove the key is the proxy's."""
    base = client.proxy_url()
    try:
        status, _ = fetch(f"{base}/health/liveliness", timeout=timeout)
    except Unreachable as exc:
        return [
            Check("FAIL", f"proxy: nothing answers at {base} ({exc})", "start the stack: ask serve"),
            Check("warn", "proxy: master key not checked (the proxy is down)"),
        ]
    if status != 200:
        return [
            Check(
                "FAIL",
                f"proxy at {base}: /health/liveliness answered HTTP {status}",
                "restart the stack: ask serve (its log says why)",
            )
        ]
    checks = [Check("ok", f"proxy answers at {base}")]
    key = paths.master_key(create=False)
    from_env = bool(os.environ.get(paths.KEY_ENV, "").strip())
    where = f"${paths.KEY_ENV}" if from_env else _home(paths.key_file())
    if not key:
        checks.append(
            Check(
                "FAIL",
                f"proxy: no master key in {_home(paths.key_file())} or ${paths.KEY_ENV}",
                f"set {paths.KEY_ENV} to the proxy's key, or restart with `ask serve`, which creates one",
            )
        )
        return checks
    try:
        status, _ = fetch(f"{base}/v1/models", key, timeout)
    except Unreachable as exc:
        checks.append(Check("FAIL", f"proxy: /v1/models did not answer ({exc})", "restart the stack: ask serve"))
        return checks
    if status == 200:
        checks.append(Check("ok", f"proxy accepts the master key ({where})"))
    elif status in (400, 401, 403):  # 1.106.2 says 400 "No connected db." for an unknown key, 401 for none
        checks.append(
            Check(
                "FAIL",
                f"key rejected: the proxy runs with another {paths.KEY_ENV} than {where}",
                f"restart it with `ask serve` (it uses {where}), or set {paths.KEY_ENV} to its key",
            )
        )
    else:
        checks.append(Check("FAIL", f"proxy: /v1/models answered HTTP {status}", "restart the stack: ask serve"))
    return checks


# -- Ollama ------------------------------------------------------------------------------------------------


def check_ollama(tiers: Tiers, timeout: float = TIMEOUT_S) -> list[Check]:
    """Ollama answers (`/api/version`) at each address the Ollama tiers use, and every tag is pulled."""
    checks: list[Check] = []
    bases = dict.fromkeys(d.api_base for d in tiers.deployments() if d.is_ollama)
    for base in bases:
        try:
            version = fetch_json(f"{base}/api/version", timeout=timeout).get("version", "?")
        except (Unreachable, AttributeError) as exc:
            checks.append(Check("FAIL", f"ollama: nothing answers at {base} ({exc})", START_OLLAMA))
            checks.append(Check("warn", "ollama: pulled tags not checked (Ollama is down)"))
            continue
        checks.append(Check("ok", f"ollama {version} answers at {base}"))
        try:
            pulled = {
                normalize_tag(m.get("name") or m.get("model") or "")
                for m in fetch_json(f"{base}/api/tags", timeout=timeout).get("models") or []
            }
        except (Unreachable, AttributeError) as exc:
            checks.append(Check("FAIL", f"ollama: /api/tags did not answer ({exc})", START_OLLAMA))
            continue
        by_tag: dict[str, list[str]] = {}
        for deployment in tiers.deployments():
            if deployment.is_ollama and deployment.api_base == base:
                by_tag.setdefault(deployment.model, []).append(deployment.tier)
        for tag, names in by_tag.items():
            if normalize_tag(tag) in pulled:
                checks.append(Check("ok", f"ollama: {tag} pulled ({', '.join(names)})"))
            else:
                checks.append(Check("FAIL", f"ollama: {tag} is not pulled ({', '.join(names)})", f"ollama pull {tag}"))
    return checks


# -- the embedded model and other OpenAI-compatible servers --------------------------------------------------


def check_embedded(tiers: Tiers, timeout: float = 1.0) -> list[Check]:
    """The embedded tier's server answers; its weights and runtime are installed where `ask serve` would need them.

    Missing pieces are FAIL only when nothing answers: a server started elsewhere does not need them here.
    """
    from importlib.util import find_spec

    from ask_cli import embedded

    checks: list[Check] = []
    for tier in (d for d in tiers.deployments() if d.runtime == "embedded"):
        answers = embedded.wait_ready(tier.api_base, timeout)
        if answers:
            checks.append(Check("ok", f"{tier.tier}: the embedded model answers at {tier.api_base}"))
        else:
            checks.append(
                Check(
                    "FAIL",
                    f"{tier.tier}: nothing answers at {tier.api_base}",
                    "start the stack with `ask serve` (it starts the embedded model), "
                    "or run `python -m ask_cli.embedded` for that address",
                )
            )
        missing = "warn" if answers else "FAIL"
        try:
            checks.append(Check("ok", f"{tier.tier}: weights installed ({_home(embedded.find_weights())})"))
        except embedded.EmbeddedModelMissing:
            checks.append(
                Check(missing, f"{tier.tier}: the embedded model's weights are not installed", embedded.INSTALL_WEIGHTS)
            )
        try:
            runtime = find_spec("xllamacpp") is not None
        except (ImportError, ValueError):
            runtime = False
        if runtime:
            checks.append(Check("ok", f"{tier.tier}: llama.cpp runtime (xllamacpp) installed"))
        else:
            checks.append(
                Check(missing, f"{tier.tier}: llama.cpp runtime (xllamacpp) is not installed", embedded.INSTALL_RUNTIME)
            )
    return checks


def check_openai_servers(tiers: Tiers, timeout: float = TIMEOUT_S) -> list[Check]:
    """llama.cpp tiers (heavy behind llama-swap): optional, so a dead one is a warn, with who falls back to it."""
    checks: list[Check] = []
    for tier in (d for d in tiers.deployments() if not d.is_ollama and d.runtime not in ("embedded", "council")):
        feeders = [t.name for t in tiers if tier.tier in t.fallbacks]
        verb = "falls" if len(feeders) == 1 else "fall"
        optional = "optional tier" + (f"; {', '.join(feeders)} {verb} back to it" if feeders else "")
        try:
            listed = fetch_json(f"{tier.api_base}/models", timeout=timeout).get("data") or []
        except (Unreachable, AttributeError) as exc:
            checks.append(
                Check(
                    "warn",
                    f"{tier.tier}: nothing answers at {tier.api_base} ({exc}; {optional})",
                    "start llama-swap (see README), or point LLAMA_SWAP_API_BASE at your llama.cpp server",
                )
            )
            continue
        ids = {str(m.get("id")) for m in listed if isinstance(m, dict)}
        if tier.model in ids:
            checks.append(Check("ok", f"{tier.tier}: {tier.model} served at {tier.api_base}"))
        else:
            checks.append(
                Check(
                    "warn",
                    f"{tier.tier}: the server at {tier.api_base} does not list {tier.model}",
                    f"add a model named {tier.model} to llama-swap's config (see README)",
                )
            )
    return checks


# -- Redis -------------------------------------------------------------------------------------------------


def _resp(*args: str) -> bytes:
    """A RESP array command: safe for passwords with spaces, unlike the inline form."""
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def redis_ping(host: str, port: int, password: str | None, timeout: float = TIMEOUT_S) -> str | None:
    """None if Redis answers PING with PONG (after AUTH when a password is set), else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock, sock.makefile("rb") as replies:
            if password:
                sock.sendall(_resp("AUTH", password))
                reply = replies.readline().decode(errors="replace").strip()
                if not reply.startswith("+OK"):
                    return f"AUTH refused: {reply.lstrip('-') or 'connection closed'}"
            sock.sendall(b"PING\r\n")
            reply = replies.readline().decode(errors="replace").strip()
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
    return None if reply == "+PONG" else f"PING answered {reply.lstrip('-') or 'nothing'}"


def check_redis(timeout: float = TIMEOUT_S) -> list[Check]:
    """Only when REDIS_HOST is set (`ask serve` then caches there): the cache server answers PING."""
    host = os.environ.get("REDIS_HOST", "").strip()
    if not host:
        return []
    try:
        port = int(os.environ.get("REDIS_PORT") or 6379)
    except ValueError:
        return [
            Check(
                "FAIL",
                f"redis: REDIS_PORT={os.environ['REDIS_PORT']!r} is not a port number",
                "set REDIS_PORT to a number, e.g. 6379",
            )
        ]
    problem = redis_ping(host, port, os.environ.get("REDIS_PASSWORD") or None, timeout)
    if problem is None:
        return [Check("ok", f"redis answers PING at {host}:{port}")]
    fix = (
        "set REDIS_PASSWORD to the server's password"
        if "AUTH" in problem or "NOAUTH" in problem
        else "start it (brew services start redis, or redis-server), or unset REDIS_HOST to cache in the proxy"
    )
    return [Check("FAIL", f"redis at {host}:{port}: {problem}", fix)]


def database_address(url: str) -> tuple[str, str, int] | None:
    """(database URL without its password, host, port) for a postgresql:// URL; None for anything else."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        return None
    shown = parts._replace(
        netloc=f"{parts.username + '@' if parts.username else ''}{parts.hostname}"
        f"{':' + str(parts.port) if parts.port else ''}"
    ).geturl()
    return shown, parts.hostname, parts.port or 5432


def check_database(timeout: float = TIMEOUT_S) -> list[Check]:
    """Optional PostgreSQL (DATABASE_URL) for the UI's logs: it accepts connections, and the proxy uses it."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        return [Check("ok", "database: none (optional; DATABASE_URL gives the UI at /ui its logs, see README)")]
    found = database_address(url)
    if found is None:
        return [
            Check(
                "FAIL",
                "database: DATABASE_URL is not a postgresql:// URL",
                "set it like postgresql://litellm:PASSWORD@127.0.0.1:5432/litellm",
            )
        ]
    shown, host, port = found
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return [
            Check(
                "FAIL",
                f"database: nothing answers at {host}:{port} ({exc.strerror or exc})",
                "start PostgreSQL: brew services start postgresql@16, or systemctl start postgresql",
            )
        ]
    checks = [Check("ok", f"database: PostgreSQL answers at {host}:{port} ({shown})")]
    try:
        ready = fetch_json(f"{client.proxy_url()}/health/readiness", timeout=timeout)
    except Unreachable:
        return checks  # the proxy lines say it is down
    state = str(ready.get("db", "?")) if isinstance(ready, dict) else "?"
    if state == "connected":
        checks.append(Check("ok", "database: the proxy is connected to it (the UI's Logs page has requests)"))
    else:
        checks.append(
            Check(
                "FAIL",
                f"database: the proxy says db={state!r}",
                "restart it with DATABASE_URL set: ask serve (its log says why it did not connect)",
            )
        )
    return checks


# -- the memory budget -------------------------------------------------------------------------------------


def ram_bytes() -> int | None:
    """Physical RAM in bytes (`contract.memory.total_gb`: /proc/meminfo, or `sysctl hw.memsize` on macOS)."""
    gb = memory.total_gb()
    return None if gb is None else round(gb * memory.GB)


def budget_of(
    tiers: Tiers,
    ram_gb: float | None = None,
    os_allowance_gb: float = OS_ALLOWANCE_GB,
    config: Path | None = None,
    timeout: float = TIMEOUT_S,
) -> tuple[float | None, str]:
    """(GB for our models, where it comes from): `ask models`' budget (`models.budget_view`: the proxy's budget
    plugin, else this machine's free memory and the explicit budget), or `--ram-gb` less `--os-gb` when given."""
    if ram_gb is not None:
        source = f"{ram_gb:g} GB RAM − {os_allowance_gb:g} GB for the OS and open apps"
        return max(0.0, ram_gb - os_allowance_gb), source
    view = budget_view(tiers, config=config, timeout=timeout)
    return view["budget_gb"], view["source"]


def keep_alive_seconds(value: str | None) -> float | None:
    """Seconds of an Ollama keep_alive ("30s", "15m", "1h30m", or a number of seconds); None = forever/unknown."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        units = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
        parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text.lstrip("+-"))
        if not parts or "".join(n + u for n, u in parts) != text.lstrip("+-"):
            return None
        seconds = sum(float(n) * units[u] for n, u in parts) * (-1 if text.startswith("-") else 1)
    return None if seconds < 0 else seconds


@dataclass
class Blob:
    """What occupies RAM once however many tiers use it: Ollama shares one runner per tag (and num_ctx)."""

    tiers: list[Deployment]
    gb: float

    @property
    def label(self) -> str:
        return "/".join(t.tier for t in self.tiers)

    @property
    def keep_alive(self) -> str | None:
        return self.tiers[0].keep_alive

    def __str__(self) -> str:
        return f"{self.label} ({self.gb:g} GB)"


def blobs(tiers: Tiers) -> list[Blob]:
    """Ollama tiers grouped by tag (fast-9b and think-9b are one blob); other runtimes one each; no size, no blob."""
    grouped: dict[str, list[Deployment]] = {}
    for tier in tiers.deployments():
        if tier.resident_gb is not None:
            grouped.setdefault(
                f"ollama:{normalize_tag(tier.model)}" if tier.is_ollama else f"tier:{tier.tier}", []
            ).append(tier)
    return [Blob(group, max(t.resident_gb or 0.0 for t in group)) for group in grouped.values()]


def budget_checks(tiers: Tiers, budget_gb: float | None, source: str) -> list[Check]:
    """Which models fit in the budget (`budget_of`), alone and in pairs (`model_info.resident_gb`).

    Pairs are taken among Ollama blobs, the models one scheduler keeps or evicts by keep_alive; a llama.cpp
    model gets one line naming the Ollama models it cannot sit next to. The embedded model (0.35 GB, always
    resident) is left out: it changes no answer.
    """
    if budget_gb is None:
        return [Check("warn", f"budget: unknown ({source})", "set RAM_BUDGET_GB, or pass --ram-gb")]
    available = budget_gb
    checks = [Check("ok", f"budget: {available:.1f} GB for models ({source})")]
    every = [b for b in blobs(tiers) if b.tiers[0].runtime != "embedded"]
    for blob in every:
        if blob.gb > available:
            checks.append(
                Check(
                    "warn",
                    f"budget: {blob} alone is more than the {available:.1f} GB available: "
                    "it loads only by pushing open apps into swap",
                    f"close apps before using {blob.label}, or give it a smaller quant or num_ctx",
                )
            )
    ollama = [b for b in every if b.tiers[0].is_ollama]
    for a, b in itertools.combinations(ollama, 2):
        if a.gb + b.gb <= available:
            continue
        shorter = min((a, b), key=lambda x: _seconds_or_inf(x.keep_alive))
        together = (
            f"budget: {a} + {b} = {a.gb + b.gb:.1f} GB > {available:.1f} GB available: cannot be resident together"
        )
        if _seconds_or_inf(shorter.keep_alive) <= SHORT_KEEP_ALIVE_S:
            checks.append(Check("ok", f"{together} — that is why {shorter.label}'s keep_alive is {shorter.keep_alive}"))
        else:
            checks.append(
                Check(
                    "warn",
                    f"{together}, and neither leaves within a minute of its last call",
                    "shorten the larger one's model_info.keep_alive in litellm-config.yaml",
                )
            )
    for blob in (b for b in every if not b.tiers[0].is_ollama and b.gb <= available):
        crowded = [o for o in ollama if blob.gb + o.gb > available]
        if crowded:
            names = ", ".join(str(o) for o in crowded)
            checks.append(
                Check(
                    "ok",
                    f"budget: {blob} ({blob.tiers[0].runtime}) cannot be resident with {names}: "
                    "its own server's idle timeout (llama-swap's ttl) decides when it leaves",
                )
            )
    return checks


def _seconds_or_inf(keep_alive: str | None) -> float:
    seconds = keep_alive_seconds(keep_alive)
    return float("inf") if seconds is None else seconds


# -- all together ------------------------------------------------------------------------------------------


def run_checks(
    config: Path | None = None,
    ram_gb: float | None = None,
    os_allowance_gb: float = OS_ALLOWANCE_GB,
    timeout: float = TIMEOUT_S,
) -> list[Check]:
    """Every check, in a fixed order, run side by side. The budget is `budget_of`'s (`ram_gb`: that RAM less
    `os_allowance_gb` instead)."""
    from ask_cli import stack_config

    head: list[Check] = []
    try:
        view = read_tiers(config, timeout)
        tiers = view.tiers
        if view.source != "proxy":  # the proxy lines below say why it could not be asked
            head.append(
                Check(
                    "warn",
                    f"tiers read from {config or stack_config.default_config_path()}, not from the running proxy",
                )
            )
    except stack_config.ConfigError as exc:
        tiers = Tiers(())
        head.append(Check("FAIL", f"config: {exc}", "fix litellm-config.yaml (or set ASK_LITELLM_CONFIG)"))
    groups: list[Callable[[], list[Check]]] = [
        lambda: check_proxy(timeout),
        lambda: check_ollama(tiers, timeout),
        lambda: check_embedded(tiers, min(1.0, timeout)),
        lambda: check_openai_servers(tiers, timeout),
        lambda: check_redis(timeout),
        lambda: check_database(timeout),
        lambda: budget_checks(tiers, *budget_of(tiers, ram_gb, os_allowance_gb, config, timeout)),
    ]
    with ThreadPoolExecutor(max_workers=len(groups)) as pool:
        results = [pool.submit(group) for group in groups]
        return head + [check for result in results for check in result.result()]


def run(config: Path | None = None, ram_gb: float | None = None, os_allowance_gb: float = OS_ALLOWANCE_GB) -> int:
    """`ask doctor [--config PATH] [--ram-gb N] [--os-gb N]`: print each check; 1 if any FAILed, else 0."""
    from ask_cli import secrets_file

    try:  # what `ask serve` would see: credentials from ~/.config/ask/secrets.env where the shell has none
        secrets_file.apply(os.environ)
    except secrets_file.SecretsError as exc:
        print(Check("FAIL", f"secrets: {exc}").line())
    found = run_checks(config, ram_gb, os_allowance_gb)
    for check in found:
        print(check.line())
    return 1 if any(c.status == "FAIL" for c in found) else 0
