"""`ask serve`: the embedded model and the LiteLLM proxy, started together and stopped together.

Binds 127.0.0.1, passes the master key through the environment (never on a command line), and runs the
proxy from the config's directory so `plugins.*` resolve exactly as with `litellm --config` by hand.

Both children start at once: the embedded model loads (~1 s) while LiteLLM imports (~8 s), and the tier,
Redis and database checks (doctor's own, capped at a fraction of a second each) run beside them, so
nothing of ours stands between the command and the proxy's own start. The children's output goes to 0600
logs in the data dir (`-v`: to the terminal instead); the terminal gets what a user needs: where the
proxy listens, where the key is, which tiers answer now, where the logs are. Then, when Ollama answers, the
default tier's model is loaded in the background (`ask_cli/warm.py`, one line when it is done; `--no-warm`):
the first question of the day does not pay for the load.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import urlsplit

from ask_cli import client, processes, stack_config
from contract import BACKEND_DEFAULTS, DEFAULT_TIER, TINY_KEY_ENV, paths

if TYPE_CHECKING:
    from ask_cli.doctor import Check
    from contract.tiers import Tiers

READY_TIMEOUT_S = 120.0
CHECK_TIMEOUT_S = 0.5  # each backend check at start: a black-holed backend must not hold up the tier lines
TAIL_LINES = 20  # of a child's log, said when it exits and no error line says why
TIMINGS_ENV = "ASK_SERVE_TIMINGS"  # a file: when each start phase ended (epoch seconds), for bench/start.py
EMBEDDED = "embedded model"
RESTART_MAX_S = 30.0  # the longest wait before the embedded model is started again
REDIS_CHECK_S = 2.0  # how often a running stack asks Redis whether it answers
STATUS = {"ok": "ok", "warn": "warn", "FAIL": "down"}  # at start, a tier that does not answer is not a failure


def logs_dir() -> Path:
    """`<data dir>/logs`: the proxy's and the embedded model's full output, one file each."""
    return paths.data_dir() / "logs"


# Not `proxy.log`: that is the login service's own log of `ask serve` (ask_cli/service.py), in the same directory.
CHILD_LOGS = {"proxy": "litellm.log", EMBEDDED: "embedded.log"}


def _home(path: Path) -> str:
    text, home = str(path), str(Path.home())
    return "~" + text[len(home) :] if text.startswith(home + os.sep) else text


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    ready_url: str
    ready: Callable[[str, float], bool]
    log: Path | None  # None with -v: its output went to the terminal
    up: bool = False
    spawn: tuple[list[str], dict[str, str], Path | None] | None = None  # how to start it again (cmd, env, cwd)
    restarts: int = 0


@dataclass
class Stack:
    config: Path
    host: str = "127.0.0.1"
    port: int = 4000
    embedded: bool = True
    cloud: bool = False  # merge litellm-config.cloud.yaml: the lanes whose keys are set
    verbose: bool = False  # the children's output live on stderr instead of in logs_dir()
    warm: bool = True  # once ready, load DEFAULT_TIER's model in the background (when Ollama answers)
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)
    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    started: list[Child] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def environment(self) -> dict[str, str]:
        for name, value in BACKEND_DEFAULTS.items():  # as plugins/environment.py does for `litellm --config`;
            os.environ.setdefault(name, value)  # in this process too, so the checks look where the proxy will
        if os.environ.get("REDIS_HOST"):
            os.environ.setdefault("REDIS_PORT", "6379")  # the router only uses Redis when it has a port too
        env = dict(os.environ)
        if env.get("REDIS_HOST"):
            env = {**stack_config.REDIS_ENV, **env}
        env[paths.KEY_ENV] = paths.master_key() or ""
        env[TINY_KEY_ENV] = env[paths.KEY_ENV]  # the embedded model takes only the key the proxy's tiny sends
        env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: never fetch the cost map
        env.setdefault("LITELLM_LOG", "ERROR")  # no per-request access log: ~0.4 ms each (bench/README.md)
        env.setdefault("LITELLM_DONT_SHOW_FEEDBACK_BOX", "true")  # LiteLLM's own switch for its start-up box
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.setdefault("PYTHONFAULTHANDLER", "1")  # a hard crash of a child leaves its Python stack in its log
        return env

    def port_problem(self) -> str | None:
        """Why the proxy could not listen where asked, said before anything starts: a port out of range, or one
        in use (another `ask serve`, whose health check would otherwise answer for this one)."""
        import socket

        if not 1 <= self.port <= 65535:
            return f"--port must be from 1 to 65535 (got {self.port})"
        try:
            with socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a listener blocks
                probe.bind((self.host, self.port))
        except OSError as exc:
            other = self.port + 100 if self.port < 65435 else self.port - 100
            return (
                f"{self.host}:{self.port} is in use ({exc.strerror}): another `ask serve`? stop it "
                f"(`ask service status`), or start this one elsewhere: `ask serve --port {other}`"
            )
        return None

    def _mark(self, phase: str) -> None:
        self.timings[phase] = time.time()

    def start(self) -> None:
        """Spawn the children at once; return when the proxy (and the embedded model, if ours) answer."""
        from ask_cli import secrets_file

        self._mark("start")
        port_problem = self.port_problem()
        if port_problem:
            raise stack_config.ConfigError(port_problem)
        try:  # into this process too: the Redis and database checks read them like the proxy will
            added = secrets_file.apply(os.environ)
        except secrets_file.SecretsError as exc:
            raise stack_config.ConfigError(str(exc)) from None
        if added:
            self.log(f"from {secrets_file.secrets_path()}: {', '.join(added)}")
        env = self.environment()
        config = stack_config.load(self.config)
        run = config
        if self.cloud:
            overlay = self.config.resolve().parent / stack_config.CLOUD_NAME
            run, dropped = stack_config.with_cloud(run, overlay)
            for line in dropped:
                self.log(f"cloud lane {line}")
        problems = stack_config.config_problems(run) + stack_config.routing_problems(run)
        if problems:
            raise stack_config.ConfigError(f"{self.config}: {problems[0]}")
        stack_config.check_plugins(run, self.config)
        stack_config.check_budget(run, self.config)
        if env.get("REDIS_HOST"):
            run = stack_config.with_redis(run)
            self.log(f"response cache and router state: Redis at {env['REDIS_HOST']}:{env['REDIS_PORT']}")
        run_config = self.config.resolve()
        if run is not config:  # LiteLLM reads one file: write the derived one (includes merged), private
            run_config = stack_config.write_private(run, paths.data_dir() / "litellm-config.derived.yaml")
        litellm = shutil.which("litellm", path=str(Path(sys.executable).parent)) or shutil.which("litellm")
        if litellm is None:
            raise RuntimeError("the litellm command is not installed: pip install -e . (see README)")
        self._mark("config")
        if self.embedded:
            self._start_embedded(env)
        cmd = [litellm, "--config", str(run_config), "--host", self.host, "--port", str(self.port)]
        self._spawn("proxy", cmd, env, f"{self.url}/health/liveliness", processes.answers, self.config.resolve().parent)
        self._mark("spawned")
        if not self.verbose:
            self.log(f"LiteLLM's output: {_home(logs_dir() / CHILD_LOGS['proxy'])} (ask serve -v shows it here)")

        from ask_cli import doctor  # after the spawn: nothing of ours stands before LiteLLM's start
        from contract import tiers as tier_model

        pool = ThreadPoolExecutor(max_workers=4)  # beside the children's start, never in front of it
        try:
            tiers = tier_model.from_config(config)  # the local tiers; the cloud lanes said theirs above
            ours = any(child.name == EMBEDDED for child in self.started)
            ollama = pool.submit(_checks, doctor.check_ollama, tiers, CHECK_TIMEOUT_S)
            pending = [ollama, pool.submit(_checks, doctor.check_openai_servers, tiers, CHECK_TIMEOUT_S)]
            if not ours:  # --no-embedded, or a server already there: does it answer?
                pending.insert(0, pool.submit(_checks, doctor.check_embedded, tiers, CHECK_TIMEOUT_S))
            warnings = []
            if env.get("REDIS_HOST"):
                warnings.append(pool.submit(_redis_warning))
            if env.get("DATABASE_URL"):
                warnings.append(pool.submit(self._database_line, env["DATABASE_URL"]))
            self._wait_ready(warnings)
            self._mark("ready")
            where = f"${paths.KEY_ENV}" if os.environ.get(paths.KEY_ENV, "").strip() else _home(paths.key_file())
            self.log(f"proxy listening on {self.url}/v1 (master key in {where})")
            client.record_listening(self.url)
            lines = _lines(doctor.check_embedded, tiers, CHECK_TIMEOUT_S) if ours else []
            for line in lines + [line for future in pending for line in _said(future.result())]:
                self.log(line)
            if self.warm:
                self._warm_in_background(tiers, ollama.result())
            self._say_done(warnings, wait=True)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        self._mark("said")
        target = os.environ.get(TIMINGS_ENV)
        if target:
            Path(target).write_text(json.dumps(self.timings))

    def _warm_in_background(self, tiers: Tiers, ollama: list[Check]) -> None:
        """Load DEFAULT_TIER's model through the proxy on a thread, when its Ollama answered the start's check;
        one line when done (nothing once the stack is stopping)."""
        tier = tiers.get(DEFAULT_TIER)
        if tier is None or not tier.is_ollama:
            return
        answers = f"answers at {tier.primary.api_base}"  # check_ollama's line for an Ollama that is up
        if not any(check.status == "ok" and check.what.endswith(answers) for check in ollama):
            return

        def load() -> None:
            from ask_cli import warm

            done = warm.warm(DEFAULT_TIER, url=self.url)
            if not self.stopping.is_set():
                said = f"loaded in {done.seconds:.1f} s" if done.ok else f"not warmed: {done.reason}"
                self.log(f"warm: {DEFAULT_TIER} {said}")

        threading.Thread(target=load, name="warm", daemon=True).start()

    def _database_line(self, url: str) -> str:
        """Where the dashboard is and its logs go (never the password), or why PostgreSQL may stop the start."""
        from ask_cli.doctor import check_database, database_address

        found = database_address(url)
        shown = found[0] if found else "DATABASE_URL (not a postgresql:// URL)"
        line = f"database: {shown}; the UI at {self.url}/ui (log in as admin with the master key)"
        for check in check_database(timeout=2.0)[:1]:
            if check.status != "ok":
                line += f"\nwarning: {check.what}; the proxy may not start without it (fix: {check.fix})"
        return line

    def _start_embedded(self, env: dict[str, str]) -> None:
        from ask_cli.embedded import health_ok

        base = env["TINY_API_BASE"]
        parts = urlsplit(base)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            return  # someone else's server: the proxy reaches it as configured
        root = base.rstrip("/").removesuffix("/v1")
        if processes.answers(f"{root}/health", timeout=CHECK_TIMEOUT_S):
            self.log(f"embedded model: reusing the server already on {root}")
            return
        cmd = [sys.executable, "-m", "ask_cli.embedded", "--host", "127.0.0.1", "--port", str(parts.port or 11435)]
        self._spawn(EMBEDDED, cmd, env, f"{root}/health", health_ok)

    def _spawn(
        self,
        name: str,
        cmd: list[str],
        env: dict[str, str],
        ready_url: str,
        ready: Callable[[str, float], bool],
        cwd: Path | None = None,
    ) -> None:
        # stdout carries only answers, so `ask serve --ask ... > out.txt` works: a child writes to its log,
        # or with -v to our stderr.
        log = None if self.verbose else logs_dir() / CHILD_LOGS[name]
        out: int | IO[bytes] = sys.stderr.fileno() if log is None else processes.private_log(log)
        try:
            proc = processes.spawn(cmd, env, cwd, stdout=out)
        finally:
            if not isinstance(out, int):
                out.close()
        self.children.append((name, proc))
        self.started.append(Child(name, proc, ready_url, ready, log, spawn=(cmd, env, cwd)))

    def _say_done(self, warnings: list[Future[str]], wait: bool = False) -> None:
        """Say each finished warning once (`wait`: all of them; each check is capped at 2 s)."""
        for future in list(warnings):
            if wait or future.done():
                warnings.remove(future)
                if future.result():
                    self.log(future.result())

    def _wait_ready(self, warnings: list[Future[str]]) -> None:
        """Poll every child we started until each answers; one that exits first is reported with its log's end.

        Warnings (Redis, the database) are said as soon as they are known: they may be why a child exits."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            self._say_done(warnings)
            for child in self.started:
                if child.proc.poll() is not None:
                    self._say_done(warnings, wait=True)
                    raise RuntimeError(self._exited(child, " while starting"))
                if not child.up and child.ready(child.ready_url, 0.5):
                    child.up = True
                    self._mark(f"{child.name} ready")
            if all(child.up for child in self.started):
                return
            if time.monotonic() >= deadline:
                late = " and the ".join(c.name for c in self.started if not c.up)
                raise RuntimeError(f"the {late} did not answer within {READY_TIMEOUT_S:.0f} s")
            time.sleep(processes.POLL_S)

    @staticmethod
    def _how(child: Child) -> str:
        """`<name> exited with code N` or `<name> was killed by signal N`."""
        code = child.proc.returncode
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        return f"{child.name} {how}"

    def _exited(self, child: Child, when: str = "") -> str:
        """`<name> exited with code N`, and why: the end of its log (with -v it is on the terminal already)."""
        said = f"{self._how(child)}{when}"
        if child.log is None:
            return f"{said} (see above)"
        killed = child.proc.returncode is not None and child.proc.returncode < 0
        why = processes.why_it_stopped(child.log, 0 if killed else TAIL_LINES)
        if why:
            return f"{said}; from {_home(child.log)}:\n{why}"
        return f"{said} (its log: {_home(child.log)})" if killed else f"{said} ({_home(child.log)} is empty)"

    def watch(self) -> int:
        """Block until the proxy exits (then report it: 1) or a signal stops the stack (see
        `stopping_on_signals`). The embedded model is restarted when it exits, after 1, 2, 4 … 30 s: every
        other tier keeps answering meanwhile, and `tiny` is back within seconds."""
        restart_at: dict[str, float] = {}
        redis = RedisWatch(self.log) if os.environ.get("REDIS_HOST") else None
        while True:
            if redis is not None:
                redis.check()
            for child in list(self.started):
                if child.proc.poll() is None:
                    if not child.up and child.restarts and child.ready(child.ready_url, 0.5):
                        child.up = True
                        self.log(f"{child.name}: answering again")
                    continue
                if child.name != EMBEDDED or child.spawn is None:
                    self.log(f"{self._exited(child)}\nstopping the stack")
                    return 1
                if child.name not in restart_at:
                    delay = min(RESTART_MAX_S, 2.0**child.restarts)
                    restart_at[child.name] = time.monotonic() + delay
                    where = f" (its log: {_home(child.log)})" if child.log else ""
                    self.log(f"{self._how(child)}; restarting it in {delay:g} s{where}")
                elif time.monotonic() >= restart_at[child.name]:
                    del restart_at[child.name]
                    self._restart(child)
            time.sleep(0.2)

    def _restart(self, child: Child) -> None:
        assert child.spawn is not None
        cmd, env, cwd = child.spawn
        out: int | IO[bytes] = sys.stderr.fileno() if child.log is None else processes.private_log(child.log)
        try:
            proc = processes.spawn(cmd, env, cwd, stdout=out)
        finally:
            if not isinstance(out, int):
                out.close()
        self.children = [(name, proc if name == child.name else old) for name, old in self.children]
        child.proc, child.up, child.restarts = proc, False, child.restarts + 1

    def stop(self) -> None:
        """SIGTERM each child's process group, SIGKILL what has not gone in 15 s. Signals wait meanwhile."""
        self.stopping.set()
        client.forget_listening()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        processes.stop([proc for _name, proc in reversed(self.children)], grace_s=15)
        self.children.clear()


