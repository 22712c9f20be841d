"""`ask service`: the stack there after a reboot, without a terminal open.

launchd agents on a Mac (`launchd/*.plist`, loaded with `launchctl bootstrap gui/<uid>`), systemd user units on
Linux (`launchd/systemd/*.service`, `systemctl --user`). The templates are rendered with the user's real paths:
this interpreter (the venv's, unresolved), the repository, the config, the log file. Nothing secret is written:
`ask serve` reads the master key from its 0600 file when it starts, and only addresses are copied from the
environment. Install shows what it will write, writes it, loads it, and on any failure undoes every step of
that run: no half-installed service.
"""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from xml.sax.saxutils import escape

from contract import paths

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "launchd"
SERVICES = ("proxy", "ollama", "redis")
PREFIX = "local-llm-stack"

# Copied into the proxy's service from the environment at install time when set: addresses and file locations,
# never credentials (REDIS_PASSWORD, API keys and the master key stay out of service files).
PROXY_ENV = (
    "OLLAMA_API_BASE",
    "LLAMA_SWAP_API_BASE",
    "TINY_API_BASE",
    "REDIS_HOST",
    "REDIS_PORT",
    "DEMOTION_LOG",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
)
# What the stack expects of Ollama: loopback, one request at a time per model (KV cache memory stays
# predictable), at most two models resident on 24 GB, and the context the tiers ask for (num_ctx in the yaml).
OLLAMA_ENV = {
    "OLLAMA_HOST": "127.0.0.1:11434",
    "OLLAMA_KEEP_ALIVE": "5m",
    "OLLAMA_MAX_LOADED_MODELS": "2",
    "OLLAMA_NUM_PARALLEL": "1",
    "OLLAMA_CONTEXT_LENGTH": "8192",
}
SEARCH_PATH = ("/opt/homebrew/bin", "/usr/local/bin", "/usr/bin", "/bin")
HEALTH = {"proxy": "http://127.0.0.1:{port}/health/liveliness", "ollama": "http://127.0.0.1:11434/api/version"}


class ServiceError(Exception):
    """One line for the user: what went wrong and what to do."""


@dataclass(frozen=True)
class Rendered:
    name: str  # proxy | ollama | redis
    label: str  # launchd label or systemd unit name
    path: Path  # where the definition is written
    text: str
    log: Path


@dataclass
class Manager:
    """A service manager: where definitions go, and the commands that load, unload and inspect them."""

    kind: str  # launchd | systemd
    home: Path
    run: Callable[[list[str]], tuple[int, str]] = field(default=lambda cmd: _run(cmd))

    @property
    def directory(self) -> Path:
        if self.kind == "launchd":
            return self.home / "Library" / "LaunchAgents"
        return Path(os.environ.get("XDG_CONFIG_HOME") or self.home / ".config") / "systemd" / "user"

    @property
    def log_dir(self) -> Path:
        if self.kind == "launchd":
            return self.home / "Library" / "Logs" / PREFIX
        return paths.data_dir() / "logs"

    def label(self, name: str) -> str:
        return f"com.{PREFIX}.{name}" if self.kind == "launchd" else f"{PREFIX}-{name}.service"

    def definition(self, name: str) -> Path:
        return self.directory / (f"{self.label(name)}.plist" if self.kind == "launchd" else self.label(name))

    def template(self, name: str) -> Path:
        if self.kind == "launchd":
            return TEMPLATES / f"com.{PREFIX}.{name}.plist"
        return TEMPLATES / "systemd" / f"{PREFIX}-{name}.service"

    # -- commands ------------------------------------------------------------------------------------
    def _domain(self) -> str:
        return f"gui/{os.getuid()}"

    def load_commands(self, svc: Rendered) -> list[list[str]]:
        if self.kind == "launchd":
            return [["launchctl", "bootstrap", self._domain(), str(svc.path)]]
        return [["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", "--now", svc.label]]

    def unload_commands(self, name: str) -> list[list[str]]:
        if self.kind == "launchd":
            return [["launchctl", "bootout", f"{self._domain()}/{self.label(name)}"]]
        return [["systemctl", "--user", "disable", "--now", self.label(name)]]

    def after_removal(self) -> list[list[str]]:
        return [] if self.kind == "launchd" else [["systemctl", "--user", "daemon-reload"]]

    def state(self, name: str) -> tuple[bool, int | None]:
        """(loaded, pid when running)."""
        if self.kind == "launchd":
            code, out = self.run(["launchctl", "print", f"{self._domain()}/{self.label(name)}"])
            if code != 0:
                return False, None
            pid = next(
                (line.split("=", 1)[1].strip() for line in out.splitlines() if line.strip().startswith("pid =")), None
            )
            return True, int(pid) if pid and pid.isdigit() else None
        code, out = self.run(["systemctl", "--user", "show", "-p", "LoadState,ActiveState,MainPID", self.label(name)])
        fields = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        loaded = code == 0 and fields.get("LoadState") == "loaded"
        pid = fields.get("MainPID", "0")
        running = fields.get("ActiveState") == "active" and pid.isdigit() and pid != "0"
        return loaded, int(pid) if running else None


