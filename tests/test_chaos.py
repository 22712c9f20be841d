"""Chaos: 32 concurrent `ask` streams while the emulated Ollama, the embedded model and Redis are killed and
restored in turn. Nothing hangs, every call ends with a whole answer or one clear line, nothing cut off is
cached, and every call leaves exactly one whole telemetry line.

The stack is the one a user runs: `ask serve` (the real `litellm` proxy with the repository's config, the real
embedded llama.cpp model it supervises and restarts, Redis for the proxy's cache and the router's state), with
Ollama emulated in its own process (`harness.fake_ollama`) so it can be SIGKILLed and started again on its port.
The load is 32 real `ask` processes at all times, no direct HTTP streams: 32 worker threads, each starting the
next `ask` as soon as its last one ends, all sharing one data dir and so one `log.jsonl` and one prompt cache.
Every prompt is distinct, so a cache hit can only be a repeat. Three workers in four ask `fast-9b` (the emulated
9B, slowed so each answer streams for ~3.5 s), one in four asks `tiny` (the real model). Each step waits for an
event (answers in flight, a line from `ask serve`, an answer from the restored part), never a fixed sleep.

The scenario runs once (`chaos`, about a minute here), its calls written to `chaos.json` in its tmp dir for
reading a failure; each test below holds it to one property.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from ask_cli import telemetry
from harness.fake_ollama import FakeOllamaControl, reply_text
from harness.processes import Server, python_module, stop, wait_until_refused
from harness.redis_server import Redis
from harness.stack import KEY, ROOT, closed_port_url, free_port, stack_env

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.redis,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed"),
]

STREAMS = 32
TAGS = {"fast-9b": "qwen3.5:9b", "fast-3b": "llama3.2:3b", "fast-1b": "gemma3:1b"}  # the emulated Ollama's
TOKEN_DELAY_S = 0.5  # between the emulated 9B's 8 pieces: each answer streams for ~3.5 s, long enough to cut
# ask's own "the proxy sent nothing" limit, above every timeout of the stack's (a demoted fast-9b's local hops
# share 30 s, then tiny has its own 30 s): a call that reaches it found the proxy hung, not a backend slow.
ASK_TIMEOUT_S = 90
RUN_DEADLINE_S = 95  # no call may take longer, whatever it says
EVENT_S = 60  # the longest wait for any one event of the scenario
MAX_TOKENS = 10  # above the emulated 9B's 8 pieces; keeps a demoted answer from the real model short
TINY_MAX_TOKENS = 32  # `--tiny` answers long enough to be cut
FIELDS = set(
    telemetry.entry(
        model="m", served_by=None, prompt="", response="", latency_s=0, cache_hit=False, demoted=False, exit_code=0
    )
)


class Run:
    """One `ask` process: its prompt and tier, when it started, printed its first byte and ended, what it said."""

    def __init__(self, prompt: str, tier: str, env: dict[str, str]) -> None:
        self.prompt, self.tier = prompt, tier
        tokens = TINY_MAX_TOKENS if tier == "tiny" else MAX_TOKENS
        flags = ["--tiny"] if tier == "tiny" else []
        self.started = time.monotonic()
        self.first_byte: float | None = None
        self.ended: float | None = None
        self.out = b""
        self.err = b""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ask_cli", *flags, "--max-tokens", str(tokens), prompt],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        self._err_reader = threading.Thread(target=self._read_err, daemon=True)
        self._err_reader.start()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.err = self.proc.stderr.read()

    def finish(self) -> Run:
        """Read the answer as it streams (its first byte is an event of the scenario) until the process ends; one
        still running at its deadline is killed (the tests say it hung)."""
        assert self.proc.stdout is not None
        while chunk := self.proc.stdout.read1(65536):
            if self.first_byte is None:
                self.first_byte = time.monotonic()
            self.out += chunk
        try:
            self.proc.wait(timeout=max(1.0, self.started + RUN_DEADLINE_S - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._err_reader.join()
        self.ended = time.monotonic()
        return self

    @property
    def hash(self) -> str:
        return telemetry.prompt_hash(self.prompt)

    @property
    def streaming(self) -> bool:
        return self.first_byte is not None and self.ended is None

    @property
    def ok(self) -> bool:
        return self.ended is not None and self.proc.returncode == 0

    @property
    def demoted(self) -> bool:
        return b"[degraded:" in self.err

    @property
    def text(self) -> str:
        return self.out.decode(errors="replace")

    def whole(self, served_by: str) -> str:
        """The emulated Ollama's whole answer to this prompt from that tier, as ask prints it."""
        return reply_text(TAGS[served_by], len(self.prompt)) + "\n"

    def __repr__(self) -> str:
        took = f"{self.ended - self.started:.1f} s" if self.ended else "running"
        return (
            f"<{self.tier} {self.prompt!r} rc={self.proc.returncode} {took} out={self.out[-80:]!r} "
            f"err={self.err[-300:]!r}>"
        )