def _checks(check: Callable[..., list[Check]], *args: object) -> list[Check]:
    """A doctor check's result; one that cannot run is a warn line, and never stops the start."""
    from ask_cli.doctor import Check

    try:
        return check(*args)
    except Exception as exc:
        return [Check("warn", f"{check.__name__}: could not check ({type(exc).__name__}: {exc})")]


def _said(checks: list[Check]) -> list[str]:
    """Checks as said at start: `down` for what does not answer; no "not checked" follow-ups, no "installed"
    lines for a model that answers."""
    lines = []
    for found in checks:
        if "not checked" in found.what or (found.status == "ok" and "installed" in found.what):
            continue
        fix = f" — fix: {found.fix}" if found.fix and found.status != "ok" else ""
        lines.append(f"{STATUS.get(found.status, found.status):<4}  {found.what}{fix}")
    return lines


def _lines(check: Callable[..., list[Check]], *args: object) -> list[str]:
    """A doctor check's lines as said at start (`_said`)."""
    return _said(_checks(check, *args))


def _redis_warning() -> str:
    """One clear line when Redis will not answer (down, wrong password): LiteLLM serves anyway, uncached and
    unshared, and buries the reason in repeated errors of its own."""
    from ask_cli.doctor import check_redis

    for check in check_redis(timeout=2.0):
        if check.status != "ok":
            return f"warning: {check.what}; serving without the shared cache until it answers (fix: {check.fix})"
    return ""


