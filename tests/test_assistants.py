"""`ask setup TOOL`: the printed configs parse and point at the stack; `--write` diffs, asks, backs up and merges.

Direct calls into `ask_cli.assistants.run` with HOME (and, through conftest, XDG dirs) in tmp_path: no test reads
or writes the real user's files. The key is planted in the key file so "never printed" is checked for real.
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from ask_cli import assistants
from contract import paths
from harness.stack import CONFIG

KEY = "sk-setup-test-" + "7" * 40
PROXY = "http://127.0.0.1:4555"
BASE = PROXY + "/v1"
CODING = ("coder-30b", "fast-9b", "think-9b", "heavy")
FILE_TOOLS = ("opencode", "claude-code", "continue", "aider", "codex", "llm")


class Terminal(io.StringIO):
    """stdin that claims (or not) to be a terminal, with the user's answer in it."""

    def __init__(self, answer: str = "", tty: bool = True) -> None:
        super().__init__(answer)
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("ASK_PROXY_URL", PROXY)
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "XDG_CONFIG_HOME", "CODEX_HOME", "LLM_USER_PATH"):
        monkeypatch.delenv(var, raising=False)  # every tool's config then lives under this home
    return home


@pytest.fixture
def key(home: Path) -> str:
    path = paths.key_file()
    path.parent.mkdir(parents=True)
    path.write_text(KEY + "\n")
    path.chmod(0o600)
    return KEY


