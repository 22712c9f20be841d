"""`ask "prompt"` against the real proxy (fake Ollama behind it): what a terminal or a cron job sees."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fake_ollama import FakeOllama
from tests.stack import KEY, ROOT, Proxy, closed_port_url

NINE_B, THREE_B = "qwen3.5:9b", "llama3.2:3b"


def ask(*args: str, proxy: Proxy | None = None, stdin: bytes | None = None,
        url: str | None = None) -> subprocess.CompletedProcess[bytes]:
    import os

    env = dict(os.environ, LITELLM_MASTER_KEY=KEY, ASK_PROXY_URL=url or (proxy.url if proxy else ""))
    return subprocess.run([sys.executable, "-m", "ask_cli", *args], input=stdin if stdin is not None else b"",
                          capture_output=True, env=env, cwd=ROOT, timeout=120)


def test_answer_streams_to_stdout_and_nothing_else(proxy: Proxy, healthy: FakeOllama) -> None:
    result = ask("hello there", proxy=proxy)
    assert result.returncode == 0
    assert result.stdout.decode().startswith(f"Hello from {NINE_B}")
    assert result.stderr == b""


def test_demotion_is_said_on_stderr_exactly(proxy: Proxy, healthy: FakeOllama) -> None:
    healthy.set_fault(NINE_B, "http_500")
    result = ask("demote me", proxy=proxy)
    assert result.returncode == 0
    assert result.stderr.decode() == "[degraded: fast-9b → fast-3b]\n"
    assert result.stdout.decode().startswith(f"Hello from {THREE_B}")


def test_no_fallback_fails_honestly(proxy: Proxy, healthy: FakeOllama) -> None:
    healthy.set_fault(NINE_B, "http_500")
    result = ask("--no-fallback", "cron job needing the 9B", proxy=proxy)
    assert result.returncode == 1
    [line] = result.stderr.decode().strip().splitlines()
    assert line.startswith("ask: ") and "llama runner process has terminated" in line
    assert [r.model for r in healthy.chat_requests()] == [NINE_B]
    assert result.stdout == b""


@pytest.mark.parametrize(("flag", "tier", "tag"), [
    ("--3b", "fast-3b", THREE_B), ("--1b", "fast-1b", "gemma3:1b"), ("--think", "think-9b", NINE_B),
    ("--coder", "coder-30b", "qwen3-coder:30b"),
])
def test_tier_flags_reach_their_tier(proxy: Proxy, healthy: FakeOllama, flag: str, tier: str, tag: str) -> None:
    result = ask(flag, "--json", f"which tier {flag}", proxy=proxy)
    out = json.loads(result.stdout)
    assert out["model"] == tier and out["served_by"] == tier and out["demoted"] is False
    assert [r.model for r in healthy.chat_requests()] == [tag]


def test_json_has_the_fields_cron_jobs_read(proxy: Proxy, healthy: FakeOllama) -> None:
    result = ask("--json", "-s", "Be terse.", "--temperature", "0", "--max-tokens", "50", "json please", proxy=proxy)
    out = json.loads(result.stdout)
    assert set(out) >= {"answer", "model", "served_by", "demoted", "cache_hit", "latency_s", "usage"}
    assert out["answer"].startswith(f"Hello from {NINE_B}") and out["usage"]["completion_tokens"] > 0
    [sent] = healthy.chat_requests()
    assert (sent.body["messages"][0]["role"], sent.body["messages"][0]["content"]) == ("system", "Be terse.")
    assert sent.body["options"]["temperature"] == 0 and sent.body["options"]["num_predict"] == 50


def test_stdin_and_argument_are_combined(proxy: Proxy, healthy: FakeOllama) -> None:
    result = ask("write a one-line commit message", proxy=proxy, stdin=b"diff --git a/x b/x\n+new line\n")
    assert result.returncode == 0
    [sent] = healthy.chat_requests()
    user = sent.body["messages"][-1]["content"]
    assert user.startswith("write a one-line commit message") and "+new line" in user


def test_invalid_utf8_on_stdin_is_replaced_with_a_warning(proxy: Proxy, healthy: FakeOllama) -> None:
    result = ask("summarise", proxy=proxy, stdin=b"caf\xe9 au lait")
    assert result.returncode == 0
    assert "stdin was not valid UTF-8" in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()
    assert "caf\ufffd au lait" in healthy.chat_requests()[0].body["messages"][-1]["content"]


def test_usage_errors_exit_2() -> None:
    assert ask("--3b", "--1b", "two tiers", url="http://127.0.0.1:1").returncode == 2
    assert ask(url="http://127.0.0.1:1").returncode == 2  # no prompt, empty stdin
    assert ask("--wat", "x", url="http://127.0.0.1:1").returncode == 2


def test_proxy_not_running_names_the_command_that_starts_it() -> None:
    result = ask("anyone there?", url=closed_port_url())
    assert result.returncode == 1
    [line] = result.stderr.decode().strip().splitlines()
    assert line.startswith("ask: the proxy is not running at") and line.endswith("start it with `ask serve`")


def test_unknown_tier_lists_the_tiers(proxy: Proxy) -> None:
    result = ask("-m", "gpt-17", "hi", proxy=proxy)
    assert result.returncode == 1
    assert "unknown model 'gpt-17': this stack serves" in result.stderr.decode()


def test_whole_chain_failure_says_which_tiers_were_tried(proxy: Proxy, healthy: FakeOllama, fake_llama_swap) -> None:
    healthy.set_fault(NINE_B, "http_500")
    fake_llama_swap.fail_with = 503
    result = ask("--think", "deep question", proxy=proxy)
    assert result.returncode == 1
    message = result.stderr.decode()
    assert "every tier in the chain for 'think-9b' failed" in message and "heavy: HTTP 503" in message


def test_a_question_named_like_a_command(proxy: Proxy, healthy: FakeOllama) -> None:
    assert ask("--", "serve", proxy=proxy).stdout.decode().startswith("Hello from")


def test_version_and_help_show_examples(tmp_path: Path) -> None:
    assert ask("--version", url="x").stdout.decode().startswith("ask ")
    help_text = ask("--help", url="x").stdout.decode()
    assert "Example: ask --think" in help_text and "ask serve" in help_text
