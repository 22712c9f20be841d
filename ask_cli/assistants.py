"""`ask setup TOOL`: point a coding assistant at this stack's proxy, printed or (`--write`) merged into its config.

Printing is the default because the user's assistant config is theirs: `--write` shows a unified diff, asks, backs
the old file up, and merges only our keys. The master key is referenced (`$LITELLM_MASTER_KEY`, `{env:…}`,
`${{ secrets.… }}`, a key helper) wherever the tool can resolve it; only aider's YAML takes nothing but a literal
key, so only `ask setup aider --write` puts it in a file, made 0600, and the diff never shows it.

Stdout carries only the config (so `ask setup opencode > opencode.json` works); the notes go to stderr.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from ask_cli import client, stack_config
from contract import DEFAULT_TIER, paths
from contract import tiers as tier_model

KEY_ENV = paths.KEY_ENV  # LITELLM_MASTER_KEY
# Best first: the main coding tier, then the fast one for small jobs, then the others worth offering.
CODING_TIERS = ("coder-30b", DEFAULT_TIER, "think-9b", "heavy")
AUTOCOMPLETE_TIERS = ("fast-3b", "fast-1b")
OPENCODE_PROVIDER = "ask"  # models are then `ask/coder-30b` in opencode
CONTINUE_SUFFIX = " (local stack)"  # marks the Continue model entries this command owns
REDACTED = f"<{KEY_ENV}>"
DEFAULT_CONTEXT = 8192  # the context assumed for a main tier whose yaml entry gives no num_ctx


class SetupError(Exception):
    """One line for the user; `code` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class CodingTiers:
    """The tiers an assistant gets for each of its roles, read from litellm-config.yaml so a renamed tier never
    drifts."""

    main: str
    small: str
    autocomplete: str
    coding: tuple[str, ...]
    context: dict[str, int] = field(default_factory=dict)  # num_ctx where the yaml says it
    chat: tuple[str, ...] = ()  # every tier that answers chat, in the yaml's order


def coding_tiers(config: Mapping[str, Any]) -> CodingTiers:
    """The best of the config's tiers (`contract.tiers`) for the main, small and autocomplete roles."""
    served = tier_model.from_config(config)
    if not len(served):
        raise SetupError("litellm-config.yaml defines no tiers (model_list is empty)")
    coding = tuple(n for n in CODING_TIERS if n in served) or tuple(served.names())
    small = DEFAULT_TIER if DEFAULT_TIER in served else coding[0]
    autocomplete = next((n for n in AUTOCOMPLETE_TIERS if n in served), small)
    context = {t.name: t.num_ctx for t in served if t.num_ctx}
    chat = tuple(t.name for t in served if not t.embeds)
    return CodingTiers(
        main=coding[0], small=small, autocomplete=autocomplete, coding=coding, context=context, chat=chat
    )


def load_tiers(config_path: Path | None = None) -> CodingTiers:
    path = config_path or stack_config.default_config_path()
    try:
        return coding_tiers(stack_config.load(path))
    except stack_config.ConfigError as exc:
        raise SetupError(str(exc), 2) from None


def openai_base() -> str:
    """OpenAI-compatible clients append /chat/completions to this."""
    return client.proxy_url() + "/v1"


def shell_path(path: Path) -> str:
    """`"$HOME/.config/ask/master.key"` rather than the user's literal home, so printed lines stay portable."""
    try:
        rel = path.relative_to(Path.home())
    except ValueError:
        return shlex.quote(str(path))
    if re.fullmatch(r"[A-Za-z0-9._/-]+", str(rel)):
        return f'"$HOME/{rel}"'
    return shlex.quote(str(path))


def tilde(path: Path | None) -> str:
    """A path as the user would type it, for the notes."""
    if path is None:
        return ""
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


def key_expression(key_file: Path) -> str:
    """Shell that yields the key the way `paths.master_key` finds it: the variable first, else the key file."""
    return f'"${{{KEY_ENV}:-$(cat {shell_path(key_file)})}}"'


# --- the configs, one pure function each -------------------------------------------------------------------


