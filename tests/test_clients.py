"""The real clients people point at this stack, each through the config `ask setup` wrote, healthy and demoted.

The OpenAI and Anthropic SDKs, `llm`, aider, OpenCode, Claude Code and Codex (harness/clients.py installs them
under .clients/; .ci/run does, and requires them) against the real proxy, the emulated Ollama, the llama-swap
stand-in and the real embedded model. Each test checks what the client shows a user about the tier that served
— the body's `model` where the client shows or logs it — and, as none of them shows response headers, that the
desktop notification (a recording `notify-send`, plugins/desktop.py) said the demotion.

Claude Code, OpenCode and Codex send ~8-13k tokens of system prompt and tool schemas on their first turn: more
than any 8,192-token local tier, so their first turn is always escalated to `heavy` — a demotion, said as one.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import clients
from harness.fake_ollama import FakeOllama
from harness.fake_openai import FakeOpenAI
from harness.stack import KEY, ROOT, Proxy, running_proxy

NINE_B, CODER = "qwen3.5:9b", "qwen3-coder:30b"
HEAVY_SAYS = "Hello from gemma-3-27b-it-qat."
ESCALATED = "--app-name=ask Local LLM stack [degraded: coder-30b → heavy] coder-30b: prompt over num_ctx"
TIMEOUT_S = 180


@dataclass
class Stack:
    proxy: Proxy
    ollama: FakeOllama
    swap: FakeOpenAI
    notices: Path

    def said(self) -> list[str]:
        return self.notices.read_text().splitlines() if self.notices.exists() else []

    def notice_after(self, before: int, deadline_s: float = 10) -> list[str]:
        """The desktop notices shown since `before` of them were (they are shown in the background)."""
        deadline = time.monotonic() + deadline_s
        while len(self.said()) <= before and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.said()[before:]

    def healthy(self, *tiers: str) -> None:
        """No faults, and `tiers` out of LiteLLM's 5 s cooldown after an earlier test's fault."""
        self.ollama.reset()
        self.swap.reset()
        deadline = time.monotonic() + 30
        for tier in tiers:
            while self.proxy.chat(tier, "warm?", max_tokens=4).headers.get("x-served-by") != tier:
                assert time.monotonic() < deadline, f"{tier} stayed in cooldown"
                time.sleep(0.5)
        self.ollama.reset()
        self.swap.reset()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllama, fake_llama_swap: FakeOpenAI, tiny_url: str
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("clients")
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    notices = tmp / "notices.txt"
    notifier = bin_dir / "notify-send"
    notifier.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{notices}"\n')
    notifier.chmod(notifier.stat().st_mode | stat.S_IXUSR)
    with running_proxy(
        tmp,
        OLLAMA_API_BASE=fake_ollama.url,
        TINY_API_BASE=tiny_url,
        LLAMA_SWAP_API_BASE=fake_llama_swap.url,
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        DISPLAY=":99",
        DEMOTION_NOTIFY="",  # as in a desktop session: on
        DEMOTION_NOTIFY_MIN_INTERVAL_S="0",  # every demotion, so each test sees its own
    ) as proxy:
        yield Stack(proxy, fake_ollama, fake_llama_swap, notices)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


def user_env(home: Path) -> dict[str, str]:
    """A user's shell: their own home, the stack's key exported, no other provider's variables."""
    drop = ("OPENAI", "ANTHROPIC", "LITELLM", "ASK_", "XDG_", "CODEX", "LLM_", "CLAUDE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return {**env, "HOME": str(home), "LITELLM_MASTER_KEY": KEY, "NO_COLOR": "1"}


def ask_setup(tool: str, home: Path, proxy: Proxy) -> str:
    """`ask setup TOOL --write --yes` into `home`, as the user would run it; its printed config (or, for `env`,
    its lines)."""
    env = {**user_env(home), "ASK_PROXY_URL": proxy.url}
    cmd = [sys.executable, "-m", "ask_cli", "setup", tool]
    if tool != "env":  # lines to eval: no file
        written = subprocess.run([*cmd, "--write", "--yes"], env=env, cwd=ROOT, capture_output=True, text=True)
        assert written.returncode == 0, written.stderr
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=True).stdout


