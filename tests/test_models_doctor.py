"""`ask models` and `ask doctor` against the real proxy, the fake Ollama, the fake llama-swap and the real tiny model.

They read the stack the way a user's terminal would: from the environment (`ASK_PROXY_URL`, the key, the
backend addresses), so each test sets those and calls the commands' own functions in-process.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from ask_cli import doctor, models, stack_config
from contract import paths
from contract import tiers as tier_model
from harness.fake_ollama import FakeOllama
from harness.fake_openai import FakeOpenAI
from harness.stack import CONFIG, KEY, Proxy, closed_port_url, free_port

TIERS = ["fast-9b", "fast-3b", "fast-1b", "think-9b", "coder-30b", "heavy", "tiny", "embed", "council"]
CODER = "qwen3-coder:30b"


@pytest.fixture
def stack_env(
    monkeypatch: pytest.MonkeyPatch, proxy: Proxy, fake_ollama: FakeOllama, fake_llama_swap: FakeOpenAI, tiny_url: str
) -> Proxy:
    """This shell pointed at the test stack, as a user's would be at theirs."""
    monkeypatch.setenv("ASK_PROXY_URL", proxy.url)
    monkeypatch.setenv("LITELLM_MASTER_KEY", KEY)
    monkeypatch.setenv("OLLAMA_API_BASE", fake_ollama.url)
    monkeypatch.setenv("TINY_API_BASE", tiny_url)
    monkeypatch.setenv("LLAMA_SWAP_API_BASE", fake_llama_swap.url)
    monkeypatch.delenv("REDIS_HOST", raising=False)
    return proxy


def doctor_lines(capsys: pytest.CaptureFixture[str], **options: float) -> tuple[int, list[str]]:
    code = doctor.run(**options)
    return code, capsys.readouterr().out.splitlines()


# -- ask models -------------------------------------------------------------------------------------------


def test_models_shows_each_tier_its_chain_and_keep_alive_from_the_proxy(
    stack_env: Proxy, healthy: FakeOllama, capsys: pytest.CaptureFixture[str]
) -> None:
    data = models.collect()
    by_name = {row["name"]: row for row in data}
    assert [row["name"] for row in data] == TIERS
    assert {row["source"] for row in data} == {"proxy"}
    assert by_name["fast-9b"]["fallbacks"] == ["fast-3b", "fast-1b", "tiny"]
    assert by_name["think-9b"]["fallbacks"] == ["heavy"]
    assert by_name["tiny"]["fallbacks"] == []
    assert {n: by_name[n]["keep_alive"] for n in TIERS} == {
        "fast-9b": "15m",
        "fast-3b": "5m",
        "fast-1b": "2m",
        "think-9b": "15m",
        "coder-30b": "30s",
        "heavy": None,
        "tiny": None,
        "embed": "5m",
        "council": None,
    }
    assert (by_name["coder-30b"]["runtime"], by_name["coder-30b"]["model"]) == ("ollama", CODER)
    assert by_name["fast-9b"]["api_base"] == healthy.url  # the proxy's resolved address, not the yaml's reference
    assert (by_name["heavy"]["runtime"], by_name["heavy"]["now"]) == ("llama.cpp", "server answers")
    assert (by_name["tiny"]["runtime"], by_name["tiny"]["answers"]) == ("embedded", True)
    assert (by_name["council"]["runtime"], by_name["council"]["now"]) == ("council", "asks other tiers")

    assert models.run() == 0
    out = capsys.readouterr()
    assert out.err == ""
    header, *lines = out.out.splitlines()
    assert header.split() == ["TIER", "RUNTIME", "MODEL", "KEEP_ALIVE", "FALLS", "BACK", "TO", "NOW"]
    coder = next(line for line in lines if line.startswith("coder-30b "))
    assert coder.split()[:8] == ["coder-30b", "ollama", CODER, "30s", "fast-9b", "→", "fast-3b", "→"]