def setup(tool: str, write: bool = False, yes: bool = False, stdin: Terminal | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = assistants.run(tool, write, yes, config=CONFIG, stdin=stdin or Terminal(tty=False), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def target(tool: str) -> Path:
    path = assistants.ASSISTANTS[tool].target()
    assert path is not None
    return path


# --- printed -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tool", assistants.ASSISTANTS)
def test_printed_config_never_holds_the_key(key: str, tool: str) -> None:
    code, out, err = setup(tool)
    assert code == 0
    assert key not in out and key not in err
    assert out.strip() and err.startswith("# ")


def test_opencode_printed(key: str) -> None:
    _, out, _ = setup("opencode")
    config = json.loads(out)
    provider = config["provider"]["ask"]
    assert provider["npm"] == "@ai-sdk/openai-compatible"
    assert provider["options"] == {"baseURL": BASE, "apiKey": "{env:LITELLM_MASTER_KEY}"}
    assert tuple(provider["models"]) == CODING
    assert provider["models"]["coder-30b"]["limit"] == {"context": 8192, "output": 4096}
    assert "limit" not in provider["models"]["heavy"]  # llama-swap decides its window: nothing to claim
    assert (config["model"], config["small_model"]) == ("ask/coder-30b", "ask/fast-9b")


def test_claude_code_printed_and_its_key_helper_finds_the_key(key: str, home: Path) -> None:
    _, out, err = setup("claude-code")
    settings = json.loads(out)
    assert settings["env"] == {
        "ANTHROPIC_BASE_URL": PROXY,  # the proxy root: Claude Code appends /v1/messages
        "ANTHROPIC_MODEL": "coder-30b",
        "ANTHROPIC_DEFAULT_OPUS_MODEL": "coder-30b",
        "ANTHROPIC_DEFAULT_SONNET_MODEL": "coder-30b",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": "fast-9b",
        "ANTHROPIC_SMALL_FAST_MODEL": "fast-9b",
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "4096",  # half of coder-30b's 8,192: Claude Code asks 32,000
    }
    helper = settings["apiKeyHelper"]
    assert key not in helper
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    ran = subprocess.run(["/bin/sh", "-c", helper], env=env, capture_output=True, text=True, check=True)
    assert ran.stdout == key
    ran = subprocess.run(
        ["/bin/sh", "-c", helper],
        env={**env, "LITELLM_MASTER_KEY": "sk-from-env"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert ran.stdout == "sk-from-env"  # the variable wins, as in paths.master_key
    assert "/model think-9b" in err and "/model heavy" in err


def test_claude_code_warns_when_a_shell_key_would_outrank_the_helper(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-real")
    _, _, err = setup("claude-code")
    assert "ANTHROPIC_API_KEY set in this shell outrank apiKeyHelper" in err


def test_continue_printed(key: str) -> None:
    _, out, _ = setup("continue")
    config = yaml.safe_load(out)
    assert (config["name"], config["schema"]) == ("Local LLM stack", "v1") and config["version"]
    models = {m["model"]: m for m in config["models"]}
    assert set(models) == {*CODING, "fast-3b"}
    for model in models.values():
        assert model["provider"] == "openai"
        assert model["apiBase"] == BASE
        assert model["apiKey"] == "${{ secrets.LITELLM_MASTER_KEY }}"
    assert models["coder-30b"]["roles"] == ["chat", "edit", "apply"]
    assert models["fast-3b"]["roles"] == ["autocomplete"]
    assert models["coder-30b"]["capabilities"] == ["tool_use"]


def test_aider_printed_without_a_key_line(key: str) -> None:
    _, out, _ = setup("aider")
    config = yaml.safe_load(out)
    assert config == {"openai-api-base": BASE, "model": "openai/coder-30b", "weak-model": "openai/fast-9b"}
    assert "openai/think-9b" in out and "openai/heavy" in out  # the other tiers, as a comment


def test_env_lines_give_the_key_to_openai_clients(key: str, home: Path) -> None:
    _, out, _ = setup("env")
    assert all(t in out for t in CODING)
    script = out + 'printf "%s|%s|%s" "$OPENAI_BASE_URL" "$OPENAI_API_BASE" "$OPENAI_API_KEY"'
    ran = subprocess.run(
        ["/bin/sh", "-c", script],
        env={"HOME": str(home), "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    )
    assert ran.stdout == f"{BASE}|{BASE}|{key}"


def test_without_a_key_yet_the_notes_say_how_to_get_one(home: Path) -> None:
    code, out, err = setup("opencode")
    assert code == 0 and json.loads(out)
    assert "no master key yet: `ask serve` creates" in err


def test_unknown_tool(key: str) -> None:
    code, out, err = setup("cursor")
    assert code == 2 and out == ""
    assert err == "ask: unknown tool 'cursor': pick one of opencode, claude-code, continue, aider, codex, llm, env\n"


def test_env_has_no_file_to_write(key: str) -> None:
    code, _, err = setup("env", write=True, yes=True)
    assert code == 2 and "no config file to write" in err


def test_tiers_follow_the_yaml() -> None:
    config = {"model_list": [{"model_name": "fast-9b", "litellm_params": {"num_ctx": 4096}}, {"model_name": "fast-1b"}]}
    tiers = assistants.coding_tiers(config)
    assert (tiers.main, tiers.small, tiers.autocomplete, tiers.coding) == (
        "fast-9b",
        "fast-9b",
        "fast-1b",
        ("fast-9b",),
    )
    assert tiers.context == {"fast-9b": 4096}


# --- written -------------------------------------------------------------------------------------------------


def parse(tool: str, text: str) -> dict:
    if tool == "codex":
        return tomllib.loads(text)
    return json.loads(text) if tool in ("opencode", "claude-code") else yaml.safe_load(text)


@pytest.mark.parametrize("tool", FILE_TOOLS)
def test_write_yes_creates_the_file_after_showing_the_diff(key: str, tool: str) -> None:
    path = target(tool)
    code, out, err = setup(tool, write=True, yes=True)
    assert code == 0, err
    assert out.startswith(f"--- /dev/null\n+++ {path}\n@@")
    assert key not in out and key not in err
    written = path.read_text()
    assert BASE.removesuffix("/v1") in written and "coder-30b" in written
    assert tool == "codex" or "fast-9b" in written  # codex takes one model; the notes name the others
    assert parse(tool, written)
    assert not list(path.parent.glob(path.name + ".bak-*"))  # nothing to back up


UNRELATED = {
    "opencode": (
        '{\n  "theme": "tokyonight",\n  "provider": {"anthropic": {"options": {"timeout": 1}}},\n'
        '  "model": "anthropic/claude-sonnet-4-5"\n}\n'
    ),
    "claude-code": (
        '{"permissions": {"allow": ["Bash(ls:*)"]}, "env": {"DISABLE_TELEMETRY": "1", '
        '"ANTHROPIC_AUTH_TOKEN": "sk-other-gateway"}}\n'
    ),
    "continue": (
        "name: Mine\nversion: 1.0.0\nschema: v1\nmodels:\n  - name: GPT-4o\n    provider: openai\n"
        "    model: gpt-4o\nrules:\n  - Be terse\n"
    ),
    "aider": "# my aider settings\nauto-commits: false\n\n# which model\nmodel: gpt-4o\ndark-mode: true\n",
    "llm": "- model_id: mine\n  model_name: gpt-4o-mini\n  api_base: https://example.com/v1\n",
    "codex": (
        '# my codex\nmodel = "gpt-5.5"\napproval_policy = "on-request"\n\n[model_providers.other]\nname = "Other"\n'
        'base_url = "https://example.com/v1"\nenv_key = "OTHER_KEY"\nwire_api = "responses"\n\n'
        '[model_providers.local-llm-stack]\nname = "old"\nbase_url = "http://127.0.0.1:9/v1"\n'
    ),
}


@pytest.mark.parametrize("tool", FILE_TOOLS)
def test_write_merges_keeps_unrelated_settings_and_backs_up(key: str, tool: str) -> None:
    path = target(tool)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(UNRELATED[tool])
    code, out, err = setup(tool, write=True, yes=True)
    assert code == 0, err
    assert f"--- {path}\n+++ {path}\n" in out and "\n+" in out
    [backup] = path.parent.glob(path.name + ".bak-*")
    assert backup.read_text() == UNRELATED[tool]
    assert str(backup) in err
    new = parse(tool, path.read_text())
    if tool == "opencode":
        assert new["theme"] == "tokyonight"
        assert new["provider"]["anthropic"] == {"options": {"timeout": 1}}
        assert new["provider"]["ask"]["options"]["baseURL"] == BASE
        assert new["model"] == "ask/coder-30b"
    elif tool == "claude-code":
        assert new["permissions"] == {"allow": ["Bash(ls:*)"]}
        assert new["env"]["DISABLE_TELEMETRY"] == "1"
        assert "ANTHROPIC_AUTH_TOKEN" not in new["env"]  # it would outrank apiKeyHelper with another key
        assert new["env"]["ANTHROPIC_BASE_URL"] == PROXY and "apiKeyHelper" in new
    elif tool == "continue":
        assert (new["name"], new["version"], new["rules"]) == ("Mine", "1.0.0", ["Be terse"])
        assert new["models"][0] == {"name": "GPT-4o", "provider": "openai", "model": "gpt-4o"}
        assert [m["model"] for m in new["models"][1:]] == [*CODING, "fast-3b"]
    elif tool == "llm":
        assert new[0] == {"model_id": "mine", "model_name": "gpt-4o-mini", "api_base": "https://example.com/v1"}
        assert [m["model_id"] for m in new[1:]] == ["fast-9b", "fast-3b", "fast-1b", "think-9b", "coder-30b", "heavy",
                                                    "tiny", "council"]  # fmt: skip
        assert {m["api_base"] for m in new[1:]} == {BASE} and {m["api_key_name"] for m in new[1:]} == {"ask"}
    elif tool == "codex":
        assert path.read_text().startswith("# my codex\n")  # comments and order kept
        assert (new["model"], new["model_provider"]) == ("coder-30b", "local-llm-stack")
        assert new["approval_policy"] == "on-request"
        assert new["model_providers"]["other"]["env_key"] == "OTHER_KEY"
        assert new["model_providers"]["local-llm-stack"] == {
            "name": "Local LLM stack", "base_url": BASE, "env_key": "LITELLM_MASTER_KEY", "wire_api": "responses"
        }  # fmt: skip
        assert new["model_context_window"] == 8192
    else:
        text = path.read_text()
        assert text.startswith("# my aider settings\nauto-commits: false\n\n# which model\nmodel: openai/coder-30b\n")
        assert new["dark-mode"] is True and new["openai-api-key"] == key


@pytest.mark.parametrize("tool", FILE_TOOLS)
def test_second_write_is_a_no_op(key: str, tool: str) -> None:
    assert setup(tool, write=True, yes=True)[0] == 0
    before = target(tool).read_text()
    code, out, err = setup(tool, write=True, yes=True)
    assert code == 0 and out == "" and "already up to date" in err
    assert target(tool).read_text() == before
    assert not list(target(tool).parent.glob("*.bak-*"))


def test_continue_rewrite_replaces_its_own_models_only(key: str) -> None:
    setup("continue", write=True, yes=True)
    config = yaml.safe_load(target("continue").read_text())
    config["models"].insert(0, {"name": "Mine", "provider": "ollama", "model": "x"})
    config["models"][1]["model"] = "stale"
    target("continue").write_text(yaml.safe_dump(config))
    assert setup("continue", write=True, yes=True)[0] == 0
    models = yaml.safe_load(target("continue").read_text())["models"]
    assert [m["model"] for m in models] == ["x", *CODING, "fast-3b"]


MALFORMED = {
    "opencode": ('{\n  "theme": "x",\n  "model" "oops"\n}\n', "line 3"),
    "claude-code": ('{\n  "env": {\n    "A": "1",\n  }\n}\n', "line 4"),
    "continue": ("name: x\nmodels:\n  - name: a\n   bad: [\n", "line "),
    "aider": ("model: a\n  weak-model: b\n", "line 2"),
    "codex": ('model = "a"\n[model_providers.x\n', "line 2"),
    "llm": ("- model_id: a\n  model_name: [b\n", "line "),
}


@pytest.mark.parametrize("tool", FILE_TOOLS)
def test_malformed_file_is_left_alone(key: str, tool: str) -> None:
    path = target(tool)
    path.parent.mkdir(parents=True, exist_ok=True)
    text, line = MALFORMED[tool]
    path.write_text(text)
    code, out, err = setup(tool, write=True, yes=True)
    assert code == 1 and out == ""
    [message] = err.splitlines()
    assert message.startswith(f"ask: {path}:") and line in message and "nothing written" in message
    assert path.read_text() == text
    assert not list(path.parent.glob(path.name + ".bak-*"))


def test_opencode_jsonc_is_not_flattened(key: str) -> None:
    path = target("opencode")
    path.parent.mkdir(parents=True)
    text = '{\n  // my theme\n  "theme": "x",\n}\n'
    path.write_text(text)
    code, _, err = setup("opencode", write=True, yes=True)
    assert code == 1 and "JSONC" in err and path.read_text() == text


def test_wrong_shape_is_refused(key: str) -> None:
    path = target("claude-code")
    path.parent.mkdir(parents=True)
    path.write_text('{"env": ["A=1"]}')
    code, _, err = setup("claude-code", write=True, yes=True)
    assert code == 1 and err == f"ask: {path}: `env` is not an object; nothing written\n"


@pytest.mark.parametrize("tool", FILE_TOOLS)
def test_no_terminal_and_no_yes_refuses(key: str, tool: str) -> None:
    code, out, err = setup(tool, write=True, stdin=Terminal(tty=False))
    assert code == 2
    assert out.startswith("--- /dev/null")  # the diff was shown
    [message] = err.splitlines()
    assert message.startswith("ask: not writing") and "--yes" in message
    assert not target(tool).exists()


def test_terminal_answer_decides(key: str) -> None:
    code, _, err = setup("opencode", write=True, stdin=Terminal("n\n"))
    assert code == 1 and "nothing written" in err and not target("opencode").exists()
    code, _, err = setup("opencode", write=True, stdin=Terminal("y\n"))
    assert code == 0 and "write " in err and target("opencode").exists()


def test_aider_file_holding_the_key_is_0600_and_the_diff_hides_it(key: str) -> None:
    path = target("aider")
    path.write_text("dark-mode: true\n")
    path.chmod(0o644)
    code, out, err = setup("aider", write=True, yes=True)
    assert code == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert yaml.safe_load(path.read_text())["openai-api-key"] == key
    assert key not in out and key not in err
    assert "+openai-api-key: <LITELLM_MASTER_KEY>" in out


def test_aider_write_needs_a_key(home: Path) -> None:
    code, _, err = setup("aider", write=True, yes=True)
    assert code == 1 and "no master key" in err and not target("aider").exists()


def test_files_without_a_key_keep_their_mode(key: str) -> None:
    path = target("claude-code")
    path.parent.mkdir(parents=True)
    path.write_text("{}")
    path.chmod(0o640)
    assert setup("claude-code", write=True, yes=True)[0] == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert key not in path.read_text()


def test_write_goes_through_a_dotfiles_symlink(key: str, home: Path) -> None:
    real = home / "dotfiles" / "aider.yml"
    real.parent.mkdir()
    real.write_text("dark-mode: true\n")
    target("aider").symlink_to(real)
    assert setup("aider", write=True, yes=True)[0] == 0
    assert target("aider").is_symlink()
    assert yaml.safe_load(real.read_text())["model"] == "openai/coder-30b"


def test_merge_flat_yaml_replaces_block_values() -> None:
    text = "alias:\n  - a:b\n  - c:d\nmodel: x # keep? no\nother: 1\n"
    merged = assistants.merge_flat_yaml(text, {"alias": "fast:openai/fast-9b", "model": "openai/coder-30b"})
    assert yaml.safe_load(merged) == {"alias": "fast:openai/fast-9b", "model": "openai/coder-30b", "other": 1}