def opencode_config(base_url: str, tiers: CodingTiers) -> dict[str, Any]:
    """opencode's custom OpenAI-compatible provider.

    Format: https://opencode.ai/docs/providers/#custom-provider (`npm: @ai-sdk/openai-compatible`, `options.baseURL`,
    `options.apiKey`, `models.<id>.name`, `models.<id>.limit.{context,output}`); `{env:VAR}` substitution:
    https://opencode.ai/docs/config/#env-vars ; `model` / `small_model` as `provider/model`:
    https://opencode.ai/docs/config/#models
    """
    models: dict[str, Any] = {}
    for tier in tiers.coding:
        model: dict[str, Any] = {"name": f"{tier} (local)"}
        ctx = tiers.context.get(tier)
        if ctx:  # models.dev does not know our tiers: tell opencode the window so it compacts in time
            model["limit"] = {"context": ctx, "output": ctx // 2}
        models[tier] = model
    return {
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            OPENCODE_PROVIDER: {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Local LLM stack (LiteLLM)",
                "options": {"baseURL": base_url, "apiKey": f"{{env:{KEY_ENV}}}"},
                "models": models,
            }
        },
        "model": f"{OPENCODE_PROVIDER}/{tiers.main}",
        "small_model": f"{OPENCODE_PROVIDER}/{tiers.small}",
    }


def claude_code_settings(proxy: str, tiers: CodingTiers, key_file: Path) -> dict[str, Any]:
    """Claude Code's `~/.claude/settings.json` keys for an Anthropic-format gateway.

    LiteLLM serves `POST /v1/messages` and routes its `model` through the router like /chat/completions
    (litellm/proxy/anthropic_endpoints/endpoints.py → route_request(route_type="anthropic_messages") in 1.106.2;
    https://docs.litellm.ai/docs/anthropic_unified , https://docs.litellm.ai/docs/proxy/client_setup/claude_code).
    ANTHROPIC_BASE_URL is the proxy root: Claude Code appends /v1/messages itself.
    Env vars and apiKeyHelper: https://code.claude.com/docs/en/llm-gateway (LiteLLM section: apiKeyHelper's output
    is sent as `Authorization: Bearer` and `X-Api-Key`), https://code.claude.com/docs/en/settings (`env`,
    `apiKeyHelper` runs in /bin/sh). Model variables: https://code.claude.com/docs/en/model-config —
    ANTHROPIC_DEFAULT_{OPUS,SONNET,HAIKU}_MODEL are current; ANTHROPIC_SMALL_FAST_MODEL is the deprecated name of
    the haiku one, kept for older Claude Code. The /model aliases would otherwise send claude-* names our proxy
    does not serve. CLAUDE_CODE_MAX_OUTPUT_TOKENS (https://code.claude.com/docs/en/env-vars): Claude Code asks
    32,000 by default, four times the tiers' 8,192-token context; half the main tier's context leaves the other
    half for its prompt and tools (the proxy clamps what still does not fit, plugins/context_window.py).
    The key comes from apiKeyHelper rather than a literal ANTHROPIC_AUTH_TOKEN, so the file holds no secret.
    """
    return {
        "env": {
            "ANTHROPIC_BASE_URL": proxy,
            "ANTHROPIC_MODEL": tiers.main,
            "ANTHROPIC_DEFAULT_OPUS_MODEL": tiers.main,
            "ANTHROPIC_DEFAULT_SONNET_MODEL": tiers.main,
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": tiers.small,
            "ANTHROPIC_SMALL_FAST_MODEL": tiers.small,
            "CLAUDE_CODE_MAX_OUTPUT_TOKENS": str(max_output_tokens(tiers)),
        },
        "apiKeyHelper": f"printf '%s' {key_expression(key_file)}",
    }


def max_output_tokens(tiers: CodingTiers) -> int:
    """The answer's share of the main tier's context: half (4,096 of 8,192)."""
    return tiers.context.get(tiers.main, DEFAULT_CONTEXT) // 2


CODEX_PROVIDER = "local-llm-stack"


