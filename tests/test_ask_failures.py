"""`ask` when things go wrong around it: a hung proxy, SIGTERM, an HTTP error, a bad log line, a torn log, a
key file others can read, a bad option value, a corrupt cache. Each against a real process: a stand-in proxy
(a small HTTP server in its own process, so it can be stopped) and `ask` itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ask_cli import telemetry
from harness.stack import KEY, ROOT, closed_port_url

# A stand-in for the proxy: `pieces` answer pieces `delay` seconds apart (X-Served-By fast-9b), or, for a
# `status` of 400 and above, that error with X-Served-By fast-3b. It prints its port, then serves.
STAND_IN = r"""
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

delay, pieces, status = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        if status >= 400:
            body = json.dumps({"error": {"message": "the backend failed"}}).encode()
            self.send_response(status)
            self.send_header("X-Served-By", "fast-3b")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("X-Served-By", "fast-9b")
        self.end_headers()
        for n in range(pieces):
            event = {"choices": [{"delta": {"content": f"piece {n} "}}]}
            self.wfile.write(("data: " + json.dumps(event) + "\n\n").encode())
            self.wfile.flush()
            time.sleep(delay)
        self.wfile.write(b"data: [DONE]\n\n")


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_port, flush=True)
server.serve_forever()
"""


@contextmanager
def stand_in(delay: float = 0.0, pieces: int = 2, status: int = 200) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", STAND_IN, str(delay), str(pieces), str(status)], stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}", proc
    finally:
        os.kill(proc.pid, signal.SIGCONT)  # a stopped process would not die of SIGTERM until continued
        proc.kill()
        proc.wait(timeout=10)


def ask_env(url: str, **extra: str) -> dict[str, str]:
    return dict(os.environ, LITELLM_MASTER_KEY=KEY, ASK_PROXY_URL=url, **extra)


def ask(*args: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ask_cli", *args],
        input="",
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )


def log_lines() -> list[dict[str, object]]:
    path = telemetry.log_path()
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# 1. A first-byte (and next-byte) timeout.


def test_a_stopped_proxy_is_said_after_ask_timeout_s_not_waited_for() -> None:
    with stand_in() as (url, proc):
        os.kill(proc.pid, signal.SIGSTOP)  # its socket still accepts (the kernel's backlog); nothing answers
        started = time.monotonic()
        result = ask("hello", env=ask_env(url, ASK_TIMEOUT_S="1"))
        waited = time.monotonic() - started
    assert result.returncode == 1 and waited < 15
    assert result.stderr == (
        f"ask: the proxy at {url} sent nothing for 1 s (hung? restart it: ask serve); "
        "set ASK_TIMEOUT_S to wait longer\n"
    )
    [line] = log_lines()
    assert line["exit_code"] == 1 and float(line["latency_s"]) >= 1  # type: ignore[arg-type]


def test_every_piece_resets_the_timeout() -> None:
    """Pieces 0.6 s apart over 3 s, with ASK_TIMEOUT_S=1: a slow answer is not a hung proxy."""
    with stand_in(delay=0.6, pieces=5) as (url, _):
        result = ask("hello", env=ask_env(url, ASK_TIMEOUT_S="1"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("piece 0 piece 1 piece 2 piece 3 piece 4")


@pytest.mark.parametrize("value", ["soon", "0", "-3", "nan"])
def test_a_bad_ask_timeout_s_is_a_usage_error(value: str) -> None:
    result = ask("hello", env=ask_env(closed_port_url(), ASK_TIMEOUT_S=value))
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("ask: ASK_TIMEOUT_S must be a number of seconds above 0")


# 2. SIGTERM during an answer, as Ctrl-C.


def test_sigterm_mid_answer_keeps_what_came_and_logs_the_call() -> None:
    with stand_in(delay=0.3, pieces=100) as (url, _):
        child = subprocess.Popen(
            [sys.executable, "-m", "ask_cli", "a long story"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=ask_env(url),
            cwd=ROOT,
        )
        assert child.stdout is not None
        first = child.stdout.read1(65536)
        assert first.startswith(b"piece 0")
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=30)
    assert child.returncode == 143 and err == b"ask: terminated\n"
    assert (first + out).startswith(b"piece 0") and (first + out).endswith(b"\n")
    [line] = log_lines()
    assert line["exit_code"] == 143 and line["error"] == "terminated"
    assert line["served_by"] == "fast-9b" and float(line["latency_s"]) > 0  # type: ignore[arg-type]


# 3. A failed call logs its real latency and the tier that failed.


def test_an_http_error_logs_the_tier_the_headers_named_and_its_latency() -> None:
    with stand_in(status=500) as (url, _):
        result = ask("--no-fallback", "hello", env=ask_env(url))
    assert result.returncode == 1 and "the backend failed" in result.stderr
    [line] = log_lines()
    assert line["exit_code"] == 1 and line["served_by"] == "fast-3b"
    assert float(line["latency_s"]) > 0  # type: ignore[arg-type]


def test_an_unreachable_proxy_logs_its_latency_and_no_tier() -> None:
    result = ask("hello", env=ask_env(closed_port_url()))
    assert result.returncode == 1 and "the proxy is not running" in result.stderr
    [line] = log_lines()
    assert line["served_by"] == "" and float(line["latency_s"]) > 0  # type: ignore[arg-type]


# 4. `ask stats` survives any JSON line.

GOOD = {"ts": 1000.0, "model": "fast-9b", "served_by": "fast-9b", "latency_s": 1.5, "exit_code": 0, "tokens": 3}
BAD_LINES = [
    {**GOOD, "served_by": ["fast-9b"]},
    {**GOOD, "served_by": {"tier": "fast-9b"}},
    {**GOOD, "model": ["fast-9b"]},
    {**GOOD, "latency_s": "1.5"},
    {**GOOD, "latency_s": float("inf")},
    {**GOOD, "tokens": "3"},
    {**GOOD, "lane": ["local"]},
]


def write_log(lines: list[str]) -> Path:
    path = telemetry.log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_stats_skips_lines_of_the_wrong_types_as_corrupt(capsys: pytest.CaptureFixture[str]) -> None:
    raw = [json.dumps(GOOD), *(json.dumps(line) for line in BAD_LINES), json.dumps({**GOOD, "ts": 1001.0})]
    raw.append(json.dumps(GOOD).replace("1000.0", "1e400"))  # json reads it as inf
    raw.append(json.dumps(GOOD).replace("1000.0", "NaN"))
    write_log(raw)
    reader = telemetry.read()
    assert len(list(reader)) == len(BAD_LINES) + 2 and reader.corrupt == 2  # the reader skips the infinite ts
    assert telemetry.stats(telemetry.read())["corrupt"] == len(BAD_LINES) + 2  # the tally the wrong types
    assert telemetry.show(as_json=True) == 0
    figures = json.loads(capsys.readouterr().out, parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    assert figures["total"]["calls"] == 2 and figures["first_ts"] == 1000.0 and figures["last_ts"] == 1001.0
    assert figures["corrupt"] == len(BAD_LINES) + 2
    assert telemetry.show() == 0
    assert "fast-9b" in capsys.readouterr().out


def test_stats_over_older_lines_with_one_misfit(capsys: pytest.CaptureFixture[str]) -> None:
    """Lines lacking fields (written by hand, or before a field existed) are checked alike."""
    write_log([json.dumps({"ts": 1000.0, "model": "fast-9b"}), json.dumps({"ts": 1000.0, "served_by": [1]})])
    assert telemetry.show(as_json=True) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["total"]["calls"] == 1 and figures["corrupt"] == 1


# 5. Appends start on a fresh line.


def test_an_append_after_a_torn_last_line_starts_a_new_line() -> None:
    path = write_log([json.dumps(GOOD)])
    with path.open("a") as fh:
        fh.write('{"ts": 1000.0, "model": "fa')  # a crash mid-write
    assert telemetry.record(
        model="fast-9b",
        served_by="fast-9b",
        prompt="p",
        response="r",
        latency_s=0.5,
        cache_hit=False,
        demoted=False,
        exit_code=0,
    )
    reader = telemetry.read()
    assert [e["latency_s"] for e in reader] == [1.5, 0.5] and reader.corrupt == 1
    assert path.read_bytes().endswith(b"}\n")


def test_a_big_log_read_by_two_processes_skips_the_same_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry, "PARALLEL_BYTES", 1)  # `summary` forks for any log
    write_log([json.dumps({**GOOD, "ts": 1000.0 + n}) for n in range(50)] + [json.dumps(line) for line in BAD_LINES])
    split, whole = telemetry.summary(), telemetry.stats(telemetry.read())
    assert split == whole and split["corrupt"] == len(BAD_LINES) and split["total"]["calls"] == 50


def test_an_append_to_a_whole_log_adds_no_blank_line() -> None:
    path = write_log([json.dumps(GOOD)])
    telemetry.append(GOOD)
    assert path.read_text().splitlines() == [json.dumps(GOOD), json.dumps(GOOD, separators=(",", ":"))]


# 6. A master key file others can read is refused.


def test_a_key_file_others_can_read_is_refused() -> None:
    from contract import paths

    key_file = paths.key_file()
    paths.private_dir(key_file.parent)
    key_file.write_text("sk-mine\n")
    key_file.chmod(0o644)
    with pytest.raises(paths.KeyFileError, match=rf"chmod 600 {key_file}$"):
        paths.master_key(create=False)
    env = ask_env(closed_port_url())
    del env["LITELLM_MASTER_KEY"]
    result = ask("hello", env=env)
    assert result.returncode == 1
    assert result.stderr == f"ask: {key_file} is readable by others (-rw-r--r--): chmod 600 {key_file}\n"
    doctor = ask("doctor", env=env, timeout=60)  # the full CLI's commands read it too: the same line, no traceback
    assert doctor.returncode == 1 and doctor.stderr.endswith(f"chmod 600 {key_file}\n")
    assert "Traceback" not in doctor.stderr
    key_file.chmod(0o600)
    assert paths.master_key(create=False) == "sk-mine"


# 7. Option values that cannot be meant are usage errors, on the fast path and through Typer alike.


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", ""], "Invalid value for '-m' / '--model': must not be empty"),
        (["--model="], "Invalid value for '-m' / '--model': must not be empty"),
        (["--max-tokens", "-5"], "Invalid value for '--max-tokens': -5 is not in the range x>=1"),
        (["--max-tokens", "0"], "Invalid value for '--max-tokens': 0 is not in the range x>=1"),
        (["--temperature", "-1"], "Invalid value for '--temperature': -1.0 is not in the range 0.0<=x<=2.0"),
        (["--temperature", "3"], "Invalid value for '--temperature': 3.0 is not in the range 0.0<=x<=2.0"),
    ],
)
@pytest.mark.parametrize("through_typer", [False, True])
def test_bad_option_values_are_usage_errors(args: list[str], message: str, through_typer: bool) -> None:
    # a value joined to its short option (`-sX`) is left to the full CLI: then Typer parses the command line
    extra = ["-sBe terse."] if through_typer else []
    result = ask(*extra, *args, "hello", env=ask_env(closed_port_url()))
    assert result.returncode == 2
    assert result.stderr == f"ask: {message}\n"


# 8. A corrupt prompt cache is moved aside once, and the answer comes.


def test_a_corrupt_cache_is_moved_aside_once_and_the_answer_comes() -> None:
    from ask_cli import cache

    path = cache.cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a database, " * 512)
    with stand_in() as (url, _):
        first = ask("hello", env=ask_env(url))
        second = ask("hello", env=ask_env(url))
    [aside] = path.parent.glob("cache.sqlite3.corrupt-*")
    assert first.returncode == 0 and first.stdout.startswith("piece 0 piece 1")
    assert first.stderr == f"ask: the prompt cache was corrupt; moved to {aside}, starting a new one\n"
    assert aside.read_bytes().startswith(b"not a database")
    assert second.returncode == 0 and second.stderr == "" and second.stdout == first.stdout  # a cache hit
    assert [line["cache_hit"] for line in log_lines()] == [False, True]