class Fleet:
    """`STREAMS` workers, each running one `ask` after another with a fresh prompt until `stop()`."""

    def __init__(self, env: dict[str, str], alive: Callable[[], None]) -> None:
        self.env, self.alive = env, alive
        self.runs: list[Run] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.numbers = itertools.count()
        self.workers = [threading.Thread(target=self._work, args=(i,), daemon=True) for i in range(STREAMS)]

    def start(self) -> Fleet:
        for worker in self.workers:
            worker.start()
        return self

    def _work(self, index: int) -> None:
        tier = "tiny" if index % 4 == 3 else "fast-9b"
        while not self.stopping.is_set():
            with self.lock:
                n = next(self.numbers)
                run = Run(f"chaos question {n:04d}: what comes after {n}?", tier, self.env)
                self.runs.append(run)
            run.finish()

    def stop(self) -> None:
        self.stopping.set()
        for worker in self.workers:
            worker.join(RUN_DEADLINE_S + 10)

    def snapshot(self) -> list[Run]:
        with self.lock:
            return list(self.runs)

    def wait(self, condition: Callable[[list[Run]], object], what: str) -> None:
        """Poll `condition` over the calls so far until it holds; fail naming `what` after `EVENT_S`."""
        deadline = time.monotonic() + EVENT_S
        while not condition(self.snapshot()):
            self.alive()
            assert time.monotonic() < deadline, f"{what}: not within {EVENT_S} s"
            time.sleep(0.05)