def codex_config(base_url: str, tiers: CodingTiers) -> dict[str, Any]:
    """Codex's `config.toml` keys (https://developers.openai.com/codex/config-sample, .../codex/config-reference):
    a `model_providers` entry whose `base_url` ends in /v1 (Codex appends /responses), `wire_api = "responses"`
    (the only one current Codex accepts; LiteLLM serves /v1/responses through the router), `env_key` naming the
    variable that holds the key (never the key itself). `model_context_window` and
    `model_auto_compact_token_limit` tell Codex the tier's real context, which it cannot know for a model outside
    its catalog: it compacts its history before the tier would drop the oldest messages."""
    context = tiers.context.get(tiers.main, DEFAULT_CONTEXT)
    return {
        "model": tiers.main,
        "model_provider": CODEX_PROVIDER,
        "model_context_window": context,
        "model_auto_compact_token_limit": context * 3 // 4,
        "model_providers": {
            CODEX_PROVIDER: {
                "name": "Local LLM stack",
                "base_url": base_url,
                "env_key": KEY_ENV,
                "wire_api": "responses",
            }
        },
    }


def _toml_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else str(value)


def _codex_roots(ours: dict[str, Any]) -> list[str]:
    return [f"{k} = {_toml_value(v)}" for k, v in ours.items() if not isinstance(v, dict)]


def _codex_tables(ours: dict[str, Any]) -> str:
    return "\n".join(
        f"[model_providers.{name}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in table.items())
        for name, table in ours["model_providers"].items()
    )


def _dump_codex(ours: dict[str, Any]) -> str:
    return "\n".join(_codex_roots(ours)) + "\n\n" + _codex_tables(ours)


def merge_codex_toml(text: str, ours: dict[str, Any]) -> str:
    """The user's config.toml with our root keys set and our provider table replaced; every other line kept as
    written (comments, other providers, profiles). TOML needs root keys before the first table."""
    import tomllib

    table_re = re.compile(r"^\s*\[")
    ours_header = re.compile(rf"^\s*\[\s*model_providers\.{re.escape(CODEX_PROVIDER)}\s*\]")
    kept: list[str] = []
    skipping = False
    for line in text.splitlines():
        if table_re.match(line):
            skipping = bool(ours_header.match(line))
        if not skipping:
            kept.append(line)
    first_table = next((i for i, line in enumerate(kept) if table_re.match(line)), len(kept))
    roots = [k for k, v in ours.items() if not isinstance(v, dict)]
    root_re = re.compile(rf"^\s*({'|'.join(map(re.escape, roots))})\s*=")
    head = [line for line in kept[:first_table] if not root_re.match(line)]
    while head and not head[-1].strip():
        head.pop()
    rest = kept[first_table:]
    while rest and not rest[-1].strip():
        rest.pop()
    tables = _codex_tables(ours).rstrip("\n")
    merged = "\n".join([*head, *_codex_roots(ours), "", *rest, *([""] if rest else []), tables]) + "\n"
    tomllib.loads(merged)  # what Codex will read: a merge that broke the file must not be written
    return merged


LLM_KEY_NAME = "ask"  # `llm keys set ask`: never the user's stored OpenAI key, which llm would send here


def llm_models(base_url: str, tiers: CodingTiers) -> list[dict[str, Any]]:
    """`llm`'s extra-openai-models.yaml (https://llm.datasette.io/en/stable/other-models.html#openai-compatible-models):
    one entry per chat tier. `api_key_name` names the key llm sends; without it llm sends "DUMMY_KEY"."""
    return [
        {"model_id": tier, "model_name": tier, "api_base": base_url, "api_key_name": LLM_KEY_NAME}
        for tier in tiers.chat
    ]


def merge_llm(existing: list[Any], ours: list[dict[str, Any]]) -> list[Any]:
    """Our tiers' entries replaced, every other model kept in order."""
    names = {m["model_id"] for m in ours}
    return [m for m in existing if not (isinstance(m, dict) and m.get("model_id") in names)] + ours


def llm_user_dir() -> Path:
    """Where llm keeps its config (llm.user_dir: LLM_USER_PATH, else click's app dir for io.datasette.llm)."""
    explicit = os.environ.get("LLM_USER_PATH")
    if explicit:
        return Path(explicit)
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "io.datasette.llm"
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "io.datasette.llm"