def manager_for(platform: str | None = None, home: Path | None = None) -> Manager:
    kind = platform or (
        "launchd" if sys.platform == "darwin" else "systemd" if sys.platform.startswith("linux") else ""
    )
    if kind not in ("launchd", "systemd"):
        raise ServiceError(
            f"no service manager for {sys.platform}: ask service knows launchd (macOS) and systemd "
            "(Linux); run `ask serve` in a terminal instead"
        )
    return Manager(kind, home or Path.home())


def _run(cmd: list[str]) -> tuple[int, str]:
    tool = shutil.which(cmd[0])
    if tool is None:
        return 127, f"{cmd[0]} not found"
    proc = subprocess.run([tool, *cmd[1:]], capture_output=True, text=True, timeout=60)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


# -- rendering ----------------------------------------------------------------------------------------


def find_program(name: str, hint: str) -> str:
    found = shutil.which(name) or next((str(Path(d) / name) for d in SEARCH_PATH if (Path(d) / name).exists()), None)
    if found is None:
        raise ServiceError(f"{name} not found on PATH: {hint}")
    return str(Path(found).absolute())


def _environment(kind: str, values: dict[str, str]) -> str:
    if kind == "launchd":
        return "\n".join(f"    <key>{escape(k)}</key>\n    <string>{escape(v)}</string>" for k, v in values.items())
    return "\n".join(f'Environment="{k}={_unit_quote(v)}"' for k, v in values.items())


def _unit_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")


def _path_value(kind: str, value: str) -> str:
    """A path inside a template: XML-escaped for a plist, quoted for a unit when it has spaces."""
    if kind == "launchd":
        return escape(value)
    value = value.replace("%", "%%")
    return f'"{value}"' if " " in value else value


def proxy_environment(kind: str) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).absolute().parent)
    search = [bin_dir, *(["/opt/homebrew/bin"] if kind == "launchd" else []), "/usr/local/bin", "/usr/bin", "/bin"]
    env = {"PATH": ":".join(dict.fromkeys(search)), "PYTHONUNBUFFERED": "1"}
    env.update({name: os.environ[name] for name in PROXY_ENV if os.environ.get(name)})
    return env


def render(
    manager: Manager, name: str, config: Path, port: int = 4000, redis_port: int = 6379, cloud: bool = False
) -> Rendered:
    """One service's definition with this machine's absolute paths; raises if its program is missing.
    `cloud`: the proxy runs `ask serve --cloud` (its keys come from the secrets file)."""
    kind = manager.kind
    log = manager.log_dir / f"{name}.log"
    options = ["--cloud"] if cloud else []
    serve_options = "".join(f"\n    <string>{o}</string>" if kind == "launchd" else f" {o}" for o in options)
    values: dict[str, str] = {
        "label": manager.label(name),
        "log": _path_value(kind, str(log)),
        "port": str(port),
        "redis_port": str(redis_port),
        "serve_options": serve_options,
    }
    if name == "proxy":
        values.update(
            python=_path_value(kind, str(Path(sys.executable).absolute())),
            repo=_path_value(kind, str(ROOT)),
            config=_path_value(kind, str(config.absolute())),
            environment=_environment(kind, proxy_environment(kind)),
        )
    elif name == "ollama":
        values.update(
            ollama=_path_value(
                kind,
                find_program("ollama", "install it from https://ollama.com (brew install ollama), or leave ollama out"),
            ),
            environment=_environment(kind, OLLAMA_ENV),
        )
    elif name == "redis":
        values["redis_server"] = _path_value(
            kind,
            find_program(
                "redis-server", "install it (brew install redis / apt-get install redis-server), or leave redis out"
            ),
        )
    else:
        raise ServiceError(f"unknown service '{name}': choose from {', '.join(SERVICES)} or all")
    text = Template(manager.template(name).read_text()).substitute(values)
    return Rendered(name, manager.label(name), manager.definition(name), text, log)


def chosen(names: Iterable[str]) -> list[str]:
    picked: list[str] = []
    for name in names:
        if name == "all":
            picked.extend(SERVICES)
        elif name in SERVICES:
            picked.append(name)
        else:
            raise ServiceError(f"unknown service '{name}': choose from {', '.join(SERVICES)} or all")
    return list(dict.fromkeys(picked)) or ["proxy"]


# -- install / uninstall ------------------------------------------------------------------------------