def test_a_model_loaded_through_the_proxy_shows_loaded_until_its_keep_alive(
    stack_env: Proxy, healthy: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This shell's own OLLAMA_API_BASE is wrong: the Ollama address must come from the proxy's view.
    monkeypatch.setenv("OLLAMA_API_BASE", closed_port_url())
    reply = stack_env.chat("fast-3b", f"load me {uuid.uuid4()}", cache={"no-cache": True})
    assert reply.headers["x-served-by"] == "fast-3b"
    by_name = {row["name"]: row for row in models.collect()}

    fast_3b = by_name["fast-3b"]
    assert fast_3b["loaded"] is True
    assert 300 - 5 <= fast_3b["expires_in_s"] <= 300  # keep_alive 5m, injected by the proxy's plugin
    assert fast_3b["now"].startswith("loaded, until ") and fast_3b["now"].endswith("(in 5m)")
    assert (by_name["fast-9b"]["loaded"], by_name["fast-9b"]["now"]) == (False, "not loaded")


def test_models_without_the_proxy_reads_the_yaml_and_says_so(
    monkeypatch: pytest.MonkeyPatch, fake_ollama: FakeOllama, capsys: pytest.CaptureFixture[str]
) -> None:
    down = closed_port_url()
    monkeypatch.setenv("ASK_PROXY_URL", down)
    monkeypatch.setenv("LITELLM_MASTER_KEY", KEY)
    monkeypatch.setenv("OLLAMA_API_BASE", fake_ollama.url)
    monkeypatch.setenv("TINY_API_BASE", closed_port_url("/v1"))

    assert models.run(as_json=True) == 0
    out = capsys.readouterr()
    data = {row["name"]: row for row in json.loads(out.out)["tiers"]}
    assert list(data) == TIERS and {row["source"] for row in data.values()} == {"config"}
    assert data["coder-30b"]["fallbacks"] == ["fast-9b", "fast-3b", "tiny"]
    assert data["fast-1b"]["api_base"] == fake_ollama.url and data["fast-1b"]["answers"] is True
    assert data["tiny"]["answers"] is False and data["tiny"]["now"].startswith("server down at ")
    assert f"read from {CONFIG}" in out.err and down in out.err and "ask serve" in out.err


def test_models_with_a_rejected_key_falls_back_to_the_yaml(stack_env: Proxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITELLM_MASTER_KEY", "sk-not-the-proxys")
    view = models.read_tiers()
    assert view.source == "config" and "rejected the master key" in (view.note or "")
    assert [t.name for t in view.tiers] == TIERS


# -- ask doctor -------------------------------------------------------------------------------------------


def test_doctor_all_ok_against_a_healthy_stack(
    stack_env: Proxy,
    healthy: FakeOllama,
    tiny_url: str,
    fake_llama_swap: FakeOpenAI,
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.monotonic()
    code, lines = doctor_lines(capsys, ram_gb=64)
    assert time.monotonic() - started < 5
    assert code == 0, lines
    for expected in (
        f"ok    proxy answers at {stack_env.url}",
        "ok    proxy accepts the master key ($LITELLM_MASTER_KEY)",
        f"ok    ollama 0.12.0 answers at {healthy.url}",
        "ok    ollama: qwen3.5:9b pulled (fast-9b, think-9b)",
        "ok    ollama: llama3.2:3b pulled (fast-3b)",
        "ok    ollama: gemma3:1b pulled (fast-1b)",
        f"ok    ollama: {CODER} pulled (coder-30b)",
        f"ok    tiny: the embedded model answers at {tiny_url}",
        "ok    tiny: llama.cpp runtime (xllamacpp) installed",
        f"ok    heavy: gemma-3-27b-it-qat served at {fake_llama_swap.url}",
        "ok    budget: 52.0 GB for models (64 GB RAM − 12 GB for the OS and open apps)",
    ):
        assert expected in lines, "\n".join(lines)
    assert all(line.startswith("ok    ") for line in lines), "\n".join(lines)
    assert not any("redis" in line for line in lines)


def test_doctor_names_the_pull_for_a_missing_tag(
    stack_env: Proxy, healthy: FakeOllama, capsys: pytest.CaptureFixture[str]
) -> None:
    healthy.set_fault(CODER, "not_found")
    try:
        code, lines = doctor_lines(capsys, ram_gb=64)
    finally:
        healthy.set_fault(CODER, None)
    assert code == 1
    assert [line for line in lines if line.startswith("FAIL")] == [
        f"FAIL  ollama: {CODER} is not pulled (coder-30b) — fix: ollama pull {CODER}"
    ]


def test_doctor_with_the_proxy_down_says_ask_serve_and_still_checks_the_rest(
    stack_env: Proxy, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    down = closed_port_url()
    monkeypatch.setenv("ASK_PROXY_URL", down)
    code, lines = doctor_lines(capsys, ram_gb=24)
    assert code == 1
    assert f"FAIL  proxy: nothing answers at {down} (connection refused) — fix: start the stack: ask serve" in lines
    assert f"ok    ollama: {CODER} pulled (coder-30b)" in lines  # read from the yaml, through this shell's env
    assert any(line.startswith("ok    heavy: ") for line in lines)
    # The injected 24 GB reaches the budget: the 9B and the coder cannot be resident together.
    assert any("fast-9b" in line and "coder-30b" in line and "cannot be resident together" in line for line in lines)


def test_doctor_says_when_the_key_is_not_the_proxys(
    stack_env: Proxy, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LITELLM_MASTER_KEY")
    paths.private_dir(paths.key_file().parent)
    paths.key_file().write_text("sk-another-machines-key\n")
    paths.key_file().chmod(0o600)  # a key file others can read is refused before it is tried
    code, lines = doctor_lines(capsys, ram_gb=64)
    assert code == 1
    [rejected] = [line for line in lines if "key rejected" in line]
    assert rejected.startswith(
        f"FAIL  key rejected: the proxy runs with another LITELLM_MASTER_KEY than {paths.key_file()} — fix: "
    )
    assert f"ok    proxy answers at {stack_env.url}" in lines


def test_budget_on_a_24_gb_machine_names_the_pairs_that_cannot_be_resident_together() -> None:
    tiers = tier_model.from_config(stack_config.load(CONFIG))
    lines = [c.line() for c in doctor.budget_checks(tiers, *doctor.budget_of(tiers, ram_gb=24))]
    assert lines[0] == "ok    budget: 12.0 GB for models (24 GB RAM − 12 GB for the OS and open apps)"
    assert (
        "ok    budget: fast-9b/think-9b (7.2 GB) + coder-30b (19.5 GB) = 26.7 GB > 12.0 GB available: "
        "cannot be resident together — that is why coder-30b's keep_alive is 30s"
    ) in lines
    pairs = [line for line in lines if " + " in line]
    assert len(pairs) == 4 and all("coder-30b" in line for line in pairs)  # fast-9b and think-9b: one blob
    assert any(line.startswith("warn  budget: coder-30b (19.5 GB) alone is more than") for line in lines)
    roomy = [c.line() for c in doctor.budget_checks(tiers, 52.0, "RAM_BUDGET_GB")]
    assert not any("cannot be resident" in line for line in roomy)


def test_budget_warns_when_neither_of_a_crowded_pair_leaves_quickly() -> None:
    tiers = tier_model.build(
        [
            {
                "model_name": name,
                "litellm_params": {"model": f"ollama_chat/{name}:1", "api_base": "http://x"},
                "model_info": {"keep_alive": keep_alive, "resident_gb": 8.0},
            }
            for name, keep_alive in (("a", "15m"), ("b", "10m"))
        ]
    )
    [_, pair] = doctor.budget_checks(tiers, 12.0, "RAM_BUDGET_GB")
    assert pair.status == "warn" and "neither leaves within a minute" in pair.what


# -- Redis -------------------------------------------------------------------------------------------------


@pytest.fixture
def fake_redis() -> Iterator[tuple[int, list[bytes]]]:
    """Answers AUTH (password "s3cret pass") and PING the way Redis does, over RESP; records what it read."""
    server = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as lines:
                authed = False
                while line := lines.readline():
                    seen.append(line)
                    if line.startswith(b"*"):  # an array command: read its bulk strings
                        args = [lines.readline() and lines.readline().strip() for _ in range(int(line[1:]))]
                        authed = args == [b"AUTH", b"s3cret pass"]
                        conn.sendall(b"+OK\r\n" if authed else b"-WRONGPASS invalid username-password pair\r\n")
                    elif line.strip() == b"PING":
                        conn.sendall(b"+PONG\r\n" if authed else b"-NOAUTH Authentication required.\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], seen
    server.close()


def test_redis_ping_with_auth(fake_redis: tuple[int, list[bytes]], monkeypatch: pytest.MonkeyPatch) -> None:
    port, _ = fake_redis
    monkeypatch.setenv("REDIS_HOST", "127.0.0.1")
    monkeypatch.setenv("REDIS_PORT", str(port))
    monkeypatch.setenv("REDIS_PASSWORD", "s3cret pass")
    assert [c.line() for c in doctor.check_redis()] == [f"ok    redis answers PING at 127.0.0.1:{port}"]
    monkeypatch.setenv("REDIS_PASSWORD", "wrong")
    [check] = doctor.check_redis()
    assert check.status == "FAIL" and "WRONGPASS" in check.what
    assert check.fix == "set REDIS_PASSWORD to the server's password"
    monkeypatch.delenv("REDIS_PASSWORD")
    [check] = doctor.check_redis()
    assert check.status == "FAIL" and "NOAUTH" in check.what


def test_redis_down_is_a_fail_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port_url().rsplit(":", 1)[1]
    monkeypatch.setenv("REDIS_HOST", "127.0.0.1")
    monkeypatch.setenv("REDIS_PORT", port)
    [check] = doctor.check_redis()
    assert check.line() == (
        f"FAIL  redis at 127.0.0.1:{port}: connection refused — fix: start it (brew services "
        "start redis, or redis-server), or unset REDIS_HOST to cache in the proxy"
    )


# -- small pieces ------------------------------------------------------------------------------------------


def test_expiry_parsing_and_wording() -> None:
    now = 1_800_000_000.0
    assert (
        models.parse_expiry("2026-11-23T11:02:45.500000001Z")
        == datetime(2026, 11, 23, 11, 2, 45, 500000, tzinfo=UTC).timestamp()
    )
    in_paris = models.parse_expiry("2026-11-23T12:02:45.186192873+01:00")
    assert in_paris == models.parse_expiry("2026-11-23T11:02:45.186192Z")
    assert models.parse_expiry("not a time") is None
    assert models.describe_expiry(now + 14 * 60 + 10, now).endswith("(in 14m)")
    assert models.describe_expiry(now + 10_000 * 86400 * 365, now).startswith("loaded, kept until Ollama stops")
    assert (models.human_duration(45), models.human_duration(7500)) == ("45s", "2h05m")
    assert [doctor.keep_alive_seconds(v) for v in ("30s", "15m", "1h30m", "300", "-1", "soon")] == [
        30,
        900,
        5400,
        300,
        None,
        None,
    ]


def test_ram_is_read_from_this_machine() -> None:
    ram = doctor.ram_bytes()
    assert ram is not None and ram > 1 * doctor.GIB


def test_doctor_reports_the_database_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASK_PROXY_URL", closed_port_url())
    monkeypatch.delenv("DATABASE_URL", raising=False)
    [none] = doctor.check_database(timeout=1)
    assert none.status == "ok" and none.what.startswith("database: none (optional")

    monkeypatch.setenv("DATABASE_URL", "mysql://x@127.0.0.1/db")
    assert doctor.check_database(timeout=1)[0].what == "database: DATABASE_URL is not a postgresql:// URL"

    port = free_port()
    monkeypatch.setenv("DATABASE_URL", f"postgresql://litellm:hunter2-secret@127.0.0.1:{port}/litellm")
    [down] = doctor.check_database(timeout=1)
    assert down.status == "FAIL" and down.what.startswith(f"database: nothing answers at 127.0.0.1:{port}")
    with socket.socket() as listener:  # something accepting connections where PostgreSQL would be
        listener.bind(("127.0.0.1", port))
        listener.listen()
        [up] = doctor.check_database(timeout=1)
    assert up.status == "ok" and up.what == (
        f"database: PostgreSQL answers at 127.0.0.1:{port} (postgresql://litellm@127.0.0.1:{port}/litellm)"
    )
    assert "hunter2-secret" not in "".join(c.line() for c in (down, up))