def continue_config(base_url: str, tiers: CodingTiers) -> dict[str, Any]:
    """Continue's `config.yaml` with one `provider: openai` model per tier.

    Format: https://docs.continue.dev/reference (top-level `name`/`version`/`schema: v1` required; `models[]` with
    `name`, `provider`, `model`, `apiBase`, `apiKey`, `roles` from chat/edit/apply/autocomplete/…, `capabilities`,
    `defaultCompletionOptions.contextLength`); OpenAI-compatible `apiBase`:
    https://docs.continue.dev/customize/model-providers/top-level/openai . `${{ secrets.NAME }}` is read from
    ~/.continue/.env, a workspace .env, or (since continuedev/continue#5961) the IDE's process environment.
    """
    roles: dict[str, list[str]] = {tier: ["chat"] for tier in tiers.coding}
    roles[tiers.small] = ["chat", "edit"]
    roles[tiers.main] = ["chat", "edit", "apply"]  # after small: the main tier's roles win if they are one tier
    if "autocomplete" not in roles.setdefault(tiers.autocomplete, []):
        roles[tiers.autocomplete].append("autocomplete")
    models = []
    for tier, tier_roles in roles.items():
        model: dict[str, Any] = {
            "name": tier + CONTINUE_SUFFIX,
            "provider": "openai",
            "model": tier,
            "apiBase": base_url,
            "apiKey": f"${{{{ secrets.{KEY_ENV} }}}}",
            "roles": tier_roles,
        }
        if tier in (tiers.main, tiers.small) and tier in tiers.coding:
            model["capabilities"] = ["tool_use"]  # agent mode; both serve tool calls through Ollama
        if tier in tiers.context:
            model["defaultCompletionOptions"] = {"contextLength": tiers.context[tier]}
        models.append(model)
    return {"name": "Local LLM stack", "version": "0.0.1", "schema": "v1", "models": models}


def aider_config(base_url: str, tiers: CodingTiers, key: str | None = None) -> dict[str, Any]:
    """aider's `~/.aider.conf.yml` keys; `openai/` makes aider (via LiteLLM) speak OpenAI to `openai-api-base`.

    Keys: https://aider.chat/docs/config/aider_conf.html (sample.aider.conf.yml: `openai-api-base`,
    `openai-api-key`, `model`, `weak-model`); OpenAI-compatible endpoints and the `openai/` prefix:
    https://aider.chat/docs/llms/openai-compat.html . The YAML takes no env references, hence `key` only on write.
    """
    config: dict[str, Any] = {
        "openai-api-base": base_url,
        "model": f"openai/{tiers.main}",
        "weak-model": f"openai/{tiers.small}",
    }
    if key:
        config["openai-api-key"] = key
    return config


def env_lines(base_url: str, tiers: CodingTiers, key_file: Path) -> str:
    """`eval "$(ask setup env)"`: both spellings of the base URL (OPENAI_BASE_URL for the openai SDK ≥1,
    OPENAI_API_BASE for LiteLLM-based tools such as aider: https://aider.chat/docs/llms/openai-compat.html)."""
    return "\n".join(
        [
            f"# The local LLM stack for OpenAI-compatible tools. Tiers: {', '.join(tiers.coding)}",
            f"export {KEY_ENV}={key_expression(key_file)}",
            f"export OPENAI_BASE_URL={shlex.quote(base_url)}",
            f"export OPENAI_API_BASE={shlex.quote(base_url)}",
            f'export OPENAI_API_KEY="${KEY_ENV}"',
            f"export OPENAI_MODEL={shlex.quote(tiers.main)}",
            "",
        ]
    )


# --- merging into what the user already has -----------------------------------------------------------------