def ask_all(questions: list[tuple[str, str]], env: dict[str, str]) -> list[Run]:
    """Ask each (prompt, tier) at once; the runs, in the same order, once all have ended."""
    runs = [Run(prompt, tier, env) for prompt, tier in questions]
    threads = [threading.Thread(target=run.finish) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return runs


class Stack:
    """Redis, the emulated Ollama (its own process) and `ask serve` on free ports, as the scenario breaks them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.redis = Redis(free_port()).start()
        self.ollama_port, self.proxy_port, self.tiny_port = free_port(), free_port(), free_port()
        try:
            self.ollama = self._fake_ollama().start(30)
        except BaseException:
            self.redis.stop()
            raise
        self.control = FakeOllamaControl(self.ollama.url)
        self.proxy_url = f"http://127.0.0.1:{self.proxy_port}"
        env = stack_env(
            tmp,
            OLLAMA_API_BASE=self.ollama.url,
            TINY_API_BASE=f"http://127.0.0.1:{self.tiny_port}/v1",
            LLAMA_SWAP_API_BASE=closed_port_url("/v1"),
            REDIS_HOST="127.0.0.1",
            REDIS_PORT=str(self.redis.port),
        )
        self.said_path = tmp / "serve.err"
        with self.said_path.open("w") as err:
            self.serve = subprocess.Popen(
                [sys.executable, "-m", "ask_cli", "serve", "--port", str(self.proxy_port), "--no-warm"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )

    def _fake_ollama(self) -> Server:
        """On the same port each time, serving every request at once (`--no-scheduling`: the load is the 32
        streams, not Ollama's one-at-a-time queue for the 9B)."""
        cmd = python_module("harness.fake_ollama", "--port", str(self.ollama_port), "--no-scheduling")
        log = self.tmp / f"ollama-{time.monotonic_ns()}.log"
        return Server("fake ollama", cmd, log, f"http://127.0.0.1:{self.ollama_port}/api/version")

    def stop(self) -> None:
        stop([self.serve], grace_s=30)  # type: ignore[list-item]
        self.ollama.stop()
        self.redis.stop()

    def said(self, since: int = 0) -> str:
        """What `ask serve` has said on stderr (from character `since`)."""
        return self.said_path.read_text()[since:]

    def alive(self) -> None:
        assert self.serve.poll() is None, f"ask serve stopped: {self.said()[-3000:]}"

    def eventually(self, condition: Callable[[], bool], what: str, within_s: float = EVENT_S) -> None:
        deadline = time.monotonic() + within_s
        while not condition():
            self.alive()
            assert time.monotonic() < deadline, f"{what}: not within {within_s:.0f} s\n{self.said()[-3000:]}"
            time.sleep(0.1)

    def answers(self, tier: str) -> bool:
        """`tier` itself answers a fresh request (not from the cache, not demoted)."""
        body = {"model": tier, "messages": [{"role": "user", "content": "ready?"}], "max_tokens": 4}
        try:
            resp = httpx.post(
                f"{self.proxy_url}/v1/chat/completions",
                json={**body, "cache": {"no-cache": True}},
                headers={"Authorization": f"Bearer {KEY}"},
                timeout=30,
                trust_env=False,
            )
        except httpx.HTTPError:
            return False
        return resp.status_code == 200 and resp.headers.get("x-served-by") == tier

    def slow_9b(self) -> None:
        self.control.set_fault(TAGS["fast-9b"], "slow", token_delay_s=TOKEN_DELAY_S)

    def kill_ollama(self) -> None:
        assert self.ollama.proc is not None
        os.kill(self.ollama.proc.pid, signal.SIGKILL)
        self.ollama.proc.wait(10)
        assert wait_until_refused(self.ollama.url, 10)

    def restart_ollama(self) -> None:
        self.ollama = self._fake_ollama().start(30)
        self.slow_9b()

    def kill_embedded(self) -> None:
        """SIGKILL the embedded model `ask serve` started (found by its command line, as test_serve does)."""
        pattern = f"ask_cli.embedded --host 127.0.0.1 --port {self.tiny_port}"
        pids = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
        assert len(pids) == 1, pids
        os.kill(int(pids[0]), signal.SIGKILL)

    def kill_redis(self) -> None:
        assert self.redis.proc is not None
        os.kill(self.redis.proc.pid, signal.SIGKILL)
        self.redis.proc.wait(10)


@dataclass
class Chaos:
    """What the scenario did and saw: every call under chaos, the re-asks after it, the telemetry log."""

    runs: list[Run]  # the calls made while the parts were killed and restored
    cut: list[Run]  # the fast-9b answers streaming when Ollama was killed
    again: list[tuple[Run, Run]]  # (a failed or demoted call, the same question asked once the stack was healthy)
    repeats: list[tuple[Run, Run]]  # (a whole, undemoted answer, the same question again)
    fresh: Run  # a new question at the end
    ollama_chats: str  # every request the healthy Ollama got for the re-asks, as JSON lines
    log: Path
    serve_alive: bool
    events: dict[str, float] = field(default_factory=dict)  # what the scenario did, when (time.monotonic())

    def lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def line_of(self, run: Run) -> dict[str, object]:
        """The telemetry line of a call under chaos (their prompts are distinct)."""
        [line] = [line for line in self.lines()[: len(self.runs)] if line["prompt_hash"] == run.hash]
        return line

    def all_runs(self) -> list[Run]:
        return [*self.runs, *(second for _, second in self.again + self.repeats), self.fresh]


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chaos]:
    tmp = tmp_path_factory.mktemp("chaos")
    stack = Stack(tmp)
    try:
        yield run_scenario(stack, tmp)
    finally:
        stack.stop()


def run_scenario(stack: Stack, tmp: Path) -> Chaos:
    began = time.monotonic()
    events: dict[str, float] = {}

    def mark(event: str) -> float:
        events[event] = time.monotonic()
        return events[event]

    stack.eventually(lambda: stack.answers("fast-9b") and stack.answers("tiny"), "the stack never answered", 120)
    stack.slow_9b()
    env = dict(
        os.environ,
        ASK_PROXY_URL=stack.proxy_url,
        LITELLM_MASTER_KEY=KEY,
        ASK_TIMEOUT_S=str(ASK_TIMEOUT_S),
        XDG_DATA_HOME=str(tmp / "client"),
        XDG_CONFIG_HOME=str(tmp / "client-config"),
    )
    fleet = Fleet(env, stack.alive).start()
    mark("32 streams")
    try:
        fleet.wait(
            lambda runs: (
                sum(r.streaming and r.tier == "fast-9b" for r in runs) >= 8
                and any(r.ok and r.tier == "tiny" for r in runs)
            ),
            "the 32 streams never got going",
        )

        # 1. The emulated Ollama, SIGKILLed mid-answer; back on its port once calls have met it gone.
        cut = [r for r in fleet.snapshot() if r.streaming and r.tier == "fast-9b"]
        killed = mark("ollama killed")
        stack.kill_ollama()
        fleet.wait(lambda _: all(r.ended for r in cut), "the answers Ollama was giving never ended")
        fleet.wait(
            lambda runs: any(r.started > killed and (r.first_byte or r.ended) and r.tier == "fast-9b" for r in runs),
            "no call got anything while Ollama was down",
        )
        stack.restart_ollama()
        mark("ollama restored")
        fleet.wait(  # a whole fast-9b answer to a call made after the kill: the new Ollama gave it
            lambda runs: any(r.ok and r.started > killed and r.tier == "fast-9b" and not r.demoted for r in runs),
            "fast-9b never answered again after Ollama was restored",
        )

        # 2. The embedded model, SIGKILLed while tiny answers; ask serve restarts it.
        fleet.wait(lambda runs: sum(r.streaming and r.tier == "tiny" for r in runs) >= 2, "no tiny answer in flight")
        seen = len(stack.said())
        killed = mark("embedded killed")
        stack.kill_embedded()
        stack.eventually(
            lambda: "embedded model: answering again" in stack.said(seen), "the embedded model stayed down"
        )
        mark("embedded answering again")
        fleet.wait(  # likewise: only the restarted model can have answered a tiny call made after the kill
            lambda runs: any(r.ok and r.started > killed and r.tier == "tiny" for r in runs),
            "tiny never answered again after its restart",
        )

        # 3. Redis, SIGKILLed under load: ask serve says so, and says so again once it is back on its port.
        fleet.wait(lambda runs: sum(r.streaming for r in runs) >= 8, "no calls in flight before Redis is killed")
        seen = len(stack.said())
        mark("redis killed")
        stack.kill_redis()
        stack.eventually(lambda: "serving without the shared cache" in stack.said(seen), "Redis down never said")
        stack.redis.start()
        mark("redis restarted")
        stack.eventually(lambda: "the shared cache is back" in stack.said(seen), "Redis back never said")
        back = mark("redis said back")
        fleet.wait(lambda runs: sum(r.ok and r.started > back for r in runs) >= 4, "no answers after Redis came back")
    finally:
        fleet.stop()
        mark("chaos over")
        record(tmp / "chaos.json", began, events, fleet.snapshot())  # also when an event never came
    runs = fleet.snapshot()

    # The same questions again on a healthy stack (no slowness; Ollama's request log emptied): a failed or demoted
    # call's, and some whole answers'.
    stack.control.reset()
    stack.eventually(lambda: stack.answers("fast-9b") and stack.answers("tiny"), "the stack did not recover")
    stack.control.reset()
    cut_off = [r for r in runs if not r.ok and r.out]  # every answer that was cut off, and a few of the rest
    no_answer = [r for r in runs if not r.ok and not r.out]
    demoted = [r for r in runs if r.ok and r.demoted]
    some = [r for tier in ("fast-9b", "tiny") for r in [r for r in no_answer if r.tier == tier][:4]]
    failed_or_demoted = cut_off + some + demoted[:4]
    whole = [r for r in runs if r.ok and not r.demoted and r.first_byte][:8]
    asked = ask_all([(r.prompt, r.tier) for r in failed_or_demoted + whole], env)
    pairs = list(zip(failed_or_demoted + whole, asked, strict=True))
    chats = "\n".join(json.dumps(c["body"]) for c in stack.control.chats())
    [fresh] = ask_all([("a fresh question after the chaos", "fast-9b")], env)
    mark("re-asked")
    chaos = Chaos(
        runs=runs,
        cut=cut,
        again=pairs[: len(failed_or_demoted)],
        repeats=pairs[len(failed_or_demoted) :],
        fresh=fresh,
        ollama_chats=chats,
        log=tmp / "client" / "ask" / "log.jsonl",
        serve_alive=stack.serve.poll() is None,
        events=events,
    )
    record(tmp / "chaos.json", began, events, chaos.all_runs())
    print(f"\nchaos: {len(runs)} calls, {sum(not r.ok for r in runs)} failed, {tmp / 'chaos.json'}")
    return chaos


def record(path: Path, began: float, events: dict[str, float], runs: list[Run]) -> None:
    """What happened when (seconds from the start), for reading a failure: the scenario's events, every call."""

    def at(t: float | None) -> float | None:
        return None if t is None else round(t - began, 2)

    calls = [
        {
            "tier": r.tier,
            "prompt": r.prompt,
            "started": at(r.started),
            "first_byte": at(r.first_byte),
            "ended": at(r.ended),
            "rc": r.proc.returncode,
            "out": r.text,
            "err": r.err.decode(errors="replace"),
        }
        for r in runs
    ]
    path.write_text(json.dumps({"events": {event: at(t) for event, t in events.items()}, "calls": calls}, indent=1))


def error_lines(err: bytes) -> list[str]:
    """stderr's lines other than the demotion marker and `ask: warning:` lines."""
    lines = err.decode(errors="replace").splitlines()
    return [line for line in lines if not line.startswith(("[degraded:", "ask: warning:"))]


def test_nothing_hangs(chaos: Chaos) -> None:
    """Every call ended, well within its deadline, and none because the proxy went silent; ask serve never
    stopped."""
    hung = [r for r in chaos.all_runs() if r.ended is None or r.ended - r.started > RUN_DEADLINE_S - 1]
    assert not hung, hung
    silent = [r for r in chaos.all_runs() if b"sent nothing for" in r.err]
    assert not silent, silent
    assert chaos.serve_alive


def test_every_call_ends_with_a_whole_answer_or_one_clear_line(chaos: Chaos) -> None:
    """Exit 0 with an answer, or exit 1 with one `ask: …` line (after the demotion marker, if any) and no
    traceback. An answer from the emulated Ollama is exactly what it sends, never a piece of it, and never a
    piece of one answer spliced onto another tier's."""
    unclear = []
    for run in chaos.runs:
        rc, lines = run.proc.returncode, error_lines(run.err)
        if rc == 0:
            if not run.out.strip() or lines:
                unclear.append(run)
        elif rc != 1 or len(lines) != 1 or not lines[0].startswith("ask: ") or b"Traceback" in run.err:
            unclear.append(run)
    assert not unclear, unclear
    served = {id(r): chaos.line_of(r)["served_by"] for r in chaos.runs}
    partial = [r for r in chaos.runs if r.ok and served[id(r)] in TAGS and r.text != r.whole(served[id(r)])]  # type: ignore[arg-type]
    assert not partial, partial
    assert any(not r.ok for r in chaos.cut), f"killing Ollama cut no answer off: {chaos.cut}"


def test_the_other_parts_answer_while_one_is_down(chaos: Chaos) -> None:
    """While the embedded model is down, fast-9b answers every call itself (once Ollama is back from its own
    kill); while Redis is down and coming back, every call is answered."""
    at = chaos.events

    def during(run: Run, start: float, end: float) -> bool:
        return start < run.started < end or run.started < start < (run.ended or 0)

    tiny_down = [
        r
        for r in chaos.runs
        if r.tier == "fast-9b"
        and r.started > at["ollama restored"]
        and during(r, at["embedded killed"], at["embedded answering again"])
    ]
    assert tiny_down and all(r.ok and not r.demoted for r in tiny_down), [r for r in tiny_down if not r.ok]
    redis_down = [r for r in chaos.runs if during(r, at["redis killed"], at["redis said back"])]
    assert redis_down and all(r.ok for r in redis_down), [r for r in redis_down if not r.ok]


def test_no_answer_cut_off_is_cached(chaos: Chaos) -> None:
    """Asked again on a healthy stack, a failed (or demoted) call's question is no cache hit, neither ask's nor
    the proxy's: it reaches a backend (Ollama's request log has it) and gets a whole answer."""
    assert chaos.again
    for first, second in chaos.again:
        line = next(line for line in chaos.lines()[len(chaos.runs) :] if line["prompt_hash"] == second.hash)
        assert second.ok and not line["cache_hit"], (first, second, line)
        if first.tier == "fast-9b":
            assert line["served_by"] == "fast-9b" and second.text == second.whole("fast-9b"), (first, second, line)
            assert f'"content": "{first.prompt}"' in chaos.ollama_chats, f"answered without Ollama: {first}"


def test_a_whole_answer_is_cached(chaos: Chaos) -> None:
    """The other side: a whole, undemoted answer given under chaos is answered from ask's cache, unchanged."""
    assert chaos.repeats
    for first, second in chaos.repeats:
        line = next(line for line in chaos.lines()[len(chaos.runs) :] if line["prompt_hash"] == second.hash)
        assert second.ok and line["cache_hit"] and second.out == first.out, (first, second, line)


def test_one_whole_telemetry_line_per_call(chaos: Chaos) -> None:
    """No line lost, torn, or doubled: each is one JSON object with every field, and there is one per call, for
    its prompt and with its exit code."""
    text = chaos.log.read_text()
    assert text.endswith("\n"), "the last telemetry line is torn"
    parsed = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"telemetry line {number} is not one JSON object: {line[:300]!r}") from None
        assert isinstance(entry, dict) and set(entry) == FIELDS, (number, line)
        parsed.append(entry)
    runs = chaos.all_runs()
    assert len(parsed) == len(runs), f"{len(runs)} calls, {len(parsed)} telemetry lines"
    logged = Counter((entry["prompt_hash"], entry["exit_code"]) for entry in parsed)
    assert logged == Counter((r.hash, r.proc.returncode) for r in runs)


def test_the_stack_serves_after_the_chaos(chaos: Chaos) -> None:
    """ask serve still runs, and a new question gets a whole answer from the tier asked for."""
    assert chaos.serve_alive
    fresh = chaos.fresh
    assert fresh.ok and not fresh.demoted and fresh.text == fresh.whole("fast-9b"), fresh


def test_a_call_no_tier_answered_logs_no_tier(chaos: Chaos) -> None:
    """The telemetry's own contract (ask_cli/telemetry.py `entry`): `served_by` is "" when no tier answered."""
    unanswered = [r for r in chaos.runs if b"every tier in the chain" in r.err]
    assert unanswered, "no call met a whole chain down"
    assert [chaos.line_of(r)["served_by"] for r in unanswered] == [""] * len(unanswered)


def test_an_answer_cut_off_mid_stream_says_so(chaos: Chaos) -> None:
    """Part of an answer on stdout and exit 1: the one line says the answer was cut off, in ask's words."""
    cut_off = [r for r in chaos.runs if r.proc.returncode == 1 and r.out]
    assert cut_off, "no answer was cut off"
    unclear = [r for r in cut_off if "the answer was cut off" not in error_lines(r.err)[0]]
    assert not unclear, unclear