def fresh(prompt: str) -> str:
    """A prompt no earlier test sent: an answer from the proxy's cache would say the tier that served then."""
    return f"{prompt} ({uuid.uuid4().hex[:8]})"


def client(name: str) -> Path:
    found = clients.binary(name)
    if found is None:
        if clients.required():
            pytest.fail(f"{name} is not installed: .venv/bin/python -m harness.clients install")
        pytest.skip(f"{name} is not installed (.venv/bin/python -m harness.clients install)")
    return found


def run(cmd: list[str | Path], home: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], env=user_env(home), cwd=cwd or home, capture_output=True, text=True, timeout=TIMEOUT_S
    )


# -- the SDKs, through `ask setup env` and `ask setup claude-code` ---------------------------------------------


def exported(lines: str) -> dict[str, str]:
    """What `eval "$(ask setup env)"` would set, run by a real shell."""
    script = f"{lines}\nenv -0"
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, check=True, env=user_env(Path("/")))
    return dict(item.split("=", 1) for item in out.stdout.split("\0") if "=" in item)


@pytest.mark.parametrize("demoted", [False, True], ids=["healthy", "demoted"])
def test_the_openai_sdk_sees_the_served_tier_as_the_model(stack: Stack, home: Path, demoted: bool) -> None:
    openai = pytest.importorskip("openai")
    env = exported(ask_setup("env", home, stack.proxy))
    stack.healthy("fast-9b", "fast-3b")
    if demoted:
        stack.ollama.set_fault(NINE_B, "http_500")
    sdk = openai.OpenAI(base_url=env["OPENAI_BASE_URL"], api_key=env["OPENAI_API_KEY"])
    raw = sdk.chat.completions.with_raw_response.create(
        model="fast-9b", messages=[{"role": "user", "content": fresh("hi")}], max_tokens=8
    )
    answer = raw.parse()
    served = "fast-3b" if demoted else "fast-9b"
    assert answer.model == served  # what the SDK's caller sees; headers only through with_raw_response
    assert raw.headers["x-served-by"] == served
    assert raw.headers.get("x-demoted-from") == ("fast-9b" if demoted else None)


@pytest.mark.parametrize("demoted", [False, True], ids=["healthy", "demoted"])
def test_the_anthropic_sdk_sees_the_served_tier_as_the_model(stack: Stack, home: Path, demoted: bool) -> None:
    anthropic = pytest.importorskip("anthropic")
    settings = json.loads(ask_setup("claude-code", home, stack.proxy))
    stack.healthy("fast-9b", "fast-3b")
    if demoted:
        stack.ollama.set_fault(NINE_B, "http_500")
    sdk = anthropic.Anthropic(base_url=settings["env"]["ANTHROPIC_BASE_URL"], api_key=KEY)
    for stream in (False, True):
        if stream:
            with sdk.messages.stream(
                model="fast-9b", max_tokens=16, messages=[{"role": "user", "content": fresh("hi")}]
            ) as s:
                message = s.get_final_message()
        else:
            message = sdk.messages.create(
                model="fast-9b", max_tokens=16, messages=[{"role": "user", "content": fresh("hi")}]
            )
        assert message.model == ("fast-3b" if demoted else "fast-9b"), stream
        assert "Hello from" in message.content[-1].text