def merge_opencode(existing: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """Our provider entry updated key by key (the user's extra options survive); other providers untouched."""
    merged = copy.deepcopy(existing)
    providers = merged.get("provider")
    if providers is None:
        providers = merged["provider"] = {}
    if not isinstance(providers, dict):
        raise ValueError("`provider` is not an object")
    mine = ours["provider"][OPENCODE_PROVIDER]
    entry = providers.get(OPENCODE_PROVIDER)
    entry = dict(entry) if isinstance(entry, dict) else {}
    options = entry.get("options") if isinstance(entry.get("options"), dict) else {}
    entry.update({k: v for k, v in mine.items() if k != "options"})
    entry["options"] = {**options, **mine["options"]}
    providers[OPENCODE_PROVIDER] = entry
    merged.setdefault("$schema", ours["$schema"])
    merged["model"], merged["small_model"] = ours["model"], ours["small_model"]
    return merged


def merge_claude_code(existing: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """Our env keys and apiKeyHelper; a leftover ANTHROPIC_AUTH_TOKEN / ANTHROPIC_API_KEY is dropped because it
    would outrank apiKeyHelper and send another service's key to the proxy (the backup keeps it)."""
    merged = copy.deepcopy(existing)
    env = merged.get("env")
    if env is None:
        env = merged["env"] = {}
    if not isinstance(env, dict):
        raise ValueError("`env` is not an object")
    for stale in ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY"):
        env.pop(stale, None)
    env.update(ours["env"])
    merged["apiKeyHelper"] = ours["apiKeyHelper"]
    return merged


def merge_continue(existing: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """Our model entries (found by their name suffix) replaced, everyone else's kept in order."""
    merged = copy.deepcopy(existing)
    for key in ("name", "version", "schema"):
        merged.setdefault(key, ours[key])
    models = merged.get("models")
    if models is None:
        models = []
    if not isinstance(models, list):
        raise ValueError("`models` is not a list")
    kept = [m for m in models if not (isinstance(m, dict) and str(m.get("name", "")).endswith(CONTINUE_SUFFIX))]
    merged["models"] = kept + ours["models"]
    return merged


def merge_flat_yaml(text: str, updates: dict[str, Any]) -> str:
    """Set top-level `key: value` lines in place, so the comments of a hand-kept ~/.aider.conf.yml survive.

    Falls back to a plain dump (comments lost, backup kept) if the edited text would not parse to the expected
    mapping — e.g. a key written in flow style on one line with another.
    """
    import yaml

    old = yaml.safe_load(text) if text.strip() else {}
    expected = {**(old or {}), **updates}
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    appended: list[str] = []
    for key, value in updates.items():
        line = yaml.safe_dump({key: value}, default_flow_style=False, sort_keys=False, width=10_000)
        pattern = re.compile(rf"^{re.escape(key)}\s*:")
        found = [i for i, existing in enumerate(lines) if pattern.match(existing)]
        if not found:
            appended.append(line)
            continue
        drop: set[int] = set(found[1:])
        for start in found:  # a block value under the key goes with it
            i = start + 1
            while i < len(lines) and lines[i].strip() and lines[i][0] in " \t-":
                drop.add(i)
                i += 1
        lines[found[0]] = line
        lines = [existing for i, existing in enumerate(lines) if i not in drop]
    if appended:
        if lines and lines[-1].strip():
            lines.append("\n")
        lines += ["# The local LLM stack (ask setup aider)\n", *appended]
    result = "".join(lines)
    if (yaml.safe_load(result) or {}) != expected:
        return yaml.safe_dump(expected, default_flow_style=False, sort_keys=False)
    return result


# --- reading the existing file ------------------------------------------------------------------------------


def _strip_jsonc(text: str) -> str:
    """JSON with // and /* */ comments and trailing commas removed, strings left alone (opencode accepts JSONC)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            out.append(c)
            i += 1
    return re.sub(r",(\s*[}\]])", r"\1", "".join(out))


def parse_json_object(text: str, path: Path, jsonc_ok: bool = False) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if jsonc_ok:
            try:
                json.loads(_strip_jsonc(text))
            except json.JSONDecodeError:
                pass
            else:
                raise SetupError(
                    f"{path}: has comments or trailing commas (JSONC), which a merge would drop: "
                    "add the printed block by hand (`ask setup opencode`); nothing written"
                ) from None
        raise SetupError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg}); nothing written") from None
    if not isinstance(data, dict):
        raise SetupError(f"{path}: expected a JSON object at the top level; nothing written")
    return data


def parse_toml(text: str, path: Path | None) -> dict[str, Any]:
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SetupError(f"{path}: not valid TOML ({exc}); nothing written") from None


def parse_yaml_list(text: str, path: Path | None) -> list[Any]:
    """llm's list of models; a malformed file stops here, before any edit."""
    import yaml

    try:
        found = yaml.safe_load(text) if text.strip() else []
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark is not None else ""
        raise SetupError(f"{path}:{where} not valid YAML; nothing written") from None
    if not isinstance(found, list):
        raise SetupError(f"{path}: expected a YAML list of models; nothing written")
    return found


def parse_yaml_mapping(text: str, path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where, problem = stack_config.yaml_error(exc)
        raise SetupError(f"{path}:{where}{':' if where else ''} not valid YAML ({problem}); nothing written") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SetupError(f"{path}: expected a YAML mapping at the top level; nothing written")
    return data


# --- per tool: what to print, where to write, how to merge --------------------------------------------------


@dataclass
class Plan:
    """One tool's setup: the printed config, the file it lives in, and the merge that produces the new text."""

    tool: str
    printed: str
    where: str  # how to use the printed config (not repeated after --write)
    notes: list[str]  # said in both modes
    path: Path | None = None
    render: Callable[[str], str] | None = None  # existing text → new text; SetupError or ValueError
    secret: bool = False  # the written file holds the literal key: 0600


def _dump_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _dump_yaml(data: dict[str, Any], header: str = "") -> str:
    import yaml

    return header + yaml.safe_dump(data, default_flow_style=False, sort_keys=False, allow_unicode=True, width=120)


@dataclass(frozen=True)
class Setting:
    """What every assistant's config is made from."""

    tiers: CodingTiers
    key: str | None  # the master key: only ever written into aider's file
    base: str  # the OpenAI-compatible base URL
    proxy: str  # the proxy's root (Anthropic-format clients append /v1/messages)
    key_file: Path

    def no_key(self) -> list[str]:
        return [] if self.key else [f"no master key yet: `ask serve` creates {tilde(self.key_file)} on its first start"]


def plan_opencode(s: Setting, path: Path | None) -> Plan:
    ours = opencode_config(s.base, s.tiers)
    return Plan(
        "opencode",
        _dump_json(ours),
        f"put this in {tilde(path)} (or a project's opencode.json), or run `ask setup opencode --write`",
        [
            f"opencode reads the key from ${KEY_ENV}: export {KEY_ENV}=$(cat {shell_path(s.key_file)})  "
            "(in your shell profile)",
            *s.no_key(),
            f"then: opencode -m {OPENCODE_PROVIDER}/{s.tiers.main}",
        ],
        path,
        lambda text: _dump_json(merge_opencode(parse_json_object(text, path, jsonc_ok=True), ours)),
    )


def plan_claude_code(s: Setting, path: Path | None) -> Plan:
    ours = claude_code_settings(s.proxy, s.tiers, s.key_file)
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in ours["env"].items())
    notes = [
        f"apiKeyHelper reads ${KEY_ENV} or {tilde(s.key_file)} when claude starts: the file holds no key",
        "other tiers: /model " + " or /model ".join(s.tiers.coding),
    ]
    shadowing = [v for v in ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY") if os.environ.get(v)]
    if shadowing:
        notes.append(
            f"warning: {' and '.join(shadowing)} set in this shell outrank apiKeyHelper: unset them "
            "before running claude against the stack"
        )
    return Plan(
        "claude-code",
        _dump_json(ours),
        f"put these keys in {tilde(path)}, or run `ask setup claude-code --write`; or for one shell: "
        f"export {env} ANTHROPIC_AUTH_TOKEN={key_expression(s.key_file)}",
        notes + s.no_key(),
        path,
        lambda text: _dump_json(merge_claude_code(parse_json_object(text, path), ours)),
    )


def plan_continue(s: Setting, path: Path | None) -> Plan:
    ours = continue_config(s.base, s.tiers)
    notes = [
        f"Continue resolves ${{{{ secrets.{KEY_ENV} }}}} from ~/.continue/.env or the IDE's environment: "
        f"printf '{KEY_ENV}=%s\\n' \"$(cat {shell_path(s.key_file)})\" >> ~/.continue/.env && "
        "chmod 600 ~/.continue/.env",
        *s.no_key(),
    ]
    legacy = Path.home() / ".continue" / "config.json"
    if legacy.exists() and path is not None and not path.exists():
        notes.append(
            f"note: once {tilde(path)} exists Continue reads it instead of {tilde(legacy)}: "
            "move your models over (https://docs.continue.dev/customize/yaml-migration)"
        )
    header = "# Continue config for the local LLM stack (ask setup continue)\n"
    return Plan(
        "continue",
        _dump_yaml(ours, header),
        f"put these models in {tilde(path)}, or run `ask setup continue --write`",
        notes,
        path,
        lambda text: _dump_yaml(merge_continue(parse_yaml_mapping(text, path), ours)),
    )


def plan_aider(s: Setting, path: Path | None) -> Plan:
    tiers = s.tiers
    others = ", ".join(f"openai/{t}" for t in tiers.coding if t not in (tiers.main, tiers.small))
    header = (
        "# ~/.aider.conf.yml for the local LLM stack (ask setup aider)\n"
        "# openai-api-key: aider reads OPENAI_API_KEY; `ask setup aider --write` puts the key here (0600)\n"
        + (f"# other tiers: {others}\n" if others else "")
    )

    def render(text: str) -> str:
        parse_yaml_mapping(text, path)  # a malformed file stops here, before any edit
        if s.key is None:
            raise SetupError(
                f"no master key in {tilde(s.key_file)} or ${KEY_ENV} to write into {path}: start "
                "the stack once with `ask serve`, which creates it"
            )
        return merge_flat_yaml(text, aider_config(s.base, tiers, s.key))

    return Plan(
        "aider",
        _dump_yaml(aider_config(s.base, tiers), header),
        f"put this in {tilde(path)} (or a repo's .aider.conf.yml) and give aider the key: "
        f"export OPENAI_API_KEY={key_expression(s.key_file)}; or run `ask setup aider --write`, which also "
        "writes the key into the file and makes it 0600",
        [
            "aider will warn that it does not know these models' context window: harmless "
            "(show-model-warnings: false silences it)"
        ],
        path,
        render,
        secret=True,
    )


def plan_codex(s: Setting, path: Path | None) -> Plan:
    ours = codex_config(s.base, s.tiers)

    def render(text: str) -> str:
        parse_toml(text, path)  # a malformed file stops here, before any edit
        return merge_codex_toml(text, ours)

    return Plan(
        "codex",
        _dump_codex(ours),
        f"put this in {tilde(path)}, or run `ask setup codex --write`",
        [
            f"codex reads the key from ${KEY_ENV}: export {KEY_ENV}=$(cat {shell_path(s.key_file)})  "
            "(in your shell profile)",
            *s.no_key(),
            f"then: codex exec 'say hi' (other tiers: codex -m {' or -m '.join(t for t in s.tiers.coding)})",
        ],
        path,
        render,
    )


def plan_llm(s: Setting, path: Path | None) -> Plan:
    import yaml

    ours = llm_models(s.base, s.tiers)

    def render(text: str) -> str:
        return yaml.safe_dump(merge_llm(parse_yaml_list(text, path), ours), sort_keys=False)

    return Plan(
        "llm",
        yaml.safe_dump(ours, sort_keys=False),
        f"put this in {tilde(path)}, or run `ask setup llm --write`",
        [
            f'give llm the key once: llm keys set {LLM_KEY_NAME} --value "$(cat {shell_path(s.key_file)})"',
            *s.no_key(),
            f"then: llm -m {s.tiers.small} 'say hi'",
        ],
        path,
        render,
    )


def plan_env(s: Setting, path: Path | None) -> Plan:
    return Plan(
        "env",
        env_lines(s.base, s.tiers, s.key_file),
        'eval "$(ask setup env)" in this shell, or add the lines to your shell profile',
        s.no_key(),
    )


def _codex_home() -> Path:
    """Codex keeps its config in $CODEX_HOME, default ~/.codex."""
    home = os.environ.get("CODEX_HOME")
    return Path(home) if home else Path.home() / ".codex"


def opencode_path() -> Path:
    """opencode uses xdg-basedir: $XDG_CONFIG_HOME/opencode, default ~/.config/opencode."""
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "opencode" / "opencode.json"


@dataclass(frozen=True)
class Assistant:
    """One tool `ask setup` configures: where it reads its user-wide config (None: no file, only lines to
    eval) and the plan that prints or merges ours."""

    name: str
    target: Callable[[], Path | None]
    plan: Callable[[Setting, Path | None], Plan]


# Every assistant, one entry each: `ask setup`'s help, its error for an unknown name and the dispatch read this.
ASSISTANTS: dict[str, Assistant] = {
    a.name: a
    for a in (
        Assistant("opencode", opencode_path, plan_opencode),
        Assistant("claude-code", lambda: Path.home() / ".claude" / "settings.json", plan_claude_code),
        Assistant("continue", lambda: Path.home() / ".continue" / "config.yaml", plan_continue),
        Assistant("aider", lambda: Path.home() / ".aider.conf.yml", plan_aider),
        Assistant("codex", lambda: _codex_home() / "config.toml", plan_codex),
        Assistant("llm", lambda: llm_user_dir() / "extra-openai-models.yaml", plan_llm),
        Assistant("env", lambda: None, plan_env),
    )
}


def plan(tool: str, tiers: CodingTiers, key: str | None) -> Plan:
    assistant = ASSISTANTS[tool]
    setting = Setting(tiers, key, openai_base(), client.proxy_url(), paths.key_file())
    return assistant.plan(setting, assistant.target())


# --- writing ------------------------------------------------------------------------------------------------


def redact(text: str, key: str | None) -> str:
    return text.replace(key, REDACTED) if key else text


def unified_diff(old: str, new: str, path: Path, existed: bool) -> str:
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=str(path) if existed else "/dev/null",
            tofile=str(path),
        )
    )


def backup_path(path: Path, now: datetime | None = None) -> Path:
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    candidate = path.with_name(f"{path.name}.bak-{stamp}")
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.bak-{stamp}-{n}")
        n += 1
    return candidate


def write_file(path: Path, text: str, mode: int) -> None:
    """Atomic replace, so a crash leaves the old file or the new one, never half of each."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _confirm(path: Path, yes: bool, stdin: TextIO, err: TextIO) -> bool:
    if yes:
        return True
    if not stdin.isatty():
        raise SetupError(
            f"not writing {path} without confirmation and there is no terminal to ask on: re-run with --yes", 2
        )
    err.write(f"write {path}? [y/N] ")
    err.flush()
    return stdin.readline().strip().lower() in ("y", "yes")


def apply(
    p: Plan, yes: bool, key: str | None, stdin: TextIO, out: TextIO, err: TextIO, now: datetime | None = None
) -> int:
    """Diff, ask, back up, write. The diff goes to stdout with the key redacted."""
    if p.path is None or p.render is None:
        raise SetupError(
            f"`{p.tool}` has no config file to write: use "
            f'eval "$(ask setup {p.tool})" or add the printed lines to your shell profile',
            2,
        )
    path = p.path.resolve() if p.path.is_symlink() else p.path  # write through a dotfiles symlink, not over it
    existed = path.exists()
    try:
        old = path.read_text(encoding="utf-8") if existed else ""
    except UnicodeDecodeError:
        raise SetupError(f"{path}: not UTF-8 text; nothing written") from None
    try:
        new = p.render(old)
    except ValueError as exc:  # a merge met a file of the wrong shape
        raise SetupError(f"{path}: {exc}; nothing written") from None
    mode = 0o600 if p.secret else (path.stat().st_mode & 0o777 if existed else 0o644)
    if new == old:
        if existed and p.secret and path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        err.write(f"{path} already up to date\n")
        return 0
    out.write(redact(unified_diff(old, new, path, existed), key))
    out.flush()
    if not _confirm(path, yes, stdin, err):
        err.write("ask: nothing written\n")
        return 1
    backup = None
    if existed:
        backup = backup_path(path, now)
        fd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # private until it has the old mode
        with os.fdopen(fd, "wb") as fh:
            fh.write(path.read_bytes())
        os.chmod(backup, path.stat().st_mode & 0o777)
    write_file(path, new, mode)
    err.write(
        f"wrote {path}"
        + (" (0600: it holds the key)" if p.secret else "")
        + (f"; the old file is {backup}" if backup else "")
        + "\n"
    )
    return 0


def run(
    tool: str,
    write: bool,
    yes: bool,
    *,
    config: Path | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """`ask setup TOOL [--write] [--yes]`: print the config (stdout) and notes (stderr), or merge it into the
    tool's file. Returns the exit code: 0 done, 1 not written (declined, malformed file, no key), 2 usage."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    key = paths.master_key(create=False)
    if tool not in ASSISTANTS:
        err.write(f"ask: unknown tool '{tool}': pick one of {', '.join(ASSISTANTS)}\n")
        return 2
    try:
        p = plan(tool, load_tiers(config), key)
        if not write:
            out.write(redact(p.printed, key))  # never contains the key by construction; redact to be sure
            for note in (p.where, *p.notes):
                err.write(f"# {redact(note, key)}\n")
            return 0
        code = apply(p, yes, key, stdin or sys.stdin, out, err)
        if code == 0:
            for note in p.notes:
                err.write(f"# {redact(note, key)}\n")
        return code
    except SetupError as exc:
        err.write(f"ask: {redact(str(exc), key)}\n")
        return exc.code