class RedisWatch:
    """Says once when Redis stops answering and once when it is back: the proxy serves meanwhile, uncached and
    unshared, and LiteLLM's own errors about it would otherwise be the only trace (in its log)."""

    def __init__(self, log: Callable[[str], None], every_s: float = REDIS_CHECK_S) -> None:
        self.log, self.every_s = log, every_s
        self.answering = self._answers()[0]  # as the start found it: `_redis_warning` has said so already
        self.next = time.monotonic() + every_s

    @staticmethod
    def _answers() -> tuple[bool, list[Check]]:
        from ask_cli.doctor import check_redis

        checks = check_redis(timeout=stack_config.REDIS_TIMEOUT_S * 2)
        return all(c.status == "ok" for c in checks), checks

    def check(self) -> None:
        if time.monotonic() < self.next:
            return
        answering, checks = self._answers()
        self.next = time.monotonic() + self.every_s
        if answering != self.answering:
            self.answering = answering
            if answering:
                self.log(f"{checks[0].what}: the shared cache is back")
            else:
                failed = next(c for c in checks if c.status != "ok")
                self.log(f"warning: {failed.what}; serving without the shared cache until it answers")


class Stopped(Exception):
    """SIGTERM or SIGINT arrived: unwind, so `Stack.stop` runs wherever the run command was."""


def stopping_on_signals() -> None:
    """From here on SIGTERM and Ctrl-C raise `Stopped`, even mid-start or mid-answer: no orphaned children."""

    def on_signal(signum: int, _frame: object) -> None:
        raise Stopped(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