def preview(manager: Manager, services: list[Rendered]) -> str:
    """What install will write (a diff when a definition exists already) and the commands it will run."""
    lines: list[str] = []
    for svc in services:
        old = svc.path.read_text() if svc.path.exists() else None
        if old == svc.text:
            lines.append(f"{svc.path}: unchanged")
        elif old is None:
            lines += [f"will write {svc.path}:", *("  " + line for line in svc.text.splitlines())]
        else:
            lines += [
                f"will replace {svc.path}:",
                *difflib.unified_diff(old.splitlines(), svc.text.splitlines(), "installed", "new", lineterm=""),
            ]
        lines.append(f"  logs: {svc.log}")
        lines += [f"  then: {' '.join(cmd)}" for cmd in manager.load_commands(svc)]
    return "\n".join(lines)


@dataclass
class _Step:
    svc: Rendered
    previous: str | None
    was_loaded: bool


def install(manager: Manager, services: list[Rendered], log: Callable[[str], None]) -> None:
    """Write and load each service; if any step fails, undo this run's steps and raise."""
    steps: list[_Step] = []
    try:
        for svc in services:
            step = _Step(svc, svc.path.read_text() if svc.path.exists() else None, manager.state(svc.name)[0])
            steps.append(step)
            if step.was_loaded:
                _must(manager, manager.unload_commands(svc.name), f"could not stop the running {svc.name} service")
            paths.private_dir(svc.log.parent)
            _write(svc.path, svc.text)
            _must(manager, manager.load_commands(svc), f"could not start the {svc.name} service")
            log(f"installed {svc.name}: {svc.path}")
    except (ServiceError, OSError) as exc:
        _undo(manager, steps)
        reason = (
            exc
            if isinstance(exc, ServiceError)
            else f"could not write {getattr(exc, 'filename', '')}: {exc.strerror or exc}"
        )
        raise ServiceError(f"{reason}; nothing was left installed by this run") from None


def _undo(manager: Manager, steps: list[_Step]) -> None:
    for step in reversed(steps):
        for cmd in manager.unload_commands(step.svc.name):  # also after a failed load: it may be half-loaded
            manager.run(cmd)
        if step.previous is None:
            step.svc.path.unlink(missing_ok=True)
        else:
            _write(step.svc.path, step.previous)
            if step.was_loaded:
                for cmd in manager.load_commands(step.svc):
                    manager.run(cmd)
    for cmd in manager.after_removal():
        manager.run(cmd)


def uninstall(manager: Manager, names: list[str], log: Callable[[str], None]) -> None:
    for name in names:
        path = manager.definition(name)
        if not path.exists() and not manager.state(name)[0]:
            log(f"{name}: not installed")
            continue
        if manager.state(name)[0]:
            _must(manager, manager.unload_commands(name), f"could not stop the {name} service")
        path.unlink(missing_ok=True)
        log(f"removed {name}: {path}")
    for cmd in manager.after_removal():
        manager.run(cmd)


def _must(manager: Manager, commands: list[list[str]], what: str) -> None:
    for cmd in commands:
        code, out = manager.run(cmd)
        if code != 0:
            detail = out.splitlines()[-1] if out else f"exit {code}"
            raise ServiceError(f"{what}: {' '.join(cmd)}: {detail}")


def _write(path: Path, text: str) -> None:
    """Atomically, 0600: the definition names the user's paths, and launchd refuses group-writable plists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


# -- status / logs ------------------------------------------------------------------------------------


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback health URLs
            return bool(resp.status < 500)
    except (OSError, ValueError):
        return False


def status_lines(manager: Manager, names: list[str], port: int = 4000) -> tuple[list[str], bool]:
    """One line per service and whether every installed one is running."""
    lines, healthy = [], True
    for name in names:
        path = manager.definition(name)
        loaded, pid = manager.state(name)
        if not path.exists() and not loaded:
            lines.append(f"{name:7s} not installed (ask service install {name})")
            continue
        running = pid is not None
        url = HEALTH.get(name, "").format(port=port)
        answer = "" if not url else ("; answers" if _answers(url) else "; not answering yet")
        state = f"running (pid {pid}){answer}" if running else ("loaded, not running" if loaded else "not loaded")
        healthy = healthy and running
        lines.append(f"{name:7s} {state}; {path}; logs {manager.log_dir / f'{name}.log'}")
    return lines, healthy


def tail(path: Path, lines: int) -> list[str]:
    if not path.exists():
        return []
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 256 * 1024))
        return f.read().decode(errors="replace").splitlines()[-lines:]


def follow(paths_: list[Path], poll_s: float = 0.5) -> None:
    """Print what is appended to the logs until Ctrl-C."""
    offsets = {p: p.stat().st_size if p.exists() else 0 for p in paths_}
    while True:
        for p in paths_:
            if p.exists() and p.stat().st_size > offsets[p]:
                with p.open("rb") as f:
                    f.seek(offsets[p])
                    chunk = f.read()
                offsets[p] += len(chunk)
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
        time.sleep(poll_s)