# -- llm and aider -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("demoted", [False, True], ids=["healthy", "demoted"])
def test_llm_logs_the_served_tier(stack: Stack, home: Path, demoted: bool) -> None:
    llm = client("llm")
    ask_setup("llm", home, stack.proxy)
    assert run([llm, "keys", "set", "ask", "--value", KEY], home).returncode == 0  # as `ask setup llm` says
    stack.healthy("fast-9b", "fast-3b")
    if demoted:
        stack.ollama.set_fault(NINE_B, "http_500")
    before = len(stack.said())
    answered = run([llm, "-m", "fast-9b", fresh("say hi")], home)
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout.startswith(f"Hello from {'llama3.2:3b' if demoted else NINE_B}")
    [logged] = json.loads(run([llm, "logs", "--json", "-n", "1"], home).stdout)
    assert logged["model"] == "fast-9b"  # what llm shows in `llm logs`: the model it asked for
    assert logged["response_json"]["model"] == ("fast-3b" if demoted else "fast-9b")  # what the body said
    if demoted:
        assert any("[degraded: fast-9b → fast-3b]" in n for n in stack.notice_after(before))


@pytest.mark.parametrize("demoted", [False, True], ids=["healthy", "demoted"])
def test_aider_answers_and_a_demotion_is_a_desktop_notice(stack: Stack, home: Path, demoted: bool) -> None:
    aider = client("aider")
    ask_setup("aider", home, stack.proxy)
    stack.healthy("coder-30b", "fast-9b")
    if demoted:
        stack.ollama.set_fault(CODER, "http_500")
    before = len(stack.said())
    repo = home / "project"
    repo.mkdir()
    quiet = ["--no-git", "--yes-always", "--no-check-update", "--no-show-release-notes", "--no-analytics"]
    answered = run([aider, "--message", fresh("say hi"), *quiet], home, cwd=repo)
    assert answered.returncode == 0, answered.stdout[-2000:] + answered.stderr[-2000:]
    assert f"Hello from {NINE_B if demoted else CODER}" in answered.stdout
    assert "Main model: openai/coder-30b" in answered.stdout  # aider names the model it asked for, either way
    if demoted:
        assert any("[degraded: coder-30b → fast-9b]" in n for n in stack.notice_after(before))


# -- the coding agents: their first turn does not fit 8,192 tokens ----------------------------------------------


def test_claude_code_answers_from_heavy_and_the_escalation_is_a_desktop_notice(stack: Stack, home: Path) -> None:
    claude = client("claude")
    ask_setup("claude-code", home, stack.proxy)
    stack.healthy("coder-30b")
    before = len(stack.said())
    answered = run([claude, "-p", fresh("say hi"), "--output-format", "json"], home)
    assert answered.returncode == 0, answered.stdout[-2000:] + answered.stderr[-2000:]
    result = json.loads(answered.stdout)
    assert result["result"].strip() == HEAVY_SAYS and not result["is_error"]
    assert list(result["modelUsage"]) == ["coder-30b"]  # Claude Code shows the model it asked for, never heavy
    assert any(n.startswith(ESCALATED) for n in stack.notice_after(before))
    assert stack.ollama.chat_requests(CODER) == []  # never sent where it would have been cut


def test_opencode_answers_from_heavy(stack: Stack, home: Path) -> None:
    opencode = client("opencode")
    ask_setup("opencode", home, stack.proxy)
    stack.healthy("coder-30b")
    before = len(stack.said())
    answered = run([opencode, "run", "-m", "ask/coder-30b", fresh("say hi")], home)
    assert answered.returncode == 0, answered.stdout[-2000:] + answered.stderr[-2000:]
    assert HEAVY_SAYS in answered.stdout
    assert "> build · coder-30b" in answered.stderr  # the line that names the model: the one it asked for
    assert any(n.startswith(ESCALATED) for n in stack.notice_after(before))  # escalated, not failed over


def test_codex_answers_from_heavy_over_the_responses_api(stack: Stack, home: Path) -> None:
    codex = client("codex")
    ask_setup("codex", home, stack.proxy)
    stack.healthy("coder-30b")
    before = len(stack.said())
    answered = run([codex, "exec", "--skip-git-repo-check", fresh("say hi")], home)
    assert answered.returncode == 0, answered.stdout[-2000:] + answered.stderr[-2000:]
    assert HEAVY_SAYS in answered.stdout
    assert any(n.startswith(ESCALATED) for n in stack.notice_after(before))  # escalated, not failed over
