"""`ask "prompt"` against the real proxy (fake Ollama behind it): what a terminal or a cron job sees."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.fake_ollama import FakeOllama
from harness.stack import KEY, ROOT, Proxy, closed_port_url

NINE_B, THREE_B = "qwen3.5:9b", "llama3.2:3b"


def ask(
    *args: str, proxy: Proxy | None = None, stdin: bytes | None = None, url: str | None = None
) -> subprocess.CompletedProcess[bytes]:
    import os

    env = dict(os.environ, LITELLM_MASTER_KEY=KEY, ASK_PROXY_URL=url or (proxy.url if proxy else ""))
    return subprocess.run(
        [sys.executable, "-m", "ask_cli", *args],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


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


@pytest.mark.parametrize(
    ("flag", "tier", "tag"),
    [
        ("--3b", "fast-3b", THREE_B),
        ("--1b", "fast-1b", "gemma3:1b"),
        ("--think", "think-9b", NINE_B),
        ("--coder", "coder-30b", "qwen3-coder:30b"),
    ],
)
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
    from ask_cli import entry, query

    assert ask("--version", url="x").stdout.decode().startswith("ask ")
    help_text = ask("--help", url="x").stdout.decode()
    assert "Example: ask --think" in help_text and "ask serve" in help_text
    assert all(row.flag in help_text for row in query.TIER_FLAGS)
    assert all(f"ask {name} (" in " ".join(help_text.split()) for name in entry.COMMANDS)


def telemetry_lines(home: Path) -> list[dict]:
    path = home / "data" / "ask" / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_cached_call_makes_no_request_and_is_logged(proxy: Proxy, healthy: FakeOllama, tmp_path: Path) -> None:
    first = ask("--3b", "hourly digest format", proxy=proxy)
    second = ask("--3b", "hourly digest format", proxy=proxy)
    assert first.returncode == second.returncode == 0
    assert second.stdout == first.stdout and second.stderr == b""
    assert len(healthy.chat_requests()) == 1
    lines = telemetry_lines(tmp_path)
    assert [(e["model"], e["served_by"], e["cache_hit"], e["exit_code"]) for e in lines] == [
        ("fast-3b", "fast-3b", False, 0),
        ("fast-3b", "fast-3b", True, 0),
    ]
    assert "hourly digest" not in (tmp_path / "data" / "ask" / "log.jsonl").read_text()


def test_the_cache_hit_path_imports_nothing_heavy(proxy: Proxy, healthy: FakeOllama) -> None:
    ask("classify: markets rally", proxy=proxy)
    import os

    env = dict(os.environ, LITELLM_MASTER_KEY=KEY, ASK_PROXY_URL=proxy.url)
    hit = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ask_cli", "classify: markets rally"],
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        input=b"",
    )
    assert hit.stdout.decode().startswith("Hello from")
    imported = {line.split("|")[-1].strip() for line in hit.stderr.decode().splitlines() if "|" in line}
    assert not {"typer", "urllib.request", "httpx", "litellm", "yaml", "click"} & imported
    assert len(healthy.chat_requests()) == 1


def test_a_miss_is_answered_without_the_cli_framework(proxy: Proxy, healthy: FakeOllama) -> None:
    import os

    env = dict(os.environ, LITELLM_MASTER_KEY=KEY, ASK_PROXY_URL=proxy.url)
    miss = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ask_cli", "--3b", "a question never asked before"],
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        input=b"",
    )
    assert miss.stdout.decode().startswith(f"Hello from {THREE_B}")
    imported = {line.split("|")[-1].strip() for line in miss.stderr.decode().splitlines() if "|" in line}
    assert not {"typer", "click", "pydantic", "rich", "http.client", "urllib.request", "dataclasses"} & imported


def test_the_question_is_read_as_typer_reads_it(proxy: Proxy, healthy: FakeOllama) -> None:
    assert ask("--model=fast-3b", "equals form", proxy=proxy).stdout.decode().startswith(f"Hello from {THREE_B}")
    assert ask("twice", "--3b", "--3b", proxy=proxy).stdout.decode().startswith(f"Hello from {THREE_B}")
    literal = ask("--no-cache", "--", "--json", proxy=proxy)
    assert literal.stdout.decode().startswith("Hello from")  # after `--`, a flag's name is the question
    assert healthy.chat_requests()[-1].body["messages"][-1]["content"] == "--json"
    bad = ask("--temperature", "warm", "x", proxy=proxy)
    assert bad.returncode == 2 and "Invalid value" in bad.stderr.decode() and bad.stdout == b""
    assert ask("-mfast-3b", "short form", proxy=proxy).stdout.decode().startswith(f"Hello from {THREE_B}")


def test_demoted_answers_are_not_cached(proxy: Proxy, healthy: FakeOllama) -> None:
    healthy.set_fault(NINE_B, "http_500")
    assert ask("same cron question", proxy=proxy).stderr.decode() == "[degraded: fast-9b → fast-3b]\n"
    healthy.set_fault(NINE_B, None)
    again = ask("same cron question", proxy=proxy)
    assert again.stderr == b"" and again.stdout.decode().startswith(f"Hello from {NINE_B}")


def test_no_cache_neither_reads_nor_writes(proxy: Proxy, healthy: FakeOllama) -> None:
    ask("fresh every time", proxy=proxy)
    ask("--no-cache", "fresh every time", proxy=proxy)
    assert len(healthy.chat_requests()) == 2


def test_cache_key_includes_what_changes_the_answer(proxy: Proxy, healthy: FakeOllama) -> None:
    for args in (["q"], ["-s", "terse", "q"], ["--temperature", "0.2", "q"], ["--max-tokens", "9", "q"], ["--1b", "q"]):
        ask(*args, proxy=proxy)
    assert len(healthy.chat_requests()) == 5


def test_ctrl_c_exits_130_and_still_logs(proxy: Proxy, healthy: FakeOllama, tmp_path: Path) -> None:
    import os
    import signal
    import time

    healthy.set_fault(NINE_B, "slow", delay_s=5)
    env = dict(os.environ, LITELLM_MASTER_KEY=KEY, ASK_PROXY_URL=proxy.url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ask_cli", "slow one"],
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while not healthy.chat_requests():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 130
    assert "Traceback" not in proc.stderr.read().decode()
    [line] = telemetry_lines(tmp_path)
    assert line["exit_code"] == 130 and line["cache_hit"] is False


def test_sixteen_parallel_asks_lose_no_telemetry(proxy: Proxy, healthy: FakeOllama, tmp_path: Path) -> None:
    import os

    env = dict(os.environ, LITELLM_MASTER_KEY=KEY, ASK_PROXY_URL=proxy.url)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "ask_cli", "--no-cache", f"parallel {i}"],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(16)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * 16
    lines = telemetry_lines(tmp_path)
    assert len(lines) == 16 and all(e["exit_code"] == 0 for e in lines)
    assert len({e["prompt_hash"] for e in lines}) == 16


def test_stats_answers_the_seed_questions(proxy: Proxy, healthy: FakeOllama) -> None:
    ask("--3b", "digest", proxy=proxy)
    ask("--3b", "digest", proxy=proxy)  # a cache hit
    healthy.set_fault(NINE_B, "http_500")
    ask("headline", proxy=proxy)  # demoted
    out = json.loads(ask("stats", "--json", proxy=proxy).stdout)
    three, nine = out["models"]["fast-3b"], out["models"]["fast-9b"]
    assert (three["calls"], three["cache_hit_rate"], nine["demotion_rate"]) == (2, 0.5, 1.0)
    assert nine["served_by"] == {"fast-3b": 1} and out["total"]["calls"] == 3
    table = ask("stats", "--since", "1h", proxy=proxy).stdout.decode()
    assert "fast-3b" in table and "fast-9b" in table
    bad = ask("stats", "--since", "soon", proxy=proxy)
    assert bad.returncode == 2 and "--since takes a number and a unit" in bad.stderr.decode()
    # `ask stats` runs before Typer loads; the full CLI gives the same figures and the same errors
    full = [sys.executable, "-c", "from ask_cli.cli import main; main()"]
    for args in (["--json"], ["--since", "1h"], ["--since=soon"]):
        fast = ask("stats", *args, proxy=proxy)
        typer = subprocess.run([*full, "stats", *args], capture_output=True, cwd=ROOT, timeout=60)
        assert (fast.returncode, fast.stdout, fast.stderr) == (typer.returncode, typer.stdout, typer.stderr), args
    unknown = ask("stats", "--sincе", "1h", proxy=proxy)  # a Cyrillic е: not an option, Typer says so
    assert unknown.returncode == 2 and "No such option" in unknown.stderr.decode()


def test_entry_knows_every_command() -> None:
    import typer

    from ask_cli import cli, entry

    group = typer.main.get_command(cli.app)
    assert set(group.commands) - {cli.QUESTION} == set(entry.COMMANDS)  # type: ignore[attr-defined]
    assert "service" in entry.COMMANDS


@pytest.fixture
def headerless() -> Iterator[tuple[str, list[dict]]]:
    """A stand-in proxy that answers but never says which tier served (no X-Served-By); records the bodies."""
    bodies: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            data = b'data: {"choices":[{"delta":{"content":"an answer"}}]}\n\ndata: [DONE]\n\n'
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", bodies
    finally:
        server.shutdown()
        server.server_close()


def test_an_unattributed_answer_is_said_never_guessed_nor_cached(
    headerless: tuple[str, list[dict]], tmp_path: Path
) -> None:
    url, bodies = headerless
    first = ask("who answered?", url=url)
    assert first.returncode == 0 and first.stdout.decode() == "an answer\n"
    assert first.stderr.decode() == "ask: warning: the proxy did not say which tier served (no X-Served-By)\n"
    again = json.loads(ask("--json", "who answered?", url=url).stdout)
    assert (again["served_by"], again["demoted"], again["cache_hit"]) == (None, False, False)
    assert len(bodies) == 2  # the first answer was not cached
    assert [e["served_by"] for e in telemetry_lines(tmp_path)] == [None, None]


def test_a_refused_key_names_where_ask_took_it_from(proxy: Proxy, tmp_path: Path) -> None:
    """A key that is not the proxy's (another LITELLM_MASTER_KEY, a key file from another machine): one line
    naming the key's source and the fix (was 'ask: No connected db.')."""
    import os

    base = {k: v for k, v in os.environ.items() if k != "LITELLM_MASTER_KEY"}
    env = dict(base, ASK_PROXY_URL=proxy.url, XDG_CONFIG_HOME=str(tmp_path))
    (tmp_path / "ask").mkdir()
    key_file = tmp_path / "ask" / "master.key"
    key_file.write_text("sk-" + "1" * 32 + "\n")
    key_file.chmod(0o600)
    for extra, source in (({}, str(key_file)), ({"LITELLM_MASTER_KEY": "sk-wrong"}, "$LITELLM_MASTER_KEY")):
        result = subprocess.run(
            [sys.executable, "-m", "ask_cli", "--no-cache", "hi"],
            capture_output=True, text=True, env={**env, **extra}, cwd=ROOT, timeout=60,
        )  # fmt: skip
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f"ask: the proxy at {proxy.url} refused the key from {source}: it runs with another master key; set "
            "LITELLM_MASTER_KEY to the proxy's key, or restart the stack with `ask serve`"
        ]
