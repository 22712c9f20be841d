"""`ask serve`: the embedded model and the LiteLLM proxy, started together and stopped together.

Binds 127.0.0.1, passes the master key through the environment (never on a command line), and runs the
proxy from the config's directory so `plugins.*` resolve exactly as with `litellm --config` by hand.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ask_cli import processes, stack_config
from contract import BACKEND_DEFAULTS, paths

READY_TIMEOUT_S = 120.0


@dataclass
class Stack:
    config: Path
    host: str = "127.0.0.1"
    port: int = 4000
    embedded: bool = True
    cloud: bool = False  # merge litellm-config.cloud.yaml: the lanes whose keys are set
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)
    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        for name, value in BACKEND_DEFAULTS.items():  # as plugins/environment.py does for `litellm --config`
            env.setdefault(name, value)
        env[paths.KEY_ENV] = paths.master_key() or ""
        env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: never fetch the cost map
        env.setdefault("LITELLM_LOG", "ERROR")  # no per-request access log: ~0.4 ms each (bench/README.md)
        env.setdefault("PYTHONUNBUFFERED", "1")
        if env.get("REDIS_HOST"):
            env.setdefault("REDIS_PORT", "6379")  # the router only uses Redis when it has a port too
        return env

    def start(self) -> None:
        from ask_cli import secrets_file

        try:  # into this process too: the Redis and database checks below read them like the proxy will
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
        problems = stack_config.routing_problems(run)
        if problems:
            raise stack_config.ConfigError(f"{self.config}: {problems[0]}")
        stack_config.check_plugins(run, self.config)
        if env.get("REDIS_HOST"):
            run = stack_config.with_redis(run)
            self.log(f"response cache and router state: Redis at {env['REDIS_HOST']}:{env['REDIS_PORT']}")
            self._warn_if_redis_fails()
        if env.get("DATABASE_URL"):
            self._say_database(env["DATABASE_URL"])
        run_config = self.config.resolve()
        if run is not config:  # LiteLLM reads one file: write the derived one (includes merged), private
            run_config = stack_config.write_private(run, paths.data_dir() / "litellm-config.derived.yaml")
        if self.embedded:
            self._start_embedded(env)
        litellm = shutil.which("litellm", path=str(Path(sys.executable).parent)) or shutil.which("litellm")
        if litellm is None:
            raise RuntimeError("the litellm command is not installed: pip install -e . (see README)")
        cmd = [litellm, "--config", str(run_config), "--host", self.host, "--port", str(self.port)]
        self._spawn("proxy", cmd, env, cwd=self.config.resolve().parent)
        if not self._wait(f"{self.url}/health/liveliness", "proxy"):
            raise RuntimeError(f"the proxy did not answer on {self.url} within {READY_TIMEOUT_S:.0f} s")
        self.log(f"proxy listening on {self.url}/v1 (master key in {paths.key_file()} or $LITELLM_MASTER_KEY)")

    def _say_database(self, url: str) -> None:
        """Where the UI's logs go (never the password), or one clear line when PostgreSQL does not answer."""
        from ask_cli.doctor import check_database, database_address

        found = database_address(url)
        shown = found[0] if found else "DATABASE_URL (not a postgresql:// URL)"
        self.log(f"database: {shown}; the UI at {self.url}/ui (log in as admin with the master key)")
        for check in check_database(timeout=2.0)[:1]:
            if check.status != "ok":
                self.log(f"warning: {check.what}; the proxy may not start without it (fix: {check.fix})")

    def _warn_if_redis_fails(self) -> None:
        """One clear line when Redis will not answer (down, wrong password): LiteLLM serves anyway, uncached and
        unshared, and buries the reason in repeated errors of its own."""
        from ask_cli.doctor import check_redis

        for check in check_redis(timeout=2.0):
            if check.status != "ok":
                self.log(f"warning: {check.what}; serving without the shared cache until it answers (fix: {check.fix})")

    def _start_embedded(self, env: dict[str, str]) -> None:
        base = env["TINY_API_BASE"]
        parts = urlsplit(base)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            return  # someone else's server: the proxy reaches it as configured
        root = base.rstrip("/").removesuffix("/v1")
        if _answers(f"{root}/health"):
            self.log(f"embedded model: reusing the server already on {root}")
            return
        cmd = [sys.executable, "-m", "ask_cli.embedded", "--host", "127.0.0.1", "--port", str(parts.port or 11435)]
        self._spawn("embedded model", cmd, env)
        if not self._wait(f"{root}/health", "embedded model"):
            raise RuntimeError(f"the embedded model did not answer on {root} within {READY_TIMEOUT_S:.0f} s")

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        # Children log to stderr: stdout carries only answers, so `ask serve --ask ... > out.txt` works.
        self.children.append((name, processes.spawn(cmd, env, cwd, stdout=sys.stderr.fileno())))

    def _wait(self, url: str, name: str) -> bool:
        try:
            return processes.wait_until_answers(url, READY_TIMEOUT_S, self.children)
        except processes.ChildExited as exc:
            raise RuntimeError(f"{exc} (see above)") from None

    def watch(self) -> int:
        """Block until a child exits (then report it: 1) or a signal stops the stack (see `stopping_on_signals`)."""
        while True:
            for name, proc in self.children:
                if proc.poll() is not None:
                    self.log(f"{name} exited with code {proc.returncode}; stopping the stack")
                    return 1
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM each child's process group, SIGKILL what has not gone in 15 s. Signals wait meanwhile."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        processes.stop([proc for _name, proc in reversed(self.children)], grace_s=15)
        self.children.clear()


class Stopped(Exception):
    """SIGTERM or SIGINT arrived: unwind, so `Stack.stop` runs wherever the run command was."""


def stopping_on_signals() -> None:
    """From here on SIGTERM and Ctrl-C raise `Stopped`, even mid-start or mid-answer: no orphaned children."""

    def on_signal(signum: int, _frame: object) -> None:
        raise Stopped(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _answers(url: str) -> bool:
    return processes.answers(url)
